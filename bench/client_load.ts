/**
 * The load client: N connections, each in lock-step (send one PR IN READ KEYS
 * with an fd of /dev/null, wait for the whole reply, send the next). Two
 * implementations drive exactly the same protocol:
 *
 * - "c": bench/loadgen.c, compiled with gcc into a temporary directory at
 *   bench time, one thread with epoll over every connection;
 * - "deno": Workers using synchronous FFI (one Worker per 8 connections, each
 *   polling its connections with poll(2)), see bench/load_worker.ts.
 *
 * @module
 */

import { ROOT, which } from "./daemons.ts";

/** The outcome of one load run. */
export interface LoadResult {
  /** Replies counted in the measured window. */
  requests: number;
  seconds: number;
  rps: number;
  p50Us: number;
  p99Us: number;
  /** Connections the server closed, or failed sends. */
  errors: number;
  /** SCSI status byte → count (all replies, warm-up included). */
  status: Record<string, number>;
  /** CPU time of the server per reply (all replies), if measured by the caller. */
  serverCpuUs?: number;
}

/** What to run. */
export interface LoadOptions {
  socket: string;
  connections: number;
  warmupMs: number;
  durationMs: number;
  /** Stop after this many replies instead (durationMs is then ignored; all replies count). */
  maxRequests?: number;
  /** With maxRequests: called each time this many more replies have arrived. */
  reportEvery?: number;
  onProgress?: (requests: number) => void;
  /**
   * What each request is (default "prin"): PR IN READ KEYS with a read-write
   * fd of /dev/null, or "prout-ro", PR OUT REGISTER with a read-only fd of
   * /dev/null, which qemu-pr-helper and prhelperd both refuse without an
   * ioctl (the like-for-like rows). The C client only.
   */
  request?: "prin" | "prout-ro";
}

/** A load client. */
export interface LoadClient {
  kind: "c" | "deno";
  /** Human description for the table notes. */
  description: string;
  run(options: LoadOptions): Promise<LoadResult>;
}

/** Compile bench/loadgen.c into `dir`; returns the binary's path, or null without gcc. */
export async function compileLoadgen(dir: string): Promise<string | null> {
  const gcc = which("gcc") ?? which("cc");
  if (gcc === null) return null;
  const out = `${dir}/loadgen`;
  const r = await new Deno.Command(gcc, {
    args: ["-O2", "-Wall", "-o", out, `${ROOT}/bench/loadgen.c`],
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!r.success) {
    throw new Error(`gcc failed on bench/loadgen.c: ${new TextDecoder().decode(r.stderr)}`);
  }
  return out;
}

/** The C client (bench/loadgen.c). */
export function cClient(loadgen: string): LoadClient {
  return {
    kind: "c",
    description: "C load generator (bench/loadgen.c, gcc -O2), 1 thread, epoll",
    run: (o) => runC(loadgen, o),
  };
}

async function runC(loadgen: string, o: LoadOptions): Promise<LoadResult> {
  const args = [
    "load",
    o.socket,
    String(o.connections),
    String(o.warmupMs),
    String(o.durationMs),
  ];
  if (o.maxRequests !== undefined) {
    args.push(String(o.maxRequests), String(o.reportEvery ?? 0));
  }
  const child = new Deno.Command(loadgen, {
    args,
    env: { LOADGEN_REQUEST: o.request ?? "prin" },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stderr = new Response(child.stderr).text();
  let last = "";
  let buffered = "";
  for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) {
    buffered += chunk;
    let nl;
    while ((nl = buffered.indexOf("\n")) >= 0) {
      const line = buffered.slice(0, nl);
      buffered = buffered.slice(nl + 1);
      const m = /^progress (\d+)$/.exec(line);
      if (m) o.onProgress?.(Number(m[1]));
      else if (line.startsWith("{")) last = line;
    }
  }
  const status = await child.status;
  const err = await stderr;
  if (last === "") {
    throw new Error(`loadgen on ${o.socket} gave no result (exit ${status.code}): ${err.trim()}`);
  }
  const j = JSON.parse(last);
  return {
    requests: j.requests,
    seconds: j.seconds,
    rps: j.rps,
    p50Us: j.p50_us,
    p99Us: j.p99_us,
    errors: j.errors,
    status: j.status,
  };
}

/** Connections per Worker in the Deno client. */
export const CONNECTIONS_PER_WORKER = 8;

/** The Deno client: Workers with synchronous FFI. */
export function denoClient(): LoadClient {
  return {
    kind: "deno",
    description:
      `Deno Workers with synchronous FFI (${CONNECTIONS_PER_WORKER} connections per Worker, poll)`,
    run: runDeno,
  };
}

/** Message from the main thread to a load Worker. */
export interface WorkerStart {
  socket: string;
  connections: number;
  /** Absolute epoch ms (performance.timeOrigin + now) when sending starts. */
  startAt: number;
  warmupMs: number;
  durationMs: number;
  /** Shared counters: [0] replies so far (all Workers), [1] stop flag. */
  shared: SharedArrayBuffer;
  /** Stop when [0] reaches this (0: time-limited). */
  maxRequests: number;
}

/** A Worker's answer. */
export type WorkerReply =
  | { kind: "ready" }
  | {
    kind: "done";
    latenciesUs: Float64Array;
    errors: number;
    status: Record<string, number>;
    firstMs: number;
    lastMs: number;
  }
  | { kind: "error"; message: string };

async function runDeno(o: LoadOptions): Promise<LoadResult> {
  if ((o.request ?? "prin") !== "prin") {
    throw new Error(`the Deno client sends only PR IN; request "${o.request}" needs the C client`);
  }
  const nWorkers = Math.ceil(o.connections / CONNECTIONS_PER_WORKER);
  const shared = new SharedArrayBuffer(8);
  const counters = new Int32Array(shared);
  const workers: Worker[] = [];
  try {
    const replies: Promise<WorkerReply>[] = [];
    const ready: Promise<void>[] = [];
    let startResolve!: (startAt: number) => void;
    const started = new Promise<number>((r) => startResolve = r);
    for (let w = 0; w < nWorkers; w++) {
      const conns = Math.min(CONNECTIONS_PER_WORKER, o.connections - w * CONNECTIONS_PER_WORKER);
      const worker = new Worker(new URL("./load_worker.ts", import.meta.url), { type: "module" });
      workers.push(worker);
      let readyResolve!: () => void;
      ready.push(new Promise((r) => readyResolve = r));
      replies.push(
        new Promise((resolve) => {
          worker.onmessage = (e: MessageEvent<WorkerReply>) => {
            if (e.data.kind === "ready") readyResolve();
            else resolve(e.data);
            if (e.data.kind === "error") readyResolve();
          };
          worker.onerror = (e) => {
            e.preventDefault();
            readyResolve();
            resolve({ kind: "error", message: e.message });
          };
        }),
      );
      started.then((startAt) => {
        const msg: WorkerStart = {
          socket: o.socket,
          connections: conns,
          startAt,
          warmupMs: o.maxRequests !== undefined ? 0 : o.warmupMs,
          durationMs: o.maxRequests !== undefined ? 3_600_000 : o.durationMs,
          shared,
          maxRequests: o.maxRequests ?? 0,
        };
        worker.postMessage(msg);
      });
    }
    startResolve(performance.timeOrigin + performance.now() + 100 + o.connections);
    await Promise.all(ready);
    // progress for count runs: poll the shared counter
    let reported = 0;
    let finished = false;
    const progress = (async () => {
      if (o.maxRequests === undefined || !o.reportEvery || !o.onProgress) return;
      while (!finished) {
        const n = Atomics.load(counters, 0);
        while (reported + o.reportEvery <= Math.min(n, o.maxRequests)) {
          reported += o.reportEvery;
          o.onProgress(reported);
        }
        await new Promise((r) => setTimeout(r, 10));
      }
    })();
    const results = await Promise.all(replies);
    finished = true;
    await progress;
    const all: number[] = [];
    let errors = 0;
    let first = Infinity;
    let last = 0;
    const status: Record<string, number> = {};
    for (const r of results) {
      if (r.kind === "error") throw new Error(`load Worker failed: ${r.message}`);
      if (r.kind !== "done") continue;
      for (const v of r.latenciesUs) all.push(v);
      errors += r.errors;
      first = Math.min(first, r.firstMs);
      last = Math.max(last, r.lastMs);
      for (const [k, v] of Object.entries(r.status)) status[k] = (status[k] ?? 0) + v;
    }
    if (o.maxRequests !== undefined && o.onProgress && o.reportEvery) {
      while (reported + o.reportEvery <= Math.min(all.length, o.maxRequests)) {
        reported += o.reportEvery;
        o.onProgress(reported);
      }
    }
    all.sort((a, b) => a - b);
    const seconds = o.maxRequests !== undefined ? (last - first) / 1000 : o.durationMs / 1000;
    const pick = (q: number) => all.length ? all[Math.floor((all.length - 1) * q)] : 0;
    return {
      requests: all.length,
      seconds,
      rps: seconds > 0 ? all.length / seconds : 0,
      p50Us: pick(0.5),
      p99Us: pick(0.99),
      errors,
      status,
    };
  } finally {
    for (const w of workers) w.terminate();
  }
}
