/**
 * A FUSE file system whose server never answers FLUSH (and, once its file is
 * open, never answers GETATTR of it): tests/fixtures/fuse_stall_server.c,
 * compiled with gcc at test time and mounted with mount(2) by the server
 * itself (root). A close(2) of its file, anywhere, blocks until the server is
 * stopped; {@linkcode FuseStall.stop} kills it (which aborts the connection
 * and wakes every blocked call), unmounts lazily and only then closes the
 * fds it opened for the test.
 *
 * @module
 */

import { closeFd, O_RDONLY, openPath } from "../../ffi/files.ts";
import { exists, REPO, Subprocess, TempDir, waitFor } from "./daemon.ts";

/** Why FUSE tests cannot run here, or null if they can. */
export function fuseUnavailable(): string | null {
  if (!exists("/dev/fuse")) return "/dev/fuse is absent (no FUSE in this kernel or container)";
  return null;
}

/** One event line of the server: `FLUSH pid=123`. */
export interface FuseEvent {
  what: "READY" | "OPEN" | "FLUSH" | "GETATTR-STALLED";
  /** The thread (tid) that made the request, as the kernel reports it. */
  pid: number;
}

/** A running stalling FUSE server and its mount. */
export class FuseStall implements AsyncDisposable {
  readonly dir: TempDir;
  readonly mount: string;
  /** The file it serves. */
  readonly file: string;
  readonly #server: Subprocess;
  readonly #opened: number[] = [];
  #stopped = false;

  private constructor(dir: TempDir, server: Subprocess) {
    this.dir = dir;
    this.mount = dir.join("mnt");
    this.file = `${this.mount}/file`;
    this.#server = server;
  }

  /** Compile the server, start it, and wait until the kernel has initialised the mount. */
  static async start(): Promise<FuseStall> {
    const dir = new TempDir("prhelperd-fuse-");
    try {
      const bin = dir.join("fuse_stall_server");
      const cc = await new Deno.Command("gcc", {
        args: ["-O1", "-Wall", "-o", bin, `${REPO}/tests/fixtures/fuse_stall_server.c`],
        stdout: "piped",
        stderr: "piped",
      }).output();
      if (!cc.success) {
        throw new Error(
          `gcc failed to build the FUSE server:\n${new TextDecoder().decode(cc.stderr)}`,
        );
      }
      Deno.mkdirSync(dir.join("mnt"));
      const server = Subprocess.spawn([bin, dir.join("mnt")], { logFile: dir.join("server.log") });
      const fuse = new FuseStall(dir, server);
      try {
        await waitFor(() => {
          if (server.exited) throw new Error(`FUSE server exited:\n${server.output()}`);
          return fuse.events().some((e) => e.what === "READY");
        }, { what: "the FUSE server to be initialised", timeoutMs: 20_000 });
      } catch (e) {
        await fuse.stop();
        throw e;
      }
      return fuse;
    } catch (e) {
      unmount(dir.join("mnt"));
      dir[Symbol.dispose]();
      throw e;
    }
  }

  /** The server's events so far. */
  events(): FuseEvent[] {
    const out: FuseEvent[] = [];
    for (const line of this.#server.output().split("\n")) {
      const m = line.match(/^(READY|OPEN|FLUSH|GETATTR-STALLED) pid=(\d+)$/);
      if (m) out.push({ what: m[1] as FuseEvent["what"], pid: Number(m[2]) });
    }
    return out;
  }

  /** Everything the server printed. */
  output(): string {
    return this.#server.output();
  }

  /**
   * Open the served file. By default the fd is closed by {@linkcode stop},
   * after the server is gone (closing it before would block this thread);
   * with `give: true` the caller owns it (and must not close it while the
   * server runs).
   */
  open(options: { give?: boolean } = {}): number {
    const fd = openPath(this.file, O_RDONLY);
    if (!options.give) this.#opened.push(fd);
    return fd;
  }

  /** Kill the server (every blocked call returns), unmount, close our fds. Idempotent. */
  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#server.signal("SIGKILL");
    await this.#server.wait();
    unmount(this.mount);
    for (const fd of this.#opened.splice(0)) {
      try {
        closeFd(fd);
      } catch { /* the aborted connection may report an error: the fd is closed anyway */ }
    }
  }

  /** {@linkcode stop}, then remove the directory. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
    this.dir[Symbol.dispose]();
  }
}

function unmount(path: string): void {
  new Deno.Command("umount", { args: ["-l", path], stdout: "null", stderr: "null" }).outputSync();
}
