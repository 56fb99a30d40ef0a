/**
 * The pidfile: created, locked for the daemon's lifetime (a second instance
 * fails on the lock), and removed on a clean exit.
 *
 * @module
 */

import {
  closeFd,
  fstatFd,
  readFd,
  rewindFd,
  statPath,
  truncateFd,
  tryLockExclusive,
  unlinkPath,
  writeAll,
} from "../ffi/files.ts";
import { getPid } from "../ffi/process.ts";
import { StartupError } from "./startup_error.ts";
import { openOwnedFile } from "./owned_file.ts";

/** A held pidfile. */
export interface Pidfile {
  path: string;
  /** The locked fd (kept open; survives a re-exec if its CLOEXEC is cleared). */
  fd: number;
  /** Rewrite the pid (after a re-exec or a detach changed it). */
  rewrite(): void;
  /** Unlink and close. */
  remove(): void;
}

/**
 * Create and lock `path` and write our pid into it. A symlink, a hard link or
 * a file that is not our own at `path` is refused before anything is written
 * (src/owned_file.ts).
 */
export function acquirePidfile(path: string): Pidfile {
  if (!path.startsWith("/")) throw new StartupError(`pidfile path "${path}" must be absolute`);
  const fd = openOwnedFile(path, { mode: 0o644, what: "pidfile" });
  if (!tryLockExclusive(fd)) {
    const buf = new Uint8Array(32);
    const n = readFd(fd, buf) ?? 0;
    const other = new TextDecoder().decode(buf.subarray(0, n)).trim();
    closeFd(fd);
    throw new StartupError(
      `pidfile ${path} is locked by another instance${other ? ` (pid ${other})` : ""}`,
    );
  }
  return adoptPidfile(path, fd);
}

/** Wrap an already locked pidfile fd (e.g. inherited across a re-exec). */
export function adoptPidfile(path: string, fd: number): Pidfile {
  // the file we hold, from the fd: after a drop the path may not be reachable
  const held = fstatFd(fd);
  const pidfile: Pidfile = {
    path,
    fd,
    rewrite() {
      truncateFd(fd, 0);
      writeAllAt0(fd, `${getPid()}\n`);
    },
    remove() {
      let now = null;
      try {
        now = statPath(path);
      } catch { /* not reachable after a drop (EACCES): leave it */ }
      if (now && now.ino === held.ino && now.dev === held.dev) {
        try {
          unlinkPath(path);
        } catch { /* no right to remove it any more */ }
      }
      try {
        closeFd(fd);
      } catch { /* closed */ }
    },
  };
  pidfile.rewrite();
  return pidfile;
}

function writeAllAt0(fd: number, text: string): void {
  rewindFd(fd);
  writeAll(fd, new TextEncoder().encode(text));
}
