/**
 * Start-up latency: from spawning the daemon to its first reply, and from a
 * client's connect to a socket held by systemd-socket-activate (which then
 * starts the daemon) to the first reply.
 *
 * @module
 */

import { type DaemonSpec, firstReply, sleepSync, spawnLogged, stopChild } from "./daemons.ts";

/** Median of a list (null if empty). */
export function median(xs: number[]): number | null {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** Options of the start-up measurements. */
export interface StartupOptions {
  dir: string;
  /** Timed runs (after one untimed warm-up when more than 1). */
  runs: number;
}

/** Spawn → first reply, in ms (median over runs). */
export async function timeToFirstReply(
  spec: DaemonSpec,
  options: StartupOptions,
): Promise<number> {
  const times: number[] = [];
  const total = options.runs > 1 ? options.runs + 1 : options.runs;
  for (let i = 0; i < total; i++) {
    const socket = `${options.dir}/start-${spec.name}-${i}.sock`;
    const t0 = performance.now();
    const child = spawnLogged(spec.argv(socket), {
      logFile: `${options.dir}/start-${spec.name}.log`,
      env: spec.env,
    });
    try {
      firstReply(socket, t0 + 30_000);
      if (total === options.runs || i > 0) times.push(performance.now() - t0);
    } finally {
      await stopChild(child);
      removeQuietly(socket);
    }
  }
  return median(times)!;
}

/**
 * Connect → first reply under `systemd-socket-activate -l SOCKET` (no --accept:
 * the daemon gets the listening socket as fd 3 and serves the waiting client).
 */
export async function timeActivatedFirstReply(
  spec: DaemonSpec,
  options: StartupOptions & { activator: string },
): Promise<number> {
  const times: number[] = [];
  const total = options.runs > 1 ? options.runs + 1 : options.runs;
  for (let i = 0; i < total; i++) {
    const socket = `${options.dir}/act-${spec.name}-${i}.sock`;
    const child = spawnLogged([options.activator, "-l", socket, ...spec.argv(null)], {
      logFile: `${options.dir}/act-${spec.name}.log`,
      env: spec.env,
    });
    try {
      // wait until the activator listens (the socket file appears at bind time)
      const deadline = performance.now() + 10_000;
      while (!exists(socket)) {
        if (performance.now() > deadline) throw new Error(`${options.activator} did not listen`);
        sleepSync(1);
      }
      sleepSync(20); // bind → listen: let the activator reach poll() before the connect
      const ms = firstReply(socket, performance.now() + 30_000);
      if (total === options.runs || i > 0) times.push(ms);
    } finally {
      await stopChild(child);
      removeQuietly(socket);
    }
  }
  return median(times)!;
}

function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

function removeQuietly(path: string): void {
  try {
    Deno.removeSync(path);
  } catch { /* gone */ }
}
