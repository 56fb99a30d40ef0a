/**
 * What the kernel says about AppArmor, read through libc without libapparmor:
 * whether the module is enabled, the active LSM list, a process's label
 * (`/proc/PID/attr/apparmor/current`), and permission queries through
 * `/sys/kernel/security/apparmor/.access` (one open, write, read, close per
 * query: the transaction libapparmor's `aa_query_label` makes).
 *
 * Same rules as ffi/libc.ts (absolute library path, no `Deno.UnsafePointer*`,
 * errno read right after the call, {@linkcode SysError} on failure). No
 * symbols of its own: it uses ffi/libc.ts's open/read/write/close wrappers.
 *
 * @module
 */

import { Errno, SysError } from "./errno.ts";
import { closeFd, O_RDWR, openPath, readFd, readSmallFile, writeAll } from "./files.ts";

/** The query interface (securityfs). */
export const APPARMOR_ACCESS_PATH = "/sys/kernel/security/apparmor/.access";
/** "Y" when the AppArmor module is enabled. */
export const APPARMOR_ENABLED_PATH = "/sys/module/apparmor/parameters/enabled";
/** The active LSMs, comma-separated. */
export const LSM_LIST_PATH = "/sys/kernel/security/lsm";

/** The largest answer the kernel writes (one page). */
const ANSWER_MAX = 4096;

/**
 * One query: write `query` to the `.access` file and read the answer text.
 * Throws {@linkcode SysError} (ENOENT: securityfs or AppArmor absent;
 * EACCES/EROFS: the daemon's confinement or a read-only mount forbids the
 * write; EINVAL/ENOENT from the write: the kernel refused the query, e.g. an
 * unknown label).
 */
export function queryApparmor(query: Uint8Array, path: string = APPARMOR_ACCESS_PATH): string {
  const fd = openPath(path, O_RDWR);
  try {
    writeAll(fd, query);
    const buf = new Uint8Array(ANSWER_MAX);
    let n = 0;
    while (n < buf.length) {
      const got = readFd(fd, buf.subarray(n));
      if (got === null) continue;
      if (got === 0) break;
      n += got;
    }
    return new TextDecoder().decode(buf.subarray(0, n));
  } finally {
    closeFd(fd);
  }
}

/**
 * A process's AppArmor label text (`/proc/PID/attr/apparmor/current`, or
 * `/proc/PID/attr/current` on kernels before 5.8). Throws
 * {@linkcode SysError}: ENOENT when the process is gone or hidden from this
 * /proc (hidepid, systemd's ProtectProc=), EINVAL when AppArmor is not
 * running.
 */
export function readProcessLabel(pid: number, procRoot = "/proc"): string {
  if (!Number.isSafeInteger(pid) || pid <= 0) {
    throw new RangeError(`pid ${pid} is not a process id`);
  }
  const specific = `${procRoot}/${pid}/attr/apparmor/current`;
  let text = readSmallFile(specific, 4096);
  if (text === null) {
    const generic = `${procRoot}/${pid}/attr/current`;
    // the process directory itself gone: ENOENT for the process
    text = readSmallFile(generic, 4096);
    if (text === null) throw new SysError("open", Errno.ENOENT, generic);
  }
  return text;
}

/** A small sysfs/securityfs file's text, or null when absent or unreadable. */
export function readOptional(path: string): string | null {
  try {
    return readSmallFile(path, 4096);
  } catch {
    return null;
  }
}
