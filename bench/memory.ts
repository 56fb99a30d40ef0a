/**
 * Resident memory of a daemon: idle, with N connections open (each has done
 * one request), and sampled every `every` requests over a long run, where a
 * leak shows as growth.
 *
 * @module
 */

import { closeFd, openDevice, PrHelperClient } from "../mod.ts";
import type { LoadClient } from "./client_load.ts";
import { type DaemonSpec, delay, rssKiB, startDaemon } from "./daemons.ts";

/** What {@linkcode measureMemory} found (all figures KiB). */
export interface MemoryResult {
  idleKiB: number;
  /** Connection count → RSS with that many open. */
  withConnections: Record<number, number>;
  /** Requests so far → RSS. */
  samples: [number, number][];
  /** Requests actually run. */
  requests: number;
}

/** Options of {@linkcode measureMemory}. */
export interface MemoryOptions {
  dir: string;
  client: LoadClient;
  /** Connection counts to hold, ascending (e.g. [64, 1000]). */
  holdCounts: number[];
  /** Requests in the leak run. */
  requests: number;
  /** Sample RSS after every this many requests. */
  every: number;
  /** Connections driving the leak run. */
  connections: number;
  /** Wait before reading RSS, so the daemon has settled. */
  settleMs: number;
}

/** Start `spec` fresh, measure, stop it. */
export async function measureMemory(
  spec: DaemonSpec,
  options: MemoryOptions,
): Promise<MemoryResult> {
  const d = await startDaemon(spec, { dir: options.dir });
  const clients: PrHelperClient[] = [];
  const dev = openDevice("/dev/null", { write: true });
  try {
    await delay(options.settleMs);
    const idleKiB = mustRss(d.pid, spec.name);
    const withConnections: Record<number, number> = {};
    const cdb = new Uint8Array(10);
    cdb[0] = 0x5e;
    cdb[7] = 0x20;
    for (const target of options.holdCounts) {
      while (clients.length < target) {
        const c = PrHelperClient.connect(d.socket, { timeoutMs: 10_000 });
        clients.push(c);
        c.request(cdb, dev);
      }
      await delay(options.settleMs);
      withConnections[target] = mustRss(d.pid, spec.name);
    }
    for (const c of clients.splice(0)) c.close();
    await delay(options.settleMs);
    const samples: [number, number][] = [];
    const r = await options.client.run({
      socket: d.socket,
      connections: options.connections,
      warmupMs: 0,
      durationMs: 3_600_000, // only a safety limit: the run ends after maxRequests
      maxRequests: options.requests,
      reportEvery: options.every,
      onProgress: (n) => samples.push([n, mustRss(d.pid, spec.name)]),
    });
    if (r.errors > 0) throw new Error(`${spec.name}: ${r.errors} connection(s) lost in the run`);
    if (r.requests < options.requests) {
      throw new Error(`${spec.name}: only ${r.requests} of ${options.requests} requests ran`);
    }
    return { idleKiB, withConnections, samples, requests: r.requests };
  } finally {
    for (const c of clients) c.close();
    closeFd(dev);
    await d.stop();
  }
}

function mustRss(pid: number, name: string): number {
  const v = rssKiB(pid);
  if (v === null) throw new Error(`${name} (pid ${pid}) is gone: cannot read its VmRSS`);
  return v;
}

/**
 * Growth over the run: the highest sample of the second half minus the highest
 * of the first half (samples start after `every` requests, when caches and the
 * JIT have warmed up). A garbage-collected heap makes RSS a sawtooth, so the
 * last sample minus the first measures where in a cycle the run stopped; the
 * peaks of the two halves compare like with like, and a leak raises the
 * second half's peak by about half of what it leaked over the run.
 */
export function growthKiB(samples: [number, number][]): number | null {
  if (samples.length < 2) return null;
  const mid = Math.floor(samples.length / 2);
  const peak = (part: [number, number][]) => Math.max(...part.map(([, kib]) => kib));
  return peak(samples.slice(mid)) - peak(samples.slice(0, mid));
}
