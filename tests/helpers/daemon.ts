/**
 * Test helpers for the daemon as a subprocess: start it on a temp socket and
 * wait until it accepts, count its open fds, stop it with a signal, read its
 * stderr. The daemon's stderr goes to a file (not a pipe), so a test blocked
 * in a synchronous FFI call can never deadlock on a full stderr pipe.
 *
 * @module
 */

import { closeFd } from "../../ffi/files.ts";
import { connectUnix, unixSocket } from "../../ffi/sockets.ts";
import { RawConnection } from "../../src/client.ts";
import { v8FlagsArgument } from "../../tools/runtime_flags.ts";

/** The repository root. */
export const REPO: string = new URL("../../", import.meta.url).pathname.replace(/\/$/, "");
/** The daemon's entry point. */
export const MAIN: string = `${REPO}/main.ts`;
/** The deno binary running the tests. */
export const DENO: string = Deno.execPath();

/** How the daemon is run: the permission set, so the manifest is exercised. */
export function daemonCommand(args: readonly string[]): string[] {
  return [DENO, "run", "-P=daemon", "--no-prompt", v8FlagsArgument(), MAIN, ...args];
}

/** Sleep without blocking the event loop. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Options of {@linkcode waitFor}. */
export interface WaitForOptions {
  /** Give up after this long (a deadline against hangs, not a timing assertion). */
  timeoutMs?: number;
  /** What is awaited, for the error message. */
  what: string;
  intervalMs?: number;
}

/** Poll `cond` until it returns a value other than false/undefined/null. */
export async function waitFor<T>(
  cond: () => T | false | null | undefined | Promise<T | false | null | undefined>,
  options: WaitForOptions,
): Promise<T> {
  const deadline = Date.now() + (options.timeoutMs ?? 30_000);
  for (;;) {
    const v = await cond();
    if (v !== false && v !== null && v !== undefined) return v;
    if (Date.now() > deadline) {
      throw new Error(
        `timed out after ${options.timeoutMs ?? 30_000} ms waiting for ${options.what}`,
      );
    }
    await sleep(options.intervalMs ?? 25);
  }
}

/** true if something accepts connections on the unix socket at `path`. */
export function isAccepting(path: string): boolean {
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

/** true if a path exists (without following a final symlink). */
export function exists(path: string): boolean {
  try {
    Deno.lstatSync(path);
    return true;
  } catch {
    return false;
  }
}

/** Number of open fds of a process (/proc/PID/fd). */
export function fdCount(pid: number): number {
  let n = 0;
  for (const _ of Deno.readDirSync(`/proc/${pid}/fd`)) n++;
  return n;
}

/** A temporary directory removed with its contents at dispose time. */
export class TempDir {
  readonly path: string;

  constructor(prefix = "prhelperd-test-") {
    this.path = Deno.makeTempDirSync({ prefix });
  }

  /** A path inside the directory. */
  join(name: string): string {
    return `${this.path}/${name}`;
  }

  /** Remove the directory. */
  [Symbol.dispose](): void {
    try {
      Deno.removeSync(this.path, { recursive: true });
    } catch { /* already gone */ }
  }
}

/** Options of {@linkcode Subprocess.spawn}. */
export interface SpawnOptions {
  /** File that receives stdout and stderr. */
  logFile: string;
  env?: Record<string, string>;
}

/**
 * A process whose stdout and stderr go to a file. The shell `exec`s the
 * command, so `pid` is the command's own pid.
 */
export class Subprocess {
  readonly child: Deno.ChildProcess;
  readonly logFile: string;
  readonly status: Promise<Deno.CommandStatus>;
  #exited = false;

  private constructor(child: Deno.ChildProcess, logFile: string) {
    this.child = child;
    this.logFile = logFile;
    this.status = child.status.then((s) => {
      this.#exited = true;
      return s;
    });
  }

  /** Start `argv` with stdout and stderr appended to `logFile`. */
  static spawn(argv: readonly string[], options: SpawnOptions): Subprocess {
    Deno.writeTextFileSync(options.logFile, "");
    const child = new Deno.Command("/bin/sh", {
      args: ["-c", 'exec "$@" >>"$PRH_TEST_LOG" 2>&1', "sh", ...argv],
      env: { RUST_BACKTRACE: "0", NO_COLOR: "1", ...options.env, PRH_TEST_LOG: options.logFile },
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn();
    return new Subprocess(child, options.logFile);
  }

  /** The process id. */
  get pid(): number {
    return this.child.pid;
  }

  /** The process has exited (and been reaped). */
  get exited(): boolean {
    return this.#exited;
  }

  /** Everything the process wrote so far. */
  output(): string {
    try {
      return Deno.readTextFileSync(this.logFile);
    } catch {
      return "";
    }
  }

  /** Send a signal (ignored if the process is gone). */
  signal(sig: Deno.Signal): void {
    if (this.#exited) return;
    try {
      this.child.kill(sig);
    } catch { /* already exited */ }
  }

  /** Wait for the exit; SIGKILL after `timeoutMs` (then the status says so). */
  async wait(timeoutMs = 30_000): Promise<Deno.CommandStatus> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const killer = new Promise<void>((resolve) => {
      timer = setTimeout(() => {
        this.signal("SIGKILL");
        resolve();
      }, timeoutMs);
    });
    try {
      await Promise.race([this.status, killer]);
      return await this.status;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Kill and reap if still running. */
  async [Symbol.asyncDispose](): Promise<void> {
    if (!this.#exited) {
      this.signal("SIGKILL");
    }
    await this.status;
  }
}

/** Options of {@linkcode startDaemon}. */
export interface StartDaemonOptions {
  /** Extra daemon arguments (after `-k SOCK`). */
  args?: string[];
  /** Socket path; default a fresh temp path. Pass null to give no -k. */
  socket?: string | null;
  /** Run under `systemd-socket-activate -l SOCK --fdname=prh`. */
  activation?: boolean;
  env?: Record<string, string>;
  /** Wait until the socket accepts (default true). */
  waitReady?: boolean;
}

/** A daemon under test. */
export class TestDaemon {
  readonly proc: Subprocess;
  readonly socket: string;
  readonly dir: TempDir;
  /** Started under systemd-socket-activate. */
  readonly activation: boolean;

  constructor(proc: Subprocess, socket: string, dir: TempDir, activation = false) {
    this.proc = proc;
    this.socket = socket;
    this.dir = dir;
    this.activation = activation;
  }

  /** The daemon's pid. */
  get pid(): number {
    return this.proc.pid;
  }

  /** Its stderr so far. */
  stderr(): string {
    return this.proc.output();
  }

  /** Its open fd count. */
  fdCount(): number {
    return fdCount(this.pid);
  }

  /** Send `sig` and wait for the exit. */
  async stop(sig: Deno.Signal = "SIGTERM"): Promise<Deno.CommandStatus> {
    this.proc.signal(sig);
    return await this.proc.wait();
  }

  /** Kill if running, reap, remove the temp dir. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.proc[Symbol.asyncDispose]();
    this.dir[Symbol.dispose]();
  }
}

/**
 * Start the daemon (`deno run -P=daemon --no-prompt main.ts -k SOCK ...`)
 * with its output in a temp file, and wait until its socket accepts.
 */
export async function startDaemon(options: StartDaemonOptions = {}): Promise<TestDaemon> {
  const dir = new TempDir();
  const socket = options.socket === undefined ? dir.join("prh.sock") : options.socket;
  const args = [...(options.activation || socket === null ? [] : ["-k", socket])];
  args.push(...(options.args ?? []));
  let argv = daemonCommand(args);
  if (options.activation) {
    if (socket === null) throw new Error("socket activation needs a socket path");
    argv = ["systemd-socket-activate", "-l", socket, "--fdname=prh", ...argv];
  }
  const proc = Subprocess.spawn(argv, { logFile: dir.join("daemon.log"), env: options.env });
  const daemon = new TestDaemon(proc, socket ?? "", dir, options.activation ?? false);
  if (options.waitReady ?? true) {
    try {
      await waitReady(daemon);
    } catch (e) {
      await daemon[Symbol.asyncDispose]();
      throw e;
    }
  }
  return daemon;
}

/** Wait until the daemon logs that it listens (or exits, which is an error). */
export async function waitReady(daemon: TestDaemon): Promise<void> {
  if (daemon.activation) {
    // systemd-socket-activate listens first and execs the daemon on the first connection
    await waitFor(() => daemon.proc.exited || daemon.stderr().includes("Listening on"), {
      what: "systemd-socket-activate to listen",
      timeoutMs: 30_000,
    });
    return;
  }
  await waitFor(() => {
    if (daemon.proc.exited) {
      throw new Error(`daemon exited before listening:\n${daemon.stderr()}`);
    }
    return isListeningQuiet(daemon);
  }, { what: `daemon on ${daemon.socket} to listen`, timeoutMs: 60_000 });
}

/**
 * Ready means serving: a connection gets the helper's greeting. (A connect
 * alone is not enough: the kernel queues connections on the listening socket
 * before the daemon serves, e.g. while it re-executes with fewer privileges.)
 */
function isListeningQuiet(daemon: TestDaemon): boolean {
  if (daemon.socket === "" || !exists(daemon.socket)) return false;
  let conn: RawConnection | null = null;
  try {
    conn = RawConnection.connect(daemon.socket, { timeoutMs: 200 });
    conn.receive(4);
    return true;
  } catch {
    return false;
  } finally {
    conn?.close();
  }
}

/** Run the daemon to completion (for start-up failures); output and exit code. */
export async function runDaemonToExit(
  args: readonly string[],
  options: { env?: Record<string, string>; timeoutMs?: number } = {},
): Promise<{ code: number; output: string }> {
  using dir = new TempDir();
  const proc = Subprocess.spawn(daemonCommand(args), {
    logFile: dir.join("out.log"),
    env: options.env,
  });
  const status = await proc.wait(options.timeoutMs ?? 60_000);
  return { code: status.code, output: proc.output() };
}

/**
 * Unpack the built package (dist/*.deb, from `deno task deb`) under `dir`
 * with dpkg-deb -x; the root of the unpacked tree, or null if none is built.
 */
export function unpackPackage(dir: TempDir): string | null {
  let deb: string | undefined;
  try {
    deb = [...Deno.readDirSync(`${REPO}/dist`)].map((e) => e.name).find((n) => n.endsWith(".deb"));
  } catch {
    return null;
  }
  if (deb === undefined) return null;
  const out = new Deno.Command("dpkg-deb", {
    args: ["-x", `${REPO}/dist/${deb}`, dir.join("root")],
  }).outputSync();
  return out.success ? dir.join("root") : null;
}
