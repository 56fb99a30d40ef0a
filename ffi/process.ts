/**
 * The process through libc: its pid, RLIMIT_NOFILE, and signal dispositions
 * and masks. Rules as in ffi/libc.ts.
 *
 * @module
 */

import { SysError } from "./errno.ts";
import { SIGACTION, SIGSET } from "./layouts.ts";
import { check, libc } from "./libc.ts";

// ---------------------------------------------------------------- process

/** getpid(2). */
export function getPid(): number {
  return libc.getpid();
}

const RLIMIT_NOFILE = 7;

/** RLIMIT_NOFILE soft and hard limits. */
export function getNofileLimit(): { soft: bigint; hard: bigint } {
  const buf = new BigUint64Array(2);
  check("getrlimit", libc.getrlimit(RLIMIT_NOFILE, buf), "RLIMIT_NOFILE");
  return { soft: buf[0], hard: buf[1] };
}

/** Set RLIMIT_NOFILE. */
export function setNofileLimit(soft: bigint, hard: bigint): void {
  const buf = new BigUint64Array([soft, hard]);
  check("setrlimit", libc.setrlimit(RLIMIT_NOFILE, buf), "RLIMIT_NOFILE");
}

const SIG_IGN = 1n;
const SIGACTION_SIZE = SIGACTION.size; // glibc struct sigaction: handler, 128-byte mask, flags, restorer

/**
 * Make sure `signo` is ignored (SIG_IGN), whatever handler the runtime put
 * there; returns true if a handler had to be replaced.
 */
export function ensureSignalIgnored(signo: number): boolean {
  const old = new Uint8Array(SIGACTION_SIZE);
  check("sigaction", libc.sigaction(signo, null, old), `query ${signo}`);
  if (new DataView(old.buffer).getBigUint64(0, true) === SIG_IGN) return false;
  const act = new Uint8Array(SIGACTION_SIZE);
  new DataView(act.buffer).setBigUint64(0, SIG_IGN, true);
  check("sigaction", libc.sigaction(signo, act, null), `ignore ${signo}`);
  return true;
}

const SIG_BLOCK = 0;
const SIGSET_SIZE = SIGSET.size; // glibc sigset_t: 1024 bits

/**
 * Block `signo` in the calling thread's signal mask (pthread_sigmask). The
 * mask is inherited by threads this thread creates and kept across execve(2)
 * and posix_spawn(3), so a process image started from here has the signal
 * blocked on every thread from its first instruction: it stays pending and no
 * handler, the runtime's included, ever runs for it.
 */
export function blockSignal(signo: number): void {
  if (!Number.isInteger(signo) || signo < 1 || signo > 64) {
    throw new RangeError(`signal number ${signo} is not 1..64`);
  }
  const set = new Uint8Array(SIGSET_SIZE);
  set[(signo - 1) >> 3] |= 1 << ((signo - 1) & 7);
  // pthread_sigmask returns the error number instead of setting errno
  const rc = libc.pthread_sigmask(SIG_BLOCK, set, null);
  if (rc !== 0) throw new SysError("pthread_sigmask", rc, `block ${signo}`);
}
