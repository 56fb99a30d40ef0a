/**
 * The daemons the benchmark compares: how to start each one (on a socket
 * path, or under systemd-socket-activate), wait until it answers, read its
 * resident memory, and stop it.
 *
 * @module
 */

import { closeFd, openDevice, PrHelperClient } from "../mod.ts";
import { v8FlagsArgument } from "../tools/runtime_flags.ts";

/** The project root (where deno.json and main.ts live). */
export const ROOT: string = new URL("..", import.meta.url).pathname.replace(/\/$/, "");

/** Debian's qemu-pr-helper. */
export const QEMU_PR_HELPER = "/usr/bin/qemu-pr-helper";

/** How to run one daemon. */
export interface DaemonSpec {
  /** Short name used in the table and on the command line. */
  name: string;
  /** argv to listen on `socket`, or (null) on an inherited, socket-activated fd 3. */
  argv(socket: string | null): string[];
  /** Environment additions. */
  env?: Record<string, string>;
}

/** Options of {@linkcode prhelperdSpec}. */
export interface PrhelperdSpecOptions {
  /** Arguments after the socket option. */
  extraArgs?: string[];
  /** Tree to run main.ts from (default: this checkout), e.g. a patched copy. */
  root?: string;
  /** Name in the table (default "prhelperd"). */
  name?: string;
  /** V8 flags (default: the daemon's, tools/runtime_flags.ts). */
  v8Flags?: readonly string[];
}

/** prhelperd from this checkout (or `root`), with its own permission set. */
export function prhelperdSpec(options: PrhelperdSpecOptions = {}): DaemonSpec {
  const root = options.root ?? ROOT;
  return {
    name: options.name ?? "prhelperd",
    argv: (socket) => [
      Deno.execPath(),
      "run",
      "-P=daemon",
      "--no-prompt",
      options.v8Flags === undefined ? v8FlagsArgument() : `--v8-flags=${options.v8Flags.join(",")}`,
      "--config",
      `${root}/deno.json`,
      `${root}/main.ts`,
      ...(socket === null ? [] : ["-k", socket]),
      ...(options.extraArgs ?? []),
    ],
    env: { RUST_BACKTRACE: "0", NO_COLOR: "1" },
  };
}

/** Debian's qemu-pr-helper (as root it keeps only CAP_SYS_RAWIO). */
export function qemuSpec(): DaemonSpec {
  return {
    name: "qemu-pr-helper",
    argv: (socket) => [QEMU_PR_HELPER, ...(socket === null ? [] : ["-k", socket])],
  };
}

/** The floor: bench/loadgen.c's do-nothing server (`loadgen serve`). */
export function floorSpec(loadgen: string): DaemonSpec {
  return {
    name: "floor",
    argv: (socket) => {
      if (socket === null) throw new Error("the floor server cannot be socket-activated");
      return [loadgen, "serve", socket];
    },
  };
}

/** true if `path` exists and is executable by someone. */
export function isExecutable(path: string): boolean {
  try {
    const st = Deno.statSync(path);
    return st.isFile && ((st.mode ?? 0) & 0o111) !== 0;
  } catch {
    return false;
  }
}

/** Find a program on PATH. */
export function which(program: string): string | null {
  for (const dir of (Deno.env.get("PATH") ?? "/usr/bin:/bin").split(":")) {
    if (dir !== "" && isExecutable(`${dir}/${program}`)) return `${dir}/${program}`;
  }
  return null;
}

/** Sleep without yielding to the event loop (keeps timing loops tight). */
export function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** VmRSS of a process in KiB, or null if it is gone. */
export function rssKiB(pid: number): number | null {
  try {
    const m = /^VmRSS:\s+(\d+) kB/m.exec(Deno.readTextFileSync(`/proc/${pid}/status`));
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}

/** CPU time (user + system) of every live thread of a process, in ns, or null. */
export function cpuNs(pid: number): number | null {
  try {
    let total = 0;
    for (const t of Deno.readDirSync(`/proc/${pid}/task`)) {
      try {
        total += Number(
          Deno.readTextFileSync(`/proc/${pid}/task/${t.name}/schedstat`).split(" ")[0],
        );
      } catch { /* thread exited */ }
    }
    return total;
  } catch {
    return null;
  }
}

/** Start `argv` with stdout discarded and stderr appended to `logFile`; the pid is argv's. */
export function spawnLogged(
  argv: string[],
  options: { logFile: string; env?: Record<string, string> },
): Deno.ChildProcess {
  // `exec` keeps the pid: the child is the daemon itself, not a shell
  return new Deno.Command("/bin/sh", {
    args: ["-c", 'exec "$@" 2>>"$LOGF"', "sh", ...argv],
    env: { ...options.env, LOGF: options.logFile },
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
}

/**
 * Connect, greet and run one command, retrying while the socket is missing or
 * refuses, until `deadline` (performance.now() ms). Returns the elapsed time of
 * the successful attempt's connect → reply, in ms.
 */
export function firstReply(socket: string, deadline: number): number {
  const devNull = openDevice("/dev/null", { write: true });
  try {
    for (;;) {
      let client: PrHelperClient;
      const t0 = performance.now();
      try {
        client = PrHelperClient.connect(socket, { timeoutMs: 20_000 });
      } catch (e) {
        if (performance.now() > deadline) {
          throw new Error(`no answer on ${socket} before the deadline: ${e}`);
        }
        sleepSync(1);
        continue;
      }
      try {
        client.request(readKeysCdb(), devNull);
        return performance.now() - t0;
      } finally {
        client.close();
      }
    }
  } finally {
    closeFd(devNull);
  }
}

/** PR IN READ KEYS, allocation length 8192. */
export function readKeysCdb(): Uint8Array {
  const cdb = new Uint8Array(10);
  cdb[0] = 0x5e;
  cdb[7] = 0x20;
  return cdb;
}

/** A daemon started by {@linkcode startDaemon}. */
export interface RunningDaemon {
  spec: DaemonSpec;
  child: Deno.ChildProcess;
  pid: number;
  socket: string;
  logFile: string;
  /** Stop it (SIGTERM, then SIGKILL after 5 s). */
  stop(): Promise<void>;
}

/** Start a daemon on `<dir>/<name>.sock` and wait until it answers a request. */
export async function startDaemon(
  spec: DaemonSpec,
  options: { dir: string; timeoutMs?: number },
): Promise<RunningDaemon> {
  const socket = `${options.dir}/${spec.name}.sock`;
  const logFile = `${options.dir}/${spec.name}.log`;
  try {
    Deno.removeSync(socket);
  } catch { /* not there */ }
  const child = spawnLogged(spec.argv(socket), { logFile, env: spec.env });
  const running: RunningDaemon = {
    spec,
    child,
    pid: child.pid,
    socket,
    logFile,
    stop: () => stopChild(child),
  };
  try {
    const deadline = performance.now() + (options.timeoutMs ?? 30_000);
    for (;;) {
      const status = await Promise.race([child.status, delay(5).then(() => null)]);
      if (status !== null) {
        throw new Error(`${spec.name} exited (${status.code}) before answering: ${tail(logFile)}`);
      }
      try {
        firstReply(socket, 0);
        return running;
      } catch {
        if (performance.now() > deadline) {
          throw new Error(`${spec.name} did not answer on ${socket}: ${tail(logFile)}`);
        }
      }
    }
  } catch (e) {
    await running.stop();
    throw e;
  }
}

/** SIGTERM, wait up to 5 s, then SIGKILL. */
export async function stopChild(child: Deno.ChildProcess): Promise<void> {
  try {
    child.kill("SIGTERM");
  } catch { /* already gone */ }
  const done = await Promise.race([child.status.then(() => true), delay(5000).then(() => false)]);
  if (!done) {
    try {
      child.kill("SIGKILL");
    } catch { /* gone */ }
    await child.status;
  }
}

/** The last lines of a log file (for error messages). */
export function tail(path: string, lines = 5): string {
  try {
    return Deno.readTextFileSync(path).trimEnd().split("\n").slice(-lines).join(" | ");
  } catch {
    return "(no log)";
  }
}

/** setTimeout as a promise. */
export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
