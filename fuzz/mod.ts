/**
 * The hostile-client fuzzer of prhelperd. It starts the daemon as a
 * subprocess and drives it with seeded random cases (fuzz/cases.ts) over many
 * connections at once (fuzz/runner.ts). Between batches it checks that the
 * daemon is alive, that a well-behaved client still gets correct replies, and
 * that the daemon's fd count is back to its baseline. A failing case is
 * found (replayed alone), shrunk, and saved as JSON for tests/fuzz_test.ts.
 *
 * ```sh
 * deno task fuzz                                   # 1,000,000 cases
 * deno run -A fuzz/main.ts --cases 100000 --seed 42
 * deno run -A fuzz/main.ts --replay tests/regressions/some_case.json
 * ```
 *
 * @module
 */

import { type FuzzCase, generateCase, shrinkCase } from "./cases.ts";
import {
  controlCheck,
  ControlFds,
  type DaemonProcess,
  measureBaseline,
  settleFds,
  startDaemon,
} from "./daemon.ts";
import { type CaseFailure, FdPool, newStats, runCases, type RunStats } from "./runner.ts";

export * from "./cases.ts";
export * from "./daemon.ts";
export * from "./runner.ts";

/** A saved failing case (tests/regressions/*.json). */
export interface RegressionFile {
  /** What broke. */
  failure: string;
  /** The seed and index the original case came from. */
  seed: number;
  index: number;
  /** When it was found (ISO date). */
  found: string;
  /** Free text: against which build, and what was fixed. */
  note?: string;
  case: FuzzCase;
}

/** Options of {@linkcode runFuzz}. */
export interface FuzzOptions {
  cases: number;
  seed: number;
  /** Connections at once (default 48). */
  concurrency?: number;
  /** Cases between daemon checks (default 2000). */
  batch?: number;
  /** Repository whose main.ts is fuzzed (default: this one). */
  repo?: string;
  /** Extra daemon arguments. */
  daemonArgs?: string[];
  /** Where a shrunk failing case is written (a directory); none if absent. */
  saveDir?: string;
  /** Progress output (default: none). */
  log?: (line: string) => void;
  /** Most runs of the shrinker (default 300). */
  shrinkRuns?: number;
}

/** The figures of a run. */
export interface FuzzReport {
  seed: number;
  cases: number;
  stats: RunStats;
  batches: number;
  controlChecks: number;
  fdBaseline: number;
  rssStartKiB: number;
  rssEndKiB: number;
  /** The daemon ran with glibc's heap checking (fuzz/daemon.ts `mallocCheckEnv`). */
  mallocChecked: boolean;
  elapsedMs: number;
  /** null if every invariant held. */
  failure: {
    message: string;
    index: number;
    original: FuzzCase;
    shrunk: FuzzCase;
    shrinkRuns: number;
    savedAs: string | null;
  } | null;
}

/** A daemon and what checking it needs. */
class Target {
  daemon!: DaemonProcess;
  baseline = 0;
  readonly control = new ControlFds();
  readonly pool = new FdPool();
  readonly #repo: string | undefined;
  readonly #args: string[];

  constructor(repo: string | undefined, args: string[]) {
    this.#repo = repo;
    this.#args = args;
  }

  async start(): Promise<void> {
    this.daemon = await startDaemon({ repo: this.#repo, args: this.#args });
    this.baseline = await measureBaseline(this.daemon, this.control);
  }

  /** A fresh daemon: no state left over from earlier cases. */
  async restart(): Promise<void> {
    await this.daemon.stop();
    await this.start();
  }

  async restartIfDead(): Promise<void> {
    if (!this.daemon.alive) {
      await this.daemon.stop();
      await this.start();
    }
  }

  /** Daemon-level invariants: null if they hold, else what broke. */
  async check(): Promise<string | null> {
    if (!this.daemon.alive) {
      return `daemon died (exit ${this.daemon.exited?.code ?? "?"}, signal ${
        this.daemon.exited?.signal ?? "-"
      }); stderr tail:\n${this.daemon.stderr.slice(-2000)}`;
    }
    const leak = await settleFds(this.daemon, { baseline: this.baseline, timeoutMs: 5_000 });
    if (leak) return `fd leak: ${leak}`;
    const ctl = controlCheck(this.daemon.socket, this.control);
    if (ctl) return ctl;
    return await settleFds(this.daemon, { baseline: this.baseline, timeoutMs: 5_000 });
  }

  async close(): Promise<void> {
    await this.daemon?.stop();
    this.control.close();
    this.pool.close();
  }
}

/**
 * Run one case alone against the target and check what it alone did: its
 * replies, the daemon alive, its fds back to the count before the case, and a
 * control round trip (whose own fds are not counted against the case).
 */
async function runOne(
  t: Target,
  c: FuzzCase,
  index: number,
  stats: RunStats,
): Promise<string | null> {
  await t.restartIfDead();
  const before = t.daemon.fdCount();
  const f = runCases(t.daemon.socket, [{ index, case: c }], {
    concurrency: 1,
    pool: t.pool,
    policy: { expectRefusal: true },
    stats,
    caseTimeoutMs: 5_000,
  });
  if (f.length > 0) return f[0].message;
  if (!t.daemon.alive) return `daemon died (exit ${t.daemon.exited?.code ?? "?"})`;
  const leak = await settleFds(t.daemon, { baseline: before, timeoutMs: 3_000 });
  if (leak) return `fd leak: ${leak}`;
  return controlCheck(t.daemon.socket, t.control);
}

/** Run the fuzzer: see the module doc. */
export async function runFuzz(options: FuzzOptions): Promise<FuzzReport> {
  const log = options.log ?? (() => {});
  const concurrency = options.concurrency ?? 48;
  const batch = options.batch ?? 2000;
  const stats = newStats();
  const t0 = Date.now();
  const t = new Target(options.repo, options.daemonArgs ?? []);
  await t.start();
  const report: FuzzReport = {
    seed: options.seed,
    cases: 0,
    stats,
    batches: 0,
    controlChecks: 0,
    fdBaseline: t.baseline,
    rssStartKiB: t.daemon.rssKiB(),
    rssEndKiB: -1,
    mallocChecked: t.daemon.mallocChecked(),
    elapsedMs: 0,
    failure: null,
  };
  log(`seed ${options.seed}; daemon pid ${t.daemon.pid}, fd baseline ${t.baseline}`);
  try {
    for (let first = 0; first < options.cases; first += batch) {
      const cases: { index: number; case: FuzzCase }[] = [];
      for (let i = first; i < Math.min(options.cases, first + batch); i++) {
        cases.push({ index: i, case: generateCase(options.seed, i) });
      }
      let failed: CaseFailure | null = runCases(t.daemon.socket, cases, {
        concurrency,
        pool: t.pool,
        policy: { expectRefusal: true },
        stats,
      })[0] ?? null;
      report.batches++;
      let daemonFailure: string | null = null;
      if (!failed) {
        daemonFailure = await t.check();
        report.controlChecks++;
      }
      if (daemonFailure) {
        log(`batch ${first}..${first + cases.length - 1}: ${daemonFailure.split("\n")[0]}`);
        log("replaying the batch one case at a time, on a fresh daemon, to find the culprit");
        await t.restart();
        for (const c of cases) {
          const msg = await runOne(t, c.case, c.index, newStats());
          if (msg) {
            failed = { index: c.index, case: c.case, message: msg };
            break;
          }
        }
        if (!failed) {
          failed = {
            index: first,
            case: cases[0].case,
            message: `${daemonFailure} (not reproduced by any single case of the batch)`,
          };
        }
      }
      if (failed) {
        report.cases = first + cases.length;
        report.failure = await shrinkAndSave(t, failed, options, log);
        break;
      }
      report.cases = first + cases.length;
      if (report.batches % 10 === 0 || report.cases === options.cases) {
        const s = (Date.now() - t0) / 1000;
        log(
          `${report.cases} cases, ${stats.requestsAnswered} replies checked, ` +
            `${(report.cases / s).toFixed(0)} cases/s, daemon fds ${t.daemon.fdCount()}, ` +
            `RSS ${t.daemon.rssKiB()} KiB`,
        );
      }
    }
  } finally {
    report.rssEndKiB = t.daemon.rssKiB();
    report.elapsedMs = Date.now() - t0;
    await t.close();
  }
  return report;
}

async function shrinkAndSave(
  t: Target,
  failed: CaseFailure,
  options: FuzzOptions,
  log: (line: string) => void,
): Promise<NonNullable<FuzzReport["failure"]>> {
  log(`case ${failed.index} (seed ${options.seed}) fails: ${failed.message.split("\n")[0]}`);
  log("shrinking");
  await t.restart();
  const { case: shrunk, runs } = await shrinkCase(
    failed.case,
    async (c) => (await runOne(t, c, failed.index, newStats())) !== null,
    { maxRuns: options.shrinkRuns ?? 200 },
  );
  const message = (await runOne(t, shrunk, failed.index, newStats())) ?? failed.message;
  let savedAs: string | null = null;
  if (options.saveDir) {
    const file: RegressionFile = {
      failure: message,
      seed: options.seed,
      index: failed.index,
      found: new Date().toISOString().slice(0, 10),
      case: shrunk,
    };
    Deno.mkdirSync(options.saveDir, { recursive: true });
    savedAs = `${options.saveDir}/seed${options.seed}_case${failed.index}.json`;
    Deno.writeTextFileSync(savedAs, JSON.stringify(file, null, 2) + "\n");
    log(`shrunk in ${runs} runs; saved ${savedAs}`);
  }
  return { message, index: failed.index, original: failed.case, shrunk, shrinkRuns: runs, savedAs };
}

/** Replay saved cases against a fresh daemon; returns [file, failure] for each that fails. */
export async function replayFiles(
  files: string[],
  options: { repo?: string; daemonArgs?: string[] } = {},
): Promise<[string, string][]> {
  const t = new Target(options.repo, options.daemonArgs ?? []);
  await t.start();
  const out: [string, string][] = [];
  try {
    for (const f of files) {
      const saved = JSON.parse(Deno.readTextFileSync(f)) as RegressionFile;
      const msg = await runOne(t, saved.case, saved.index, newStats());
      if (msg) out.push([f, msg]);
    }
  } finally {
    await t.close();
  }
  return out;
}
