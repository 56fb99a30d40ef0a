/**
 * What libvirt (9.0, Debian 12) does before it executes its managed PR
 * helper, as a test stand-in: open the pidfile, take a classic fcntl(2) write
 * lock on its first byte (virPidFileAcquirePath -> virFileLock), write the
 * pid, clear FD_CLOEXEC on that fd, and execve(2) the helper in the same
 * process, so the helper holds the lock for as long as it lives and keeps the
 * fd open.
 *
 *   deno run -A tests/helpers/exec_locked_pidfile.ts PIDFILE PROGRAM [ARGS...]
 *
 * @module
 */

import {
  O_CREAT,
  O_RDWR,
  openPath,
  setCloexec,
  truncateFd,
  tryLockExclusive,
  writeAll,
} from "../../ffi/files.ts";
import { getPid } from "../../ffi/process.ts";
import { execve } from "../../ffi/privileges.ts";

const [pidfile, program, ...rest] = Deno.args;
if (pidfile === undefined || program === undefined) {
  console.error("usage: exec_locked_pidfile.ts PIDFILE PROGRAM [ARGS...]");
  Deno.exit(2);
}
const fd = openPath(pidfile, O_RDWR | O_CREAT, 0o644);
if (!tryLockExclusive(fd, { owner: "process", start: 0, length: 1 })) {
  console.error(`${pidfile} is locked`);
  Deno.exit(1);
}
truncateFd(fd, 0);
writeAll(fd, new TextEncoder().encode(`${getPid()}\n`));
setCloexec(fd, false);
const env = Object.entries(Deno.env.toObject()).map(([k, v]) => `${k}=${v}`);
execve(program, [program, ...rest], env);
