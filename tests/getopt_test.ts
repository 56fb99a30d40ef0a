import assert from "node:assert/strict";
import { getopt, type GetoptRules, type OptionSpec } from "../src/commands/getopt.ts";

interface S {
  seen: string[];
}

const SPECS: OptionSpec<S>[] = [
  { short: "a", long: ["alpha"], value: false, handle: (s, _v, n) => void s.seen.push(n) },
  { short: "b", long: ["beta", "bet"], value: true, handle: (s, v) => void s.seen.push(`b=${v}`) },
  { long: ["bravo"], value: false, handle: () => ({ error: "bravo refused" }) },
  { short: "h", long: ["help"], value: false, dropsValue: true, handle: () => ({ stop: true }) },
];
const GNU: GetoptRules = {
  bundling: true,
  abbreviations: true,
  underscores: true,
  syntaxFirst: true,
};
const STRICT: GetoptRules = {
  bundling: false,
  abbreviations: false,
  underscores: false,
  syntaxFirst: false,
};

function run(args: string[], rules: GetoptRules) {
  const state: S = { seen: [] };
  return { result: getopt(args, SPECS, { state, rules }), seen: state.seen };
}

Deno.test("getopt: GNU forms (bundles, values, prefixes, _ for -, --, lone -)", () => {
  const r = run(["-ab1", "x", "--alp", "--bet=2", "--beta", "3", "-", "--", "-a"], GNU);
  assert.deepEqual(r.result, { kind: "done", operands: ["x", "-", "-a"] });
  assert.deepEqual(r.seen, ["-a", "b=1", "--alp", "b=2", "b=3"]);
  assert.deepEqual(run(["--b"], GNU).result, {
    kind: "syntax",
    error: { kind: "ambiguous", arg: "--b" },
  });
  assert.deepEqual(run(["-az"], GNU).result, {
    kind: "syntax",
    error: { kind: "unknown-short", arg: "-az", letter: "z" },
  });
  assert.deepEqual(run(["-b"], GNU).result, {
    kind: "syntax",
    error: { kind: "short-needs-value", arg: "-b", letter: "b" },
  });
  assert.deepEqual(run(["--alpha=1"], GNU).result, {
    kind: "syntax",
    error: { kind: "no-value-allowed", arg: "--alpha=1", name: "--alpha" },
  });
});

Deno.test("getopt: syntaxFirst reports a malformed option before any handler's error", () => {
  assert.deepEqual(run(["--bravo", "--zz"], GNU).result, {
    kind: "syntax",
    error: { kind: "unknown", arg: "--zz" },
  });
  assert.deepEqual(run(["--bravo", "--zz"], STRICT).result, {
    kind: "error",
    message: "bravo refused",
  });
});

Deno.test("getopt: strict rules take exact forms only; a stop ends the parse", () => {
  assert.deepEqual(run(["-ab"], STRICT).result, {
    kind: "syntax",
    error: { kind: "unknown", arg: "-ab" },
  });
  assert.deepEqual(run(["--alp"], STRICT).result, {
    kind: "syntax",
    error: { kind: "unknown", arg: "--alp" },
  });
  assert.deepEqual(run(["--al_pha"], STRICT).result.kind, "syntax");
  const r = run(["x", "--help=now", "--zz"], STRICT);
  assert.deepEqual(r.result, { kind: "stopped", operands: ["x"] });
  assert.deepEqual(run(["--zz", "-h"], STRICT).result.kind, "syntax");
  assert.deepEqual(run(["--beta"], STRICT).result, {
    kind: "syntax",
    error: { kind: "needs-value", arg: "--beta", name: "--beta" },
  });
});
