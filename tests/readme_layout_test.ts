/**
 * README.md's layout table names every file directly under src/ (by concern),
 * and each folder under src/ (commands/, security/) as a whole, so a new
 * module cannot go undocumented.
 */
import assert from "node:assert/strict";

const root = new URL("../", import.meta.url);

Deno.test("README layout: the src/ row names every src/*.ts file and every folder under src/", () => {
  const readme = Deno.readTextFileSync(new URL("README.md", root));
  const row = readme.split("\n").find((l) => l.startsWith("| `src/`"));
  assert.ok(row, "README.md has no `src/` row in its layout table");
  const named = new Set([...row.matchAll(/`([a-z0-9_/]+(?:\.ts)?)`/g)].map((m) => m[1]));
  const files: string[] = [];
  for (const e of Deno.readDirSync(new URL("src/", root))) {
    if (e.isFile && e.name.endsWith(".ts")) files.push(e.name);
    if (e.isDirectory) files.push(`${e.name}/`);
  }
  const missing = files.filter((f) => !named.has(f)).sort();
  assert.deepEqual(missing, [], `README.md's src/ row does not name ${missing.join(", ")}`);
  const stale = [...named].filter((n) => n !== "src/" && !files.includes(n)).sort();
  assert.deepEqual(stale, [], `README.md's src/ row names missing files ${stale.join(", ")}`);
});
