/**
 * The daemon under test as a subprocess, for the fuzzer and the fault matrix:
 * start it on a temp socket, wait until it serves, count its open fds, check
 * it with a QEMU-like control client, stop it.
 *
 * @module
 */

import { closeFd, O_RDONLY, O_RDWR, openPath } from "../ffi/files.ts";
import { connectUnix, unixSocket } from "../ffi/sockets.ts";
import { PrHelperClient } from "../src/client.ts";
import { prInCdb, prOutCdb } from "../src/cdb.ts";
import { formatSense, parseSense, Sense } from "../src/sense.ts";
import { ScsiStatus } from "../src/wire.ts";
import { v8FlagsArgument } from "../tools/runtime_flags.ts";

/** This repository's root (where main.ts and deno.json are). */
export const REPO_ROOT: string = new URL("../", import.meta.url).pathname.replace(/\/$/, "");

/** Sleep without blocking the event loop. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Options of {@linkcode startDaemon}. */
export interface StartDaemonOptions {
  /** Repository whose main.ts is run (default: this one; a scratch copy for the self-test). */
  repo?: string;
  /** Extra daemon arguments (after `-k SOCK -q`). */
  args?: string[];
  /** Pass -q (default true): only warnings and errors are logged. */
  quiet?: boolean;
  /** Run under `prlimit --nofile=N:N`. */
  nofile?: number;
  /** Give up starting after this long (a deadline against hangs). */
  timeoutMs?: number;
}

/** A running daemon subprocess. */
export class DaemonProcess {
  readonly socket: string;
  readonly dir: string;
  readonly child: Deno.ChildProcess;
  readonly pid: number;
  /** Exit status once it exited. */
  exited: Deno.CommandStatus | null = null;
  readonly #stderrPath: string;
  #finalStderr: string | null = null;

  constructor(dir: string, socket: string, child: Deno.ChildProcess, pid: number) {
    this.dir = dir;
    this.socket = socket;
    this.child = child;
    this.pid = pid;
    this.#stderrPath = `${dir}/stderr.log`;
    child.status.then((s) => this.exited = s);
  }

  /**
   * What the daemon wrote to stderr so far. It goes to a file, not a pipe: the
   * fuzzer blocks in synchronous poll(2) for long stretches and could never
   * drain a pipe, and a daemon blocked on a full stderr pipe would look hung.
   */
  get stderr(): string {
    if (this.#finalStderr !== null) return this.#finalStderr;
    try {
      return Deno.readTextFileSync(this.#stderrPath);
    } catch {
      return "";
    }
  }

  /** The process is still running. */
  get alive(): boolean {
    if (this.exited !== null) return false;
    try {
      Deno.statSync(`/proc/${this.pid}`);
      return true;
    } catch {
      return false;
    }
  }

  /** Number of open fds of the daemon (/proc/PID/fd); -1 if it is gone. */
  fdCount(): number {
    try {
      let n = 0;
      for (const _ of Deno.readDirSync(`/proc/${this.pid}/fd`)) n++;
      return n;
    } catch {
      return -1;
    }
  }

  /** The daemon's open fds with their targets, for leak reports. */
  fdTargets(): string[] {
    const out: string[] = [];
    try {
      for (const e of Deno.readDirSync(`/proc/${this.pid}/fd`)) {
        try {
          out.push(`${e.name} -> ${Deno.readLinkSync(`/proc/${this.pid}/fd/${e.name}`)}`);
        } catch {
          out.push(`${e.name} -> ?`);
        }
      }
    } catch { /* gone */ }
    return out.sort((a, b) => parseInt(a) - parseInt(b));
  }

  /** glibc's heap checking is loaded in the daemon (libc_malloc_debug.so.0 in its maps). */
  mallocChecked(): boolean {
    try {
      return Deno.readTextFileSync(`/proc/${this.pid}/maps`).includes("libc_malloc_debug");
    } catch {
      return false;
    }
  }

  /** Resident set size in KiB (VmRSS), or -1. */
  rssKiB(): number {
    try {
      const m = /VmRSS:\s+(\d+)/.exec(Deno.readTextFileSync(`/proc/${this.pid}/status`));
      return m ? Number(m[1]) : -1;
    } catch {
      return -1;
    }
  }

  /** Send a signal to the daemon. */
  signal(sig: Deno.Signal): void {
    if (this.exited === null) this.child.kill(sig);
  }

  /** Stop the daemon (SIGTERM, then SIGKILL after `graceMs`) and remove its temp dir. */
  async stop(options: { graceMs?: number } = {}): Promise<Deno.CommandStatus> {
    if (this.exited === null) {
      try {
        this.child.kill("SIGTERM");
      } catch { /* already gone */ }
      const timer = setTimeout(() => {
        try {
          this.child.kill("SIGKILL");
        } catch { /* gone */ }
      }, options.graceMs ?? 10_000);
      await this.child.status;
      clearTimeout(timer);
    }
    const status = await this.child.status;
    this.#finalStderr = this.stderr;
    try {
      Deno.removeSync(this.dir, { recursive: true });
    } catch { /* already removed */ }
    return status;
  }
}

function canConnect(path: string): boolean {
  const fd = unixSocket();
  try {
    connectUnix(fd, path);
    return true;
  } catch {
    return false;
  } finally {
    closeFd(fd);
  }
}

/** Start the daemon on a socket in a fresh temp dir and wait until it accepts. */
/**
 * glibc's heap checking for the daemon under test: on Debian 12 (glibc 2.36)
 * `glibc.malloc.check=3` only takes effect with libc_malloc_debug.so.0
 * preloaded; MALLOC_PERTURB_ fills freed and new blocks, so a use after free
 * reads garbage. Empty where the library is missing.
 */
export function mallocCheckEnv(): Record<string, string> {
  const lib = "/usr/lib/x86_64-linux-gnu/libc_malloc_debug.so.0";
  try {
    Deno.statSync(lib);
  } catch {
    return {};
  }
  return { LD_PRELOAD: lib, GLIBC_TUNABLES: "glibc.malloc.check=3", MALLOC_PERTURB_: "165" };
}

export async function startDaemon(options: StartDaemonOptions = {}): Promise<DaemonProcess> {
  const repo = options.repo ?? REPO_ROOT;
  const dir = Deno.makeTempDirSync({ prefix: "prhelperd-fuzz-" });
  const socket = `${dir}/pr.sock`;
  const deno = Deno.execPath();
  const daemonArgs = [
    "run",
    "-P=daemon",
    "--no-prompt",
    v8FlagsArgument(),
    `${repo}/main.ts`,
    "-k",
    socket,
    ...(options.quiet ?? true ? ["-q"] : []),
    ...(options.args ?? []),
  ];
  const argv = options.nofile !== undefined
    ? ["prlimit", `--nofile=${options.nofile}:${options.nofile}`, "--", deno, ...daemonArgs]
    : [deno, ...daemonArgs];
  // sh and prlimit exec the next program, so the pid stays the daemon's
  const cmd = new Deno.Command("sh", {
    args: ["-c", 'exec "$@" 2>"$PRHELPERD_FUZZ_STDERR"', "sh", ...argv],
    cwd: repo,
    stdin: "null",
    stdout: "null",
    stderr: "null",
    env: {
      RUST_BACKTRACE: "0",
      NO_COLOR: "1",
      PRHELPERD_FUZZ_STDERR: `${dir}/stderr.log`,
      ...mallocCheckEnv(),
    },
  });
  const child = cmd.spawn();
  const d = new DaemonProcess(dir, socket, child, child.pid);
  const deadline = Date.now() + (options.timeoutMs ?? 30_000);
  while (!canConnect(socket)) {
    if (d.exited !== null || Date.now() > deadline) {
      await d.stop();
      throw new Error(
        `daemon did not start (exit ${d.exited?.code ?? "none"}); stderr:\n${d.stderr}`,
      );
    }
    await sleep(20);
  }
  return d;
}

/** fds the control client passes (opened once). */
export class ControlFds {
  readonly ro: number = openPath("/dev/null", O_RDONLY);
  readonly rw: number = openPath("/dev/null", O_RDWR);

  /** Close both. */
  close(): void {
    closeFd(this.ro);
    closeFd(this.rw);
  }
}

/**
 * A well-behaved client's round trip: PR IN READ KEYS and PR OUT REGISTER on
 * /dev/null. Both must come back as CHECK CONDITION 05/20/00 (the host has no
 * SCSI device, so every fd is refused before SG_IO), with QEMU's asserts
 * checked by the client. Returns null if all is well, or what went wrong.
 */
export function controlCheck(socket: string, fds: ControlFds): string | null {
  let client: PrHelperClient | null = null;
  try {
    client = PrHelperClient.connect(socket, { timeoutMs: 10_000 });
    if (client.helperFeatures !== 0) return `greeting advertised ${client.helperFeatures}`;
    const a = client.request(prInCdb(0, 8192), fds.ro);
    const b = client.request(prOutCdb(0, 24), fds.rw, new Uint8Array(24));
    for (const [what, r] of [["PR IN", a], ["PR OUT", b]] as const) {
      const s = parseSense(r.sense);
      if (
        r.status !== ScsiStatus.CHECK_CONDITION || s === null ||
        formatSense(s) !== formatSense(Sense.INVALID_OPCODE) || r.data.length !== 0
      ) {
        return `control ${what}: status ${r.status}, sense ${s ? formatSense(s) : "none"}`;
      }
    }
    return null;
  } catch (e) {
    return `control client: ${(e as Error).message}`;
  } finally {
    client?.close();
  }
}

/**
 * Wait until the daemon's fd count is back to `baseline` or below (closes
 * are processed asynchronously). Returns null when it is, or a leak report.
 */
export async function settleFds(
  daemon: DaemonProcess,
  options: { baseline: number; timeoutMs?: number },
): Promise<string | null> {
  const deadline = Date.now() + (options.timeoutMs ?? 5_000);
  let n = daemon.fdCount();
  while (n > options.baseline || n < 0) {
    if (n < 0) return "daemon is gone";
    if (Date.now() > deadline) {
      return `daemon holds ${n} fds, baseline ${options.baseline}:\n  ${
        daemon.fdTargets().join("\n  ")
      }`;
    }
    await sleep(10);
    n = daemon.fdCount();
  }
  return null;
}

/**
 * Measure the fd baseline of an idle daemon: after a control round trip, the
 * count that stays the same for a while (Workers and pools start lazily).
 */
export async function measureBaseline(daemon: DaemonProcess, fds: ControlFds): Promise<number> {
  const err = controlCheck(daemon.socket, fds);
  if (err) throw new Error(`daemon fails its first control check: ${err}`);
  let last = -2;
  let stable = 0;
  for (let i = 0; i < 200 && stable < 5; i++) {
    await sleep(20);
    const n = daemon.fdCount();
    stable = n === last ? stable + 1 : 0;
    last = n;
  }
  return last;
}
