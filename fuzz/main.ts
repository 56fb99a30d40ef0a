/**
 * `deno task fuzz`: run the fuzzer against a fresh daemon and print figures.
 *
 * ```sh
 * deno run -A fuzz/main.ts [--cases N] [--seed S] [--concurrency C] [--batch B]
 *                          [--repo DIR] [--save-dir DIR] [--replay FILE...]
 * ```
 *
 * Exit status 0 if every invariant held, 1 if a case failed (it is shrunk
 * and saved under --save-dir, default tests/regressions/), 2 on bad usage.
 *
 * @module
 */

import { Command, InvalidArgumentError } from "@commander-js/extra-typings";
import { replayFiles, REPO_ROOT, runFuzz } from "./mod.ts";

function whole(name: string) {
  return (v: string): number => {
    if (!/^\d+$/.test(v)) throw new InvalidArgumentError(`${name} "${v}" is not a whole number`);
    return Number(v);
  };
}

async function main(args: string[]): Promise<number> {
  const program = new Command()
    .name("fuzz")
    .description("Drive a prhelperd subprocess with hostile clients and check its invariants.")
    .option("--cases <n>", "number of cases", whole("--cases"), 100_000)
    .option("--seed <n>", "PRNG seed (default: random, printed)", whole("--seed"))
    .option("--concurrency <n>", "connections at once", whole("--concurrency"), 48)
    .option("--batch <n>", "cases between daemon checks", whole("--batch"), 2000)
    .option("--repo <dir>", "repository whose main.ts is run", REPO_ROOT)
    .option(
      "--save-dir <dir>",
      "where a shrunk failing case is saved",
      `${REPO_ROOT}/tests/regressions`,
    )
    .option("--replay <files...>", "replay saved cases instead of fuzzing")
    .option("--json", "print the report as JSON")
    .exitOverride();
  try {
    program.parse(args, { from: "user" });
  } catch {
    return 2;
  }
  const o = program.opts();
  if (o.replay) {
    const failed = await replayFiles(o.replay, { repo: o.repo });
    for (const [f, m] of failed) console.log(`FAIL ${f}: ${m}`);
    console.log(`${o.replay.length - failed.length}/${o.replay.length} saved cases pass`);
    return failed.length === 0 ? 0 : 1;
  }
  const seed = o.seed ?? (crypto.getRandomValues(new Uint32Array(1))[0] >>> 0);
  console.log(`fuzz: seed ${seed} (rerun with --seed ${seed}), ${o.cases} cases, repo ${o.repo}`);
  const report = await runFuzz({
    cases: o.cases,
    seed,
    concurrency: o.concurrency,
    batch: o.batch,
    repo: o.repo,
    saveDir: o.saveDir,
    log: (line) => console.log(`fuzz: ${line}`),
  });
  const s = report.stats;
  const secs = report.elapsedMs / 1000;
  if (o.json) console.log(JSON.stringify(report, null, 2));
  console.log(
    [
      `fuzz: ${report.failure ? "FAILED" : "passed"}; seed ${report.seed}`,
      `  cases run           ${s.cases} in ${secs.toFixed(1)} s (${(s.cases / secs).toFixed(0)}/s)`,
      `  replies checked     ${s.requestsAnswered}`,
      `  protocol closes     ${s.violations} (cases whose model ends in a close)`,
      `  fds passed          ${s.fdsPassed}`,
      `  bytes sent/received ${s.bytesSent} / ${s.bytesReceived}`,
      `  daemon checks       ${report.controlChecks} (alive + control client + fd count)`,
      `  daemon fd baseline  ${report.fdBaseline}; RSS ${report.rssStartKiB} -> ${report.rssEndKiB} KiB`,
    ].join("\n"),
  );
  if (report.failure) {
    console.log(`  failure: ${report.failure.message}`);
    console.log(`  shrunk case (${report.failure.shrinkRuns} shrink runs):`);
    console.log(JSON.stringify(report.failure.shrunk));
    if (report.failure.savedAs) console.log(`  saved as ${report.failure.savedAs}`);
    return 1;
  }
  return 0;
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
