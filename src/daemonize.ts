/**
 * -d/--daemon: the foreground process starts a copy of itself in a new
 * session and exits once that copy is listening (as qemu-pr-helper, whose
 * socket exists before it detaches). The copy learns its role from
 * PRHELPERD_DETACHED, the number of a pipe on which it reports "ready"; if it
 * dies first, the parent sees end-of-file and exits 1 (the copy's error
 * message went to the shared stderr).
 *
 * @module
 */

import {
  closeFd,
  fstatFd,
  isOpenFd,
  makePipe,
  O_RDWR,
  openPath,
  readFd,
  readLink,
  readSmallFile,
  setCloexec,
  writeSome,
} from "../ffi/files.ts";
import { getNofileLimit } from "../ffi/process.ts";
import { duplicateOnto, spawnDetached } from "../ffi/spawn.ts";
import { changeDirectory } from "../ffi/privileges.ts";
import { splitNul } from "./security/privileges.ts";
import { StartupError } from "./startup_error.ts";

/** The environment variable naming the readiness pipe in the detached copy. */
export const DETACH_ENV = "PRHELPERD_DETACHED";

/**
 * In the foreground process: start the detached copy and wait until it is
 * ready. Returns the exit status for the foreground process.
 */
export function detachAndWait(): number {
  const exe = readLink("/proc/self/exe");
  const cmdline = readSmallFile("/proc/self/cmdline", 1 << 20);
  const environ = readSmallFile("/proc/self/environ", 1 << 20);
  if (exe === null || cmdline === null || environ === null) {
    throw new StartupError("-d/--daemon: cannot read /proc/self (is /proc mounted?)");
  }
  const [readEnd, writeEnd] = makePipe();
  setCloexec(writeEnd, false);
  const env = splitNul(environ).filter((kv) => !kv.startsWith(`${DETACH_ENV}=`));
  env.push(`${DETACH_ENV}=${writeEnd}`);
  try {
    spawnDetached(exe, splitNul(cmdline), env);
  } finally {
    closeFd(writeEnd);
  }
  const buf = new Uint8Array(16);
  let got = "";
  for (;;) {
    const n = readFd(readEnd, buf);
    if (n === null) continue;
    if (n === 0) break;
    got += new TextDecoder().decode(buf.subarray(0, n));
  }
  closeFd(readEnd);
  return got.startsWith("ready") ? 0 : 1;
}

/** In the detached copy: the readiness pipe's fd, or null in any other process. */
export function detachedReadyFd(value: string | undefined): number | null {
  if (value === undefined || !/^\d+$/.test(value)) return null;
  const fd = Number(value);
  if (fd < 3 || !isOpenFd(fd)) return null;
  setCloexec(fd, true);
  return fd;
}

/**
 * In the detached copy, once it listens: tell the parent, move to /, and point
 * stdin, stdout and stderr at /dev/null (daemon(3) semantics).
 */
export function reportReady(fd: number): void {
  writeSome(fd, new TextEncoder().encode("ready\n"));
  closeFd(fd);
  changeDirectory("/");
  // Deno keeps private duplicates of stdout and stderr: replace every fd that
  // refers to the same file as a standard stream, or the terminal stays attached.
  const std = [0, 1, 2].map((n) => {
    try {
      const st = fstatFd(n);
      return `${st.dev}:${st.ino}`;
    } catch {
      return null;
    }
  }).filter((k) => k !== null);
  const nul = openPath("/dev/null", O_RDWR);
  const limit = Math.min(Number(getNofileLimit().soft), 4096);
  for (let n = 0; n < limit; n++) {
    if (n === nul) continue;
    if (n > 2) {
      let key: string;
      try {
        const st = fstatFd(n);
        key = `${st.dev}:${st.ino}`;
      } catch {
        continue;
      }
      if (!std.includes(key)) continue;
    }
    duplicateOnto(nul, n);
  }
  closeFd(nul);
}
