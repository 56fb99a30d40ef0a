/**
 * The benchmark's short mode (`bench/main.ts --quick`) still runs and prints
 * its table with figures, so `deno task bench` cannot rot. Checks that every
 * row is there and that the figures are numbers; never their values.
 */

import assert from "node:assert/strict";
import { QEMU_PR_HELPER } from "../bench/daemons.ts";
import { formatTable, type Row, verdict } from "../bench/report.ts";

const ROOT = new URL("..", import.meta.url).pathname;

function isExecutable(path: string): boolean {
  try {
    return ((Deno.statSync(path).mode ?? 0) & 0o111) !== 0;
  } catch {
    return false;
  }
}

/** Table rows as cell arrays, keyed by the metric. */
function parseTable(text: string): Map<string, string[]> {
  const rows = new Map<string, string[]>();
  for (const line of text.split("\n")) {
    if (!line.startsWith("| ") || line.startsWith("| metric")) continue;
    const cells = line.slice(1, -1).split("|").map((c) => c.trim());
    rows.set(cells[0], cells.slice(1));
  }
  return rows;
}

const NUMBER = /^-?\d+(\.\d+)?$/;

Deno.test("bench --quick prints the full table with numbers", async () => {
  const json = await Deno.makeTempFile({ prefix: "bench-smoke-", suffix: ".json" });
  try {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", `${ROOT}bench/main.ts`, "--quick", "--json", json],
      env: { RUST_BACKTRACE: "0", NO_COLOR: "1" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stdout = new TextDecoder().decode(out.stdout);
    const stderr = new TextDecoder().decode(out.stderr);
    assert.equal(out.code, 0, `bench failed:\n${stdout}\n${stderr}`);
    const rows = parseTable(stdout);
    const expected = [
      "round trips/s, 1 conn",
      "p50 latency us, 1 conn",
      "p99 latency us, 1 conn",
      "round trips/s, 16 conns",
      "p99 latency us, 64 conns",
      "RSS MiB, idle",
      "RSS MiB, 64 conns open",
      "RSS MiB, 1000 conns open",
      "start -> first reply ms",
      "socket-activated connect -> first reply ms",
    ];
    for (const m of expected) assert.ok(rows.has(m), `row "${m}" missing from:\n${stdout}`);
    assert.ok(
      [...rows.keys()].some((k) => k.startsWith("RSS growth MiB")),
      `no RSS growth row in:\n${stdout}`,
    );
    const haveQemu = isExecutable(QEMU_PR_HELPER);
    if (haveQemu) {
      // issue 19: both daemons doing the same work (both refuse PR OUT on a read-only fd)
      for (
        const m of [
          "round trips/s, 1 conn, like-for-like",
          "p99 latency us, 64 conns, like-for-like",
        ]
      ) {
        assert.ok(rows.has(m), `row "${m}" missing from:\n${stdout}`);
      }
    }
    for (const [metric, cells] of rows) {
      if (metric === "socket-activated connect -> first reply ms" && cells[0] === "n/a") continue;
      assert.match(cells[0], NUMBER, `prhelperd figure of "${metric}": ${cells[0]}`);
      if (haveQemu) {
        assert.match(cells[1], NUMBER, `qemu-pr-helper figure of "${metric}": ${cells[1]}`);
        // no ratio when qemu-pr-helper's figure is 0 (e.g. its RSS growth)
        const ratio = Number(cells[1]) === 0 ? /^(n\/a|-?\d+\.\d\dx)$/ : /^-?\d+\.\d\dx$/;
        assert.match(cells[2], ratio, `ratio of "${metric}": ${cells[2]}`);
      }
      assert.ok(["yes", "NO", "-", "n/a"].includes(cells[4]), `verdict of "${metric}"`);
    }
    const results = JSON.parse(await Deno.readTextFile(json));
    assert.equal(results.rows.length, rows.size);
  } finally {
    await Deno.remove(json).catch(() => {});
  }
});

Deno.test("bench table: ratios and verdicts follow the goals", () => {
  const rows: Row[] = [
    { metric: "a", prhelperd: 90, qemu: 100, goal: { kind: "ratioAtLeast", value: 1 }, digits: 0 },
    {
      metric: "b",
      prhelperd: 105,
      qemu: 100,
      goal: { kind: "ratioAtMost", value: 1.1 },
      digits: 0,
    },
    {
      metric: "c",
      prhelperd: 70,
      qemu: 7,
      goal: { kind: "absAtMost", value: 64, unit: "MiB" },
      digits: 1,
    },
    {
      metric: "d",
      prhelperd: 1,
      qemu: null,
      goal: { kind: "flat", base: 100, fraction: 0.05 },
      digits: 1,
    },
  ];
  assert.deepEqual(rows.map(verdict), ["NO", "yes", "NO", "yes"]);
  const t = parseTable(formatTable(rows));
  assert.deepEqual(t.get("a")?.slice(0, 3), ["90", "100", "0.90x"]);
  assert.deepEqual(t.get("d")?.slice(0, 3), ["1.0", "n/a", "n/a"]);
});
