/**
 * Starting a detached copy of this process (for -d/--daemon) with
 * posix_spawn(3): Deno cannot fork, and a Deno.Command would need the run
 * permission. The child gets a new session (POSIX_SPAWN_SETSID) and inherits
 * the fds that are not close-on-exec.
 *
 * @module
 */

import { SysError } from "./errno.ts";
import { SPAWNATTR_ROOM } from "./layouts.ts";
import { cString, cStringTable, lastErrno, libc } from "./libc.ts";

const POSIX_SPAWN_SETSID = 0x80;
const SPAWNATTR_SIZE = SPAWNATTR_ROOM; // glibc's posix_spawnattr_t is 336 bytes on 64-bit

/** Spawn `path` with `argv` and `envp` in a new session; returns the child's pid. */
export function spawnDetached(
  path: string,
  argv: readonly string[],
  envp: readonly string[],
): number {
  const keep: Uint8Array[] = [];
  const attr = new Uint8Array(SPAWNATTR_SIZE);
  let rc = libc.posix_spawnattr_init(attr);
  if (rc !== 0) throw new SysError("posix_spawnattr_init", rc);
  try {
    rc = libc.posix_spawnattr_setflags(attr, POSIX_SPAWN_SETSID);
    if (rc !== 0) throw new SysError("posix_spawnattr_setflags", rc);
    const pid = new Int32Array(1);
    // posix_spawn returns the error number instead of setting errno
    rc = libc.posix_spawn(
      pid,
      cString(path),
      null,
      attr,
      cStringTable(argv, keep),
      cStringTable(envp, keep),
    );
    keep.length = 0;
    if (rc !== 0) throw new SysError("posix_spawn", rc, path);
    return pid[0];
  } finally {
    libc.posix_spawnattr_destroy(attr);
  }
}

/** dup2(2): make `newFd` a copy of `oldFd`. */
export function duplicateOnto(oldFd: number, newFd: number): void {
  if (libc.dup2(oldFd, newFd) < 0) throw new SysError("dup2", lastErrno(), `${oldFd} -> ${newFd}`);
}
