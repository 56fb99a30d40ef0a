/**
 * errno values (Linux, x86_64 and aarch64 share them) and the typed error every
 * FFI wrapper throws.
 *
 * @module
 */

/** errno numbers used by the daemon, by name. */
export const Errno = {
  EPERM: 1,
  ENOENT: 2,
  ESRCH: 3,
  EINTR: 4,
  EIO: 5,
  ENXIO: 6,
  EBADF: 9,
  EAGAIN: 11,
  ENOMEM: 12,
  EACCES: 13,
  EFAULT: 14,
  EBUSY: 16,
  EEXIST: 17,
  ENODEV: 19,
  ENOTDIR: 20,
  EISDIR: 21,
  EINVAL: 22,
  ENFILE: 23,
  EMFILE: 24,
  ENOTTY: 25,
  ENOSPC: 28,
  ESPIPE: 29,
  EROFS: 30,
  EPIPE: 32,
  EDOM: 33,
  ERANGE: 34,
  ENAMETOOLONG: 36,
  ENOSYS: 38,
  ELOOP: 40,
  EBADE: 52,
  ENODATA: 61,
  ENOLINK: 67,
  ENOTSOCK: 88,
  ENOPROTOOPT: 92,
  EOPNOTSUPP: 95,
  EADDRINUSE: 98,
  ECONNRESET: 104,
  ENOTCONN: 107,
  ETIMEDOUT: 110,
  ECONNREFUSED: 111,
  ENOMEDIUM: 123,
  EREMOTEIO: 121,
} as const;

const NAMES: Map<number, string> = new Map(
  Object.entries(Errno).map(([name, value]) => [value, name]),
);

/** The symbolic name of an errno value, e.g. `ENOENT`, or `errno 200` if unknown. */
export function errnoName(errno: number): string {
  return NAMES.get(errno) ?? `errno ${errno}`;
}

/** A failed call as a value (where failure is an outcome, not an exception): its errno. */
export interface ErrnoResult {
  kind: "errno";
  errno: number;
}

/** A failed system call: names the call, its errno and, where given, the object it acted on. */
export class SysError extends Error {
  /** The libc function that failed, e.g. `bind`. */
  readonly call: string;
  /** The errno it left. */
  readonly errno: number;
  /** Symbolic errno name, e.g. `EADDRINUSE`. */
  readonly code: string;

  constructor(call: string, errno: number, subject?: string) {
    const code = errnoName(errno);
    super(`${call}${subject === undefined ? "" : `(${subject})`} failed: ${code}`);
    this.name = "SysError";
    this.call = call;
    this.errno = errno;
    this.code = code;
  }
}
