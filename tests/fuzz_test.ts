/**
 * The fuzzer in CI: the reference model and shrinker (pure), every saved
 * regression case, and 100,000 random cases against a daemon subprocess.
 * PRHELPERD_FUZZ_CASES and PRHELPERD_FUZZ_SEED override the count and seed;
 * the seed is printed so a failure can be rerun with `deno task fuzz`.
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  caseSize,
  expectReplies,
  type FuzzCase,
  generateCase,
  type RegressionFile,
  replayFiles,
  runFuzz,
  shrinkCase,
  toHex,
} from "../fuzz/mod.ts";

const REGRESSIONS = new URL("./regressions/", import.meta.url).pathname;

function hexOf(...parts: number[][]): string {
  return toHex(new Uint8Array(parts.flat()));
}

const GREETING = [0, 0, 0, 0];
const PR_IN_CDB = [0x5e, 0, 0, 0, 0, 0, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0];

Deno.test("fuzz model: one fd with the CDB gets a reply, zero or two close", () => {
  const one: FuzzCase = {
    chunks: [{ hex: hexOf(GREETING), fds: [] }, { hex: hexOf(PR_IN_CDB), fds: ["devnull-rw"] }],
    end: { kind: "half-close" },
  };
  assert.deepEqual(expectReplies(one), {
    replies: [{ opcode: 0x5e, dataLength: 0x2000 }],
    ending: "boundary",
    reason: null,
  });
  const none = { ...one, chunks: [{ hex: hexOf(GREETING, PR_IN_CDB), fds: [] }] };
  assert.equal(expectReplies(none).reason, "no-fd");
  // an fd on a chunk that starts in the greeting is not the CDB's
  const early = { ...one, chunks: [{ hex: hexOf(GREETING, PR_IN_CDB), fds: ["pipe-r" as const] }] };
  assert.equal(expectReplies(early).reason, "no-fd");
  const two: FuzzCase = {
    ...one,
    chunks: [
      { hex: hexOf(GREETING), fds: [] },
      { hex: hexOf(PR_IN_CDB.slice(0, 3)), fds: ["socket"] },
      { hex: hexOf(PR_IN_CDB.slice(3)), fds: ["file-ro"] },
    ],
  };
  assert.equal(expectReplies(two).reason, "too-many-fds");
});

Deno.test("fuzz model: greeting, opcode, length and payload rules", () => {
  const c = (bytes: number[], fdAt = 4): FuzzCase => ({
    chunks: [
      { hex: hexOf(bytes.slice(0, fdAt)), fds: [] },
      { hex: hexOf(bytes.slice(fdAt)), fds: ["devnull-rw"] },
    ],
    end: { kind: "half-close" },
  });
  assert.equal(expectReplies(c([0, 0, 0, 1, ...PR_IN_CDB])).reason, "unsupported-features");
  assert.equal(expectReplies(c([...GREETING, 0x12, ...PR_IN_CDB.slice(1)])).reason, "bad-opcode");
  const big = [...PR_IN_CDB];
  big[7] = 0x20;
  big[8] = 0x01; // 8193
  assert.equal(expectReplies(c([...GREETING, ...big])).reason, "length-too-large");
  const out = [0x5f, 0, 0, 0, 0, 0, 0, 0, 24, 0, 0, 0, 0, 0, 0, 0];
  assert.equal(
    expectReplies(c([...GREETING, ...out, ...new Array(23).fill(0)])).ending,
    "mid-frame",
  );
  assert.equal(expectReplies(c([...GREETING, ...out, ...new Array(24).fill(0)])).replies.length, 1);
  assert.equal(expectReplies(c([...GREETING, ...PR_IN_CDB.slice(0, 9)])).ending, "mid-frame");
});

Deno.test("fuzz generator: reproducible from seed and index", () => {
  assert.deepEqual(generateCase(123, 45), generateCase(123, 45));
  assert.notDeepEqual(generateCase(123, 45), generateCase(123, 46));
  let replies = 0;
  for (let i = 0; i < 2000; i++) replies += expectReplies(generateCase(5, i)).replies.length;
  assert.ok(replies > 1000, `only ${replies} requests due in 2000 cases`);
});

Deno.test("fuzz shrinker: reduces a failing case to what matters", async () => {
  // "fails" when some chunk carries an opath fd and a 0x5f byte is sent
  const fails = (c: FuzzCase) =>
    Promise.resolve(
      c.chunks.some((k) => k.fds.includes("opath")) && c.chunks.some((k) => k.hex.includes("5f")),
    );
  let start: FuzzCase | null = null;
  for (let i = 0; start === null; i++) {
    const c = generateCase(9, i);
    if (c.chunks.length > 3 && await fails(c)) start = c;
  }
  const { case: small } = await shrinkCase(start, fails, { maxRuns: 2000 });
  assert.ok(await fails(small));
  assert.ok(caseSize(small) < caseSize(start));
  assert.ok(small.chunks.length <= 2, JSON.stringify(small));
});

Deno.test("fuzz regressions: every saved case passes", async () => {
  const files = [...Deno.readDirSync(REGRESSIONS)]
    .filter((e) => e.name.endsWith(".json"))
    .map((e) => `${REGRESSIONS}${e.name}`)
    .sort();
  assert.ok(files.length > 0, "no saved regression cases");
  for (const f of files) {
    const saved = JSON.parse(Deno.readTextFileSync(f)) as RegressionFile;
    assert.ok(Array.isArray(saved.case.chunks), `${f} is not a saved fuzz case`);
  }
  assert.deepEqual(await replayFiles(files), []);
});

Deno.test("fuzz: 100,000 hostile cases against the daemon keep every invariant", async () => {
  const cases = Number(Deno.env.get("PRHELPERD_FUZZ_CASES") ?? 100_000);
  const seed = Number(
    Deno.env.get("PRHELPERD_FUZZ_SEED") ?? crypto.getRandomValues(new Uint32Array(1))[0],
  );
  console.log(
    `fuzz seed ${seed} (rerun: deno run -A fuzz/main.ts --seed ${seed} --cases ${cases})`,
  );
  const report = await runFuzz({ cases, seed, batch: 10_000 });
  const s = report.stats;
  console.log(
    `fuzz: ${s.cases} cases in ${(report.elapsedMs / 1000).toFixed(1)} s, ` +
      `${s.requestsAnswered} replies checked, ${s.violations} protocol closes, ` +
      `${s.fdsPassed} fds passed, daemon RSS ${report.rssStartKiB} -> ${report.rssEndKiB} KiB`,
  );
  assert.equal(
    report.failure,
    null,
    report.failure
      ? `seed ${seed} case ${report.failure.index}: ${report.failure.message}\nshrunk: ${
        JSON.stringify(report.failure.shrunk)
      }`
      : "",
  );
  assert.equal(s.cases, cases);
  assert.ok(s.requestsAnswered > cases / 3, `only ${s.requestsAnswered} replies`);
  // issue 13: the daemon under fuzz runs with glibc's heap checking
  assert.ok(report.mallocChecked, "the fuzzed daemon did not load libc_malloc_debug.so.0");
});
