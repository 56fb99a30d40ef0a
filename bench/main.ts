/**
 * `deno task bench`: prhelperd side by side with Debian's qemu-pr-helper, on
 * the host's error path (an fd of /dev/null), driven by the same client in
 * the same run: round trips per second and p50/p99 latency at 1, 16 and 64
 * connections, resident memory (64 and 1,000 connections open, and over
 * 1,000,000 requests), and start-up time (spawn → first reply, and
 * socket-activated connect → first reply). Prints one table with ratios and
 * the goals of issue 9.
 *
 *   deno run -A bench/main.ts [--quick] [--client auto|c|deno]
 *                             [--compare-clients] [--rounds N] [--duration-ms MS]
 *                             [--leak-requests N (default 1,000,000)]
 *                             [--json FILE] [--prhelperd-arg ARG]...
 *
 * `--quick` is the short run CI does (tests/bench_smoke_test.ts), so the
 * bench cannot rot; its figures are not meaningful.
 *
 * @module
 */

import { DAEMON_V8_FLAGS } from "../tools/runtime_flags.ts";
import { parseArgs } from "node:util";
import { getNofileLimit, setNofileLimit } from "../ffi/process.ts";
import {
  cClient,
  compileLoadgen,
  denoClient,
  type LoadClient,
  type LoadResult,
} from "./client_load.ts";
import {
  cpuNs,
  type DaemonSpec,
  floorSpec,
  isExecutable,
  prhelperdSpec,
  QEMU_PR_HELPER,
  qemuSpec,
  ROOT,
  type RunningDaemon,
  startDaemon,
  which,
} from "./daemons.ts";
import { growthKiB, measureMemory, type MemoryResult } from "./memory.ts";
import { formatTable, type Row } from "./report.ts";
import { median, timeActivatedFirstReply, timeToFirstReply } from "./startup.ts";

/** Sizes of one run. */
export interface Plan {
  concurrency: number[];
  rounds: number;
  warmupMs: number;
  durationMs: number;
  holdCounts: number[];
  requests: number;
  every: number;
  leakConnections: number;
  settleMs: number;
  startupRuns: number;
}

/** The full run (what docs/PERFORMANCE.md shows). */
export const FULL: Plan = {
  concurrency: [1, 16, 64],
  rounds: 3,
  warmupMs: 500,
  durationMs: 3000,
  holdCounts: [64, 1000],
  requests: 1_000_000,
  every: 100_000,
  leakConnections: 16,
  settleMs: 500,
  startupRuns: 5,
};

/** The short run CI does. */
export const QUICK: Plan = {
  concurrency: [1, 16, 64],
  rounds: 1,
  warmupMs: 100,
  durationMs: 250,
  holdCounts: [64, 1000],
  requests: 20_000,
  every: 5_000,
  leakConnections: 16,
  settleMs: 100,
  startupRuns: 1,
};

type Figures = Record<string, LoadResult[]>;

function log(msg: string): void {
  Deno.stderr.writeSync(new TextEncoder().encode(`bench: ${msg}\n`));
}

function countLabel(n: number): string {
  return n >= 1_000_000 && n % 1_000_000 === 0
    ? `${n / 1_000_000}M`
    : n >= 1000 && n % 1000 === 0
    ? `${n / 1000}k`
    : String(n);
}

async function throughput(
  specs: DaemonSpec[],
  client: LoadClient,
  plan: Plan,
  options: { dir: string; request?: "prin" | "prout-ro" },
): Promise<Figures> {
  const { dir, request } = options;
  const out: Figures = {};
  const running: RunningDaemon[] = [];
  try {
    for (const s of specs) running.push(await startDaemon(s, { dir }));
    for (let round = 0; round < plan.rounds; round++) {
      for (const conns of plan.concurrency) {
        for (const d of running) {
          const cpu0 = cpuNs(d.pid);
          const r = await client.run({
            socket: d.socket,
            connections: conns,
            warmupMs: plan.warmupMs,
            durationMs: plan.durationMs,
            request,
          });
          const cpu1 = cpuNs(d.pid);
          const replies = Object.values(r.status).reduce((a, b) => a + b, 0);
          if (cpu0 !== null && cpu1 !== null && replies > 0) {
            r.serverCpuUs = (cpu1 - cpu0) / 1000 / replies;
          }
          if (r.errors > 0) throw new Error(`${d.spec.name}: ${r.errors} connection(s) lost`);
          const bad = Object.keys(r.status).filter((s) => s !== "2");
          if (bad.length > 0) {
            throw new Error(
              `${d.spec.name}: unexpected SCSI status ${bad.join(",")} for /dev/null`,
            );
          }
          (out[`${d.spec.name}/${conns}`] ??= []).push(r);
          const cpu = r.serverCpuUs === undefined ? "?" : r.serverCpuUs.toFixed(1);
          log(
            `round ${round + 1}/${plan.rounds} ${d.spec.name} x${conns}${
              request ? ` ${request}` : ""
            }: ` +
              `${r.rps.toFixed(0)} rps, p50 ${r.p50Us.toFixed(1)} us, ` +
              `p99 ${r.p99Us.toFixed(1)} us, server CPU ${cpu} us/request`,
          );
        }
      }
    }
  } finally {
    for (const d of running) await d.stop();
  }
  return out;
}

function med(f: Figures, key: string, pick: (r: LoadResult) => number): number | null {
  const rs = f[key];
  return rs ? median(rs.map(pick)) : null;
}

/** Everything one run measured. */
export interface BenchResults {
  plan: Plan;
  client: string;
  figures: Figures;
  /**
   * The like-for-like rows' figures: PR OUT with a read-only fd, which both
   * daemons refuse without an ioctl (null without the C client or qemu-pr-helper).
   */
  alike: Figures | null;
  memory: Record<string, MemoryResult | null>;
  startup: Record<string, number | null>;
  activated: Record<string, number | null>;
  rows: Row[];
}

const MiB = 1024;

/**
 * Throughput, latency and CPU rows: daemon `names.a` against daemon `names.b`,
 * each metric prefixed with `names.label` when given.
 */
function throughputRows(
  figures: Figures,
  plan: Plan,
  names: { a: string; b: string; label?: string },
): Row[] {
  const rows: Row[] = [];
  const P = names.a;
  const Q = names.b;
  const r = { figures, plan };
  for (const c of r.plan.concurrency) {
    const n = `${c === 1 ? "1 conn" : `${c} conns`}${names.label ? `, ${names.label}` : ""}`;
    const floor = r.figures[`floor/${c}`] ? "floor" : null;
    rows.push({
      metric: `round trips/s, ${n}`,
      prhelperd: med(r.figures, `${P}/${c}`, (x) => x.rps),
      qemu: med(r.figures, `${Q}/${c}`, (x) => x.rps),
      floor: floor && med(r.figures, `floor/${c}`, (x) => x.rps),
      goal: { kind: "ratioAtLeast", value: 1.0 },
      digits: 0,
    });
    rows.push({
      metric: `p50 latency us, ${n}`,
      prhelperd: med(r.figures, `${P}/${c}`, (x) => x.p50Us),
      qemu: med(r.figures, `${Q}/${c}`, (x) => x.p50Us),
      floor: floor && med(r.figures, `floor/${c}`, (x) => x.p50Us),
      goal: { kind: "none" },
      digits: 1,
    });
    rows.push({
      metric: `p99 latency us, ${n}`,
      prhelperd: med(r.figures, `${P}/${c}`, (x) => x.p99Us),
      qemu: med(r.figures, `${Q}/${c}`, (x) => x.p99Us),
      floor: floor && med(r.figures, `floor/${c}`, (x) => x.p99Us),
      goal: { kind: "ratioAtMost", value: 1.1 },
      digits: 1,
    });
    rows.push({
      metric: `server CPU us/request, ${n}`,
      prhelperd: med(r.figures, `${P}/${c}`, (x) => x.serverCpuUs ?? NaN),
      qemu: med(r.figures, `${Q}/${c}`, (x) => x.serverCpuUs ?? NaN),
      floor: floor && med(r.figures, `floor/${c}`, (x) => x.serverCpuUs ?? NaN),
      goal: { kind: "none" },
      digits: 1,
    });
  }
  return rows;
}

function buildRows(r: Omit<BenchResults, "rows">): Row[] {
  const rows: Row[] = [];
  const P = "prhelperd";
  const Q = "qemu-pr-helper";
  rows.push(...throughputRows(r.figures, r.plan, { a: P, b: Q }));
  if (r.alike) {
    rows.push(...throughputRows(r.alike, r.plan, { a: P, b: Q, label: "like-for-like" }));
  }
  const mp = r.memory[P];
  const mq = r.memory[Q];
  const mib = (k: number | undefined | null) => k === undefined || k === null ? null : k / MiB;
  rows.push({
    metric: "RSS MiB, idle",
    prhelperd: mib(mp?.idleKiB),
    qemu: mib(mq?.idleKiB),
    goal: { kind: "none" },
    digits: 1,
  });
  const limits: Record<number, number> = { 64: 64, 1000: 256 };
  for (const n of r.plan.holdCounts) {
    rows.push({
      metric: `RSS MiB, ${n} conns open`,
      prhelperd: mib(mp?.withConnections[n]),
      qemu: mib(mq?.withConnections[n]),
      goal: limits[n] ? { kind: "absAtMost", value: limits[n], unit: "MiB" } : { kind: "none" },
      digits: 1,
    });
  }
  const label = countLabel(r.plan.requests);
  const last = (m: MemoryResult | null | undefined) =>
    m && m.samples.length ? m.samples[m.samples.length - 1][1] : null;
  const first = (m: MemoryResult | null | undefined) =>
    m && m.samples.length ? m.samples[0][1] : null;
  rows.push({
    metric: `RSS MiB after ${label} requests`,
    prhelperd: mib(last(mp)),
    qemu: mib(last(mq)),
    goal: { kind: "none" },
    digits: 1,
  });
  const gp = mp ? growthKiB(mp.samples) : null;
  const gq = mq ? growthKiB(mq.samples) : null;
  rows.push({
    metric: `RSS growth MiB (peaks), ${countLabel(r.plan.every)} -> ${label} requests`,
    prhelperd: mib(gp),
    qemu: mib(gq),
    goal: { kind: "flat", base: mib(first(mp)), fraction: 0.05 },
    digits: 1,
  });
  rows.push({
    metric: "start -> first reply ms",
    prhelperd: r.startup[P] ?? null,
    qemu: r.startup[Q] ?? null,
    goal: { kind: "none" },
    digits: 1,
  });
  rows.push({
    metric: "socket-activated connect -> first reply ms",
    prhelperd: r.activated[P] ?? null,
    qemu: r.activated[Q] ?? null,
    goal: { kind: "none" },
    digits: 1,
  });
  return rows;
}

async function compareClients(
  clients: LoadClient[],
  specs: DaemonSpec[],
  plan: Plan,
  dir: string,
): Promise<string> {
  const lines = [
    "| server | conns | client | round trips/s | p50 us | p99 us |",
    "|---|--:|---|--:|--:|--:|",
  ];
  const running: RunningDaemon[] = [];
  try {
    for (const s of specs) running.push(await startDaemon(s, { dir }));
    for (const d of running) {
      for (const conns of plan.concurrency) {
        for (const c of clients) {
          const rs: LoadResult[] = [];
          for (let i = 0; i < plan.rounds; i++) {
            rs.push(
              await c.run({
                socket: d.socket,
                connections: conns,
                warmupMs: plan.warmupMs,
                durationMs: plan.durationMs,
              }),
            );
          }
          const m = (f: (x: LoadResult) => number) => median(rs.map(f))!;
          lines.push(
            `| ${d.spec.name} | ${conns} | ${c.kind} | ${m((x) => x.rps).toFixed(0)} | ` +
              `${m((x) => x.p50Us).toFixed(1)} | ${m((x) => x.p99Us).toFixed(1)} |`,
          );
          log(lines[lines.length - 1]);
        }
      }
    }
  } finally {
    for (const d of running) await d.stop();
  }
  return lines.join("\n");
}

/** The 1-minute load average (other work on the machine skews every figure). */
export function loadAverage(): string {
  try {
    return Deno.readTextFileSync("/proc/loadavg").split(" ")[0];
  } catch {
    return "?";
  }
}

/** A description of this machine for the report. */
export function machine(): string {
  const cpu = (() => {
    try {
      return /^model name\s*:\s*(.*)$/m.exec(Deno.readTextFileSync("/proc/cpuinfo"))?.[1] ??
        "unknown CPU";
    } catch {
      return "unknown CPU";
    }
  })();
  return `${navigator.hardwareConcurrency} CPUs (${cpu}), Linux ${Deno.osRelease()}, ` +
    `Deno ${Deno.version.deno}; load average ${loadAverage()}`;
}

async function main(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      quick: { type: "boolean", default: false },
      client: { type: "string", default: "auto" },
      "compare-clients": { type: "boolean", default: false },
      json: { type: "string" },
      "prhelperd-arg": { type: "string", multiple: true, default: [] },
      "prhelperd-root": { type: "string" },
      ab: { type: "string" },
      "ab-jit": { type: "boolean", default: false },
      rounds: { type: "string" },
      "duration-ms": { type: "string" },
      "leak-requests": { type: "string" },
      help: { type: "boolean", short: "h", default: false },
    },
  });
  if (values.help) {
    console.log(
      "usage: deno run -A bench/main.ts [--quick] [--client auto|c|deno] [--compare-clients]\n" +
        "                                 [--rounds N] [--duration-ms MS] [--leak-requests N]\n" +
        "                                 [--json FILE] [--ab TREE | --ab-jit]\n" +
        "                                 [--prhelperd-arg ARG]...",
    );
    return 0;
  }
  if (!["auto", "c", "deno"].includes(values.client)) {
    console.error(`bench: --client "${values.client}" must be auto, c or deno`);
    return 2;
  }
  const plan = { ...(values.quick ? QUICK : FULL) };
  const numeric = [
    ["rounds", "rounds"],
    ["duration-ms", "durationMs"],
    ["leak-requests", "requests"],
  ] as const;
  for (const [opt, key] of numeric) {
    const v = values[opt];
    if (v === undefined) continue;
    if (!/^\d+$/.test(v) || Number(v) < 1) {
      console.error(`bench: --${opt} "${v}" must be a positive whole number`);
      return 2;
    }
    plan[key] = Number(v);
  }
  try {
    const { hard } = getNofileLimit();
    setNofileLimit(hard, hard); // the bench holds 1,000 connections
  } catch (e) {
    log(`cannot raise RLIMIT_NOFILE: ${e}`);
  }
  const dir = await Deno.makeTempDir({ prefix: "prhelperd-bench-" });
  try {
    const loadgen = values.client === "deno" ? null : await compileLoadgen(dir);
    if (values.client === "c" && loadgen === null) {
      console.error("bench: --client c needs gcc (or cc) on PATH");
      return 2;
    }
    const client = loadgen !== null ? cClient(loadgen) : denoClient();
    const prhelperd = prhelperdSpec({
      extraArgs: values["prhelperd-arg"],
      root: values["prhelperd-root"],
    });
    const qemu = isExecutable(QEMU_PR_HELPER) ? qemuSpec() : null;
    if (qemu === null) log(`${QEMU_PR_HELPER} not found: its column stays n/a`);
    const floor = loadgen !== null ? floorSpec(loadgen) : null;

    if (values["ab-jit"]) {
      // A/B: the daemon with V8's JIT against the daemon as shipped (--jitless)
      const jitFlags = DAEMON_V8_FLAGS.filter((f) => f !== "--jitless");
      const withJit = prhelperdSpec({
        name: "jit",
        v8Flags: jitFlags,
        extraArgs: values["prhelperd-arg"],
      });
      const shipped = prhelperdSpec({ name: "jitless", extraArgs: values["prhelperd-arg"] });
      log(`A/B: V8 flags ${jitFlags.join(",")} against ${DAEMON_V8_FLAGS.join(",")}`);
      const figures = await throughput([withJit, shipped], client, plan, { dir });
      console.log(`machine: ${machine()}; load average ${loadAverage()}`);
      console.log(
        formatTable(throughputRows(figures, plan, { a: "jit", b: "jitless" }), {
          columns: ["jit", "jitless"],
        }),
      );
      const startup: Record<string, number | null> = {};
      for (const s of [withJit, shipped]) {
        startup[s.name] = await timeToFirstReply(s, { dir, runs: plan.startupRuns });
      }
      console.log(
        `start-up to first reply (median ms): jit ${startup.jit}, jitless ${startup.jitless}`,
      );
      return 0;
    }

    if (values.ab !== undefined) {
      // A/B: a patched tree against this checkout, same client, interleaved
      const patched = prhelperdSpec({
        root: values.ab,
        name: "patched",
        extraArgs: values["prhelperd-arg"],
      });
      const checkout = prhelperdSpec({ name: "checkout", extraArgs: values["prhelperd-arg"] });
      log(`A/B: ${values.ab} against this checkout, ${client.description}`);
      const figures = await throughput([patched, checkout], client, plan, { dir });
      console.log(`machine: ${machine()}`);
      console.log(
        formatTable(throughputRows(figures, plan, { a: "patched", b: "checkout" }), {
          columns: ["patched", "checkout"],
        }),
      );
      return 0;
    }

    if (values["compare-clients"]) {
      if (loadgen === null) {
        console.error("bench: --compare-clients needs gcc for the C client");
        return 2;
      }
      const servers = [floorSpec(loadgen), ...(qemu ? [qemu] : []), prhelperd];
      console.log(
        await compareClients([cClient(loadgen), denoClient()], servers, plan, dir),
      );
      return 0;
    }

    const specs = [prhelperd, ...(qemu ? [qemu] : []), ...(floor ? [floor] : [])];
    log(`throughput with ${client.description}; load average ${loadAverage()}`);
    const figures = await throughput(specs, client, plan, { dir });
    let alike: Figures | null = null;
    if (qemu && client.kind === "c") {
      log("like-for-like: PR OUT REGISTER with a read-only fd (both refuse without an ioctl)");
      alike = await throughput([prhelperd, qemu], client, plan, { dir, request: "prout-ro" });
    }

    const memory: Record<string, MemoryResult | null> = {};
    const startup: Record<string, number | null> = {};
    const activated: Record<string, number | null> = {};
    const activator = which("systemd-socket-activate");
    if (activator === null) log("systemd-socket-activate not found: activation row stays n/a");
    for (const s of [prhelperd, ...(qemu ? [qemu] : [])]) {
      log(`memory of ${s.name}`);
      memory[s.name] = await measureMemory(s, {
        dir,
        client,
        holdCounts: plan.holdCounts,
        requests: plan.requests,
        every: plan.every,
        connections: plan.leakConnections,
        settleMs: plan.settleMs,
      });
      log(`start-up of ${s.name}`);
      startup[s.name] = await timeToFirstReply(s, { dir, runs: plan.startupRuns });
      activated[s.name] = activator === null
        ? null
        : await timeActivatedFirstReply(s, { dir, runs: plan.startupRuns, activator });
    }
    const partial = {
      plan,
      client: client.description,
      figures,
      alike,
      memory,
      startup,
      activated,
    };
    const rows = buildRows(partial);
    const results: BenchResults = { ...partial, rows };

    console.log(
      `prhelperd vs qemu-pr-helper${values.quick ? " (quick run: figures not meaningful)" : ""}`,
    );
    console.log(`machine: ${machine()}`);
    console.log(`client: ${client.description}`);
    console.log("");
    console.log(formatTable(rows));
    console.log("");
    console.log(notes(plan, prhelperd, memory));
    if (values.json) {
      await Deno.writeTextFile(values.json, JSON.stringify(results, null, 2) + "\n");
    }
    return 0;
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

function notes(plan: Plan, prhelperd: DaemonSpec, memory: Record<string, MemoryResult | null>) {
  const series = Object.entries(memory).map(([name, m]) =>
    `  ${name}: ` +
    (m ? m.samples.map(([n, k]) => `${countLabel(n)}=${(k / MiB).toFixed(1)}`).join(" ") : "n/a")
  );
  return [
    "Notes:",
    "- Error path: every request is PR IN READ KEYS (allocation length 8192) with an fd of",
    "  /dev/null. prhelperd answers CHECK CONDITION 05/20/00 before any ioctl (its device check",
    "  refuses a character device that is not sg); qemu-pr-helper issues the SG_IO ioctl in its",
    "  thread pool, gets ENOTTY and answers CHECK CONDITION 0B/00/06. Both replies are 104 bytes.",
    `- Throughput/latency: median of ${plan.rounds} interleaved round(s) of ${plan.durationMs} ms ` +
    `after ${plan.warmupMs} ms warm-up; latency = send of the CDB to the last reply byte.`,
    "- floor: bench/loadgen.c's do-nothing epoll server (same protocol, no work): the",
    "  socket round-trip limit of this machine with this client.",
    `- prhelperd ran as: deno ${
      prhelperd.argv("SOCK").slice(1).join(" ").replaceAll(`${ROOT}/`, "")
    } (stderr to a file;`,
    "  at the default verbosity it logs each refused request at INFO).",
    "- RSS is VmRSS of the daemon process (all threads, Workers included). The held",
    "  connections each did one request first.",
    `- RSS over the leak run (${plan.leakConnections} connections, MiB at each request count):`,
    ...series,
    "- Start-up: median of runs; spawn -> first reply includes the client's 1 ms connect retry;",
    "  activated: systemd-socket-activate -l SOCK <daemon> (no --accept), connect -> first reply.",
  ].join("\n");
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
