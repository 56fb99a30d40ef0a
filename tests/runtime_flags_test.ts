/**
 * Every way of launching the daemon passes the same V8 flags
 * (tools/runtime_flags.ts): the `start` task, the tools/prhelperd shell
 * launcher and the package's generated launcher. (The running packaged
 * daemon's command line is checked in privileges_daemon_test.ts.)
 */
import assert from "node:assert/strict";
import { DAEMON_V8_FLAGS, v8FlagsArgument } from "../tools/runtime_flags.ts";
import { launcherFlags, launcherScript, sourceLauncherFlags } from "../tools/build_deb.ts";

const root = new URL("../", import.meta.url);

Deno.test("runtime flags: one --v8-flags argument with every flag", () => {
  assert.ok(DAEMON_V8_FLAGS.length > 0);
  assert.equal(v8FlagsArgument(), `--v8-flags=${DAEMON_V8_FLAGS.join(",")}`);
});

Deno.test("runtime flags: deno.json's start task runs tools/prhelperd", async () => {
  const config = JSON.parse(await Deno.readTextFile(new URL("deno.json", root)));
  const start = config.tasks.start;
  const command: string = typeof start === "string" ? start : start.command;
  assert.equal(command.split(/\s+/)[0], "tools/prhelperd", `start task: ${command}`);
});

Deno.test("runtime flags: tools/prhelperd passes them, and the permission set as flags", async () => {
  const config = JSON.parse(await Deno.readTextFile(new URL("deno.json", root)));
  const text = await Deno.readTextFile(new URL("tools/prhelperd", root));
  // the exec command, its continuation lines joined
  const exec = text.slice(text.indexOf("\nexec ") + 1).replaceAll("\\\n", " ");
  const words = exec.split(/\s+/).map((w) => w.replace(/^"(.*)"$/, "$1"));
  for (const flag of sourceLauncherFlags(config.permissions.daemon)) {
    assert.ok(words.includes(flag), `tools/prhelperd lacks ${flag}: ${exec}`);
  }
  assert.ok(words.includes(v8FlagsArgument()), exec);
  // -P would read the permissions from deno.json, with Deno's "experimental" warning
  assert.ok(!words.some((w) => w === "-P" || w.startsWith("-P=")), exec);
});

Deno.test("runtime flags: the package launcher passes its flags before the bundle", async () => {
  const config = JSON.parse(await Deno.readTextFile(new URL("deno.json", root)));
  const text = launcherScript(launcherFlags(config.permissions.daemon));
  const at = text.indexOf(`"${v8FlagsArgument()}"`);
  assert.ok(at > 0, text);
  assert.ok(at < text.indexOf('"$lib/prhelperd.js"'), "V8 flags after the script name");
  assert.match(text, /"--allow-read=\$lib"/);
});
