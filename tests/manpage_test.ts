/**
 * The man page (packaging/prhelperd.8) documents exactly the options that
 * `main.ts --help` prints, with the same short forms.
 */
import assert from "node:assert/strict";

const root = new URL("../", import.meta.url);

/** "--long" -> "-s" (or "" when there is no short form), from --help text. */
function helpOptions(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const m of text.matchAll(/^ {2}(?:(-[A-Za-z]), )?(--[a-z][a-z0-9-]*)/gm)) {
    out.set(m[2], m[1] ?? "");
  }
  return out;
}

/** The same from the roff source: the first line after each .TP in OPTIONS. */
function manOptions(roff: string): Map<string, string> {
  const section = roff.split(/^\.SH /m).find((s) => s.startsWith("OPTIONS"));
  assert.ok(section, "no OPTIONS section");
  const out = new Map<string, string>();
  const lines = section.split("\n");
  lines.forEach((line, i) => {
    if (line.trim() !== ".TP") return;
    const tag = lines[i + 1].replaceAll("\\-", "-");
    const long = tag.match(/--[a-z][a-z0-9-]*/);
    assert.ok(long, `no long option in "${lines[i + 1]}"`);
    const short = tag.match(/(?:^|[\s"])(-[A-Za-z])(?=[\s"])/);
    assert.ok(!out.has(long[0]), `${long[0]} is described twice in OPTIONS`);
    out.set(long[0], short?.[1] ?? "");
  });
  return out;
}

Deno.test("man page: OPTIONS match `main.ts --help`", async () => {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--no-check", new URL("main.ts", root).pathname, "--help"],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  const help = helpOptions(new TextDecoder().decode(out.stdout));
  const man = manOptions(await Deno.readTextFile(new URL("packaging/prhelperd.8", root)));
  assert.ok(help.size >= 10, `parsed only ${help.size} options from --help`);
  assert.deepEqual(
    [...man.entries()].sort(),
    [...help.entries()].sort(),
    "packaging/prhelperd.8 and --help list different options",
  );
});
