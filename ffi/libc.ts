/**
 * libc through `Deno.dlopen`: the one symbols table of the C library, errno
 * and the memory helpers the other modules of ffi/ build on. The typed
 * wrappers live beside it by subject: ffi/sockets.ts (sockets, msghdr),
 * ffi/files.ts (fds, files, stat), ffi/poll.ts, ffi/process.ts (pid, rlimit,
 * signals), ffi/dirent.ts, ffi/selinuxfs.ts, ffi/sgio.ts, ffi/pr_ioctl.ts,
 * ffi/privileges.ts and ffi/spawn.ts.
 *
 * Rules of this module (and of everything under ffi/):
 * - Only absolute library paths are opened, so the daemon runs under a
 *   permission set that scopes `--allow-ffi` to exact files.
 * - No `Deno.UnsafePointer*` is used: those need unscoped ffi. Native addresses
 *   are `bigint`s obtained with `memcpy(buf, buf, 0)` and memory is read with
 *   `memcpy(dst, addr, n)`. No address or struct layout leaves ffi/.
 * - A wrapper either returns a typed value or throws {@linkcode SysError} naming
 *   the call and errno. "Would block" is a value (`null`), not an error.
 * - errno is read right after each synchronous call from this thread's
 *   `__errno_location()`. Nonblocking (thread-pool) calls are used only where
 *   errno is not needed (`poll`).
 *
 * @module
 */

import { Errno, SysError } from "./errno.ts";

/** Absolute path of the C library this process loads. */
export const LIBC_PATH: string = Deno.build.arch === "aarch64"
  ? "/usr/lib/aarch64-linux-gnu/libc.so.6"
  : "/usr/lib/x86_64-linux-gnu/libc.so.6";

const symbols = {
  // int socket(int domain, int type, int protocol)
  socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
  // int socketpair(int domain, int type, int protocol, int sv[2])
  socketpair: { parameters: ["i32", "i32", "i32", "buffer"], result: "i32" },
  // int bind(int fd, const struct sockaddr *addr, socklen_t len)
  bind: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  // int connect(int fd, const struct sockaddr *addr, socklen_t len)
  connect: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  // int listen(int fd, int backlog)
  listen: { parameters: ["i32", "i32"], result: "i32" },
  // int accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags)
  accept4: { parameters: ["i32", "buffer", "buffer", "i32"], result: "i32" },
  // ssize_t recvmsg(int fd, struct msghdr *msg, int flags)
  recvmsg: { parameters: ["i32", "buffer", "i32"], result: "isize" },
  // ssize_t sendmsg(int fd, const struct msghdr *msg, int flags)
  sendmsg: { parameters: ["i32", "buffer", "i32"], result: "isize" },
  // ssize_t sendto(int fd, const void *buf, size_t len, int flags, const struct sockaddr *to, socklen_t tolen)
  sendto: { parameters: ["i32", "buffer", "usize", "i32", "buffer", "u32"], result: "isize" },
  // int shutdown(int fd, int how)
  shutdown: { parameters: ["i32", "i32"], result: "i32" },
  // int getsockopt(int fd, int level, int name, void *val, socklen_t *len)
  getsockopt: { parameters: ["i32", "i32", "i32", "buffer", "buffer"], result: "i32" },
  // int getsockname(int fd, struct sockaddr *addr, socklen_t *len)
  getsockname: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  // int close(int fd)
  close: { parameters: ["i32"], result: "i32" },
  // int fcntl(int fd, int cmd, ... /* int arg */)
  fcntl: { parameters: ["i32", "i32", "i64"], result: "i32" },
  // int fcntl(int fd, int cmd, ... /* struct flock *lock */): the record-lock commands
  fcntl_lock: { name: "fcntl", parameters: ["i32", "i32", "buffer"], result: "i32" },
  // int fstat(int fd, struct stat *st)
  fstat: { parameters: ["i32", "buffer"], result: "i32" },
  // int stat(const char *path, struct stat *st)
  stat: { parameters: ["buffer", "buffer"], result: "i32" },
  // int statx(int dirfd, const char *path, int flags, unsigned int mask, struct statx *buf)
  statx: { parameters: ["i32", "buffer", "i32", "u32", "buffer"], result: "i32" },
  // int ioctl(int fd, unsigned long req, void *arg)
  ioctl: { parameters: ["i32", "u64", "buffer"], result: "i32" },
  // int poll(struct pollfd *fds, nfds_t n, int timeout)
  poll: { parameters: ["buffer", "u64", "i32"], result: "i32" },
  // the same poll(2), run on Deno's blocking thread pool (errno is not read)
  poll_async: {
    name: "poll",
    parameters: ["buffer", "u64", "i32"],
    result: "i32",
    nonblocking: true,
  },
  // int open(const char *path, int flags, ... /* mode_t mode */)
  open: { parameters: ["buffer", "i32", "u32"], result: "i32" },
  // ssize_t read(int fd, void *buf, size_t n)
  read: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  // ssize_t write(int fd, const void *buf, size_t n)
  write: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  // ssize_t readlink(const char *path, char *buf, size_t n)
  readlink: { parameters: ["buffer", "buffer", "usize"], result: "isize" },
  // ssize_t getdents64(int fd, void *dirp, size_t count)
  getdents64: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  // int statfs(const char *path, struct statfs *buf)
  statfs: { parameters: ["buffer", "buffer"], result: "i32" },
  // int unlink(const char *path)
  unlink: { parameters: ["buffer"], result: "i32" },
  // off_t lseek(int fd, off_t offset, int whence)
  lseek: { parameters: ["i32", "i64", "i32"], result: "i64" },
  // int ftruncate(int fd, off_t len)
  ftruncate: { parameters: ["i32", "i64"], result: "i32" },
  // int pipe2(int fds[2], int flags)
  pipe2: { parameters: ["buffer", "i32"], result: "i32" },
  // pid_t getpid(void)
  getpid: { parameters: [], result: "i32" },
  // int getrlimit(int resource, struct rlimit *rl)
  getrlimit: { parameters: ["i32", "buffer"], result: "i32" },
  // int setrlimit(int resource, const struct rlimit *rl)
  setrlimit: { parameters: ["i32", "buffer"], result: "i32" },
  // int sigaction(int sig, const struct sigaction *act, struct sigaction *old)
  sigaction: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  // int pthread_sigmask(int how, const sigset_t *set, sigset_t *old)
  pthread_sigmask: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  // int *__errno_location(void), as an address
  __errno_location: { parameters: [], result: "usize" },
  // void *memcpy(void *dst, const void *src, size_t n): address of a JS buffer (n = 0)
  memcpy_addr: { name: "memcpy", parameters: ["buffer", "buffer", "usize"], result: "usize" },
  // void *memcpy(void *dst, const void *src, size_t n): native memory into a JS buffer
  memcpy_peek: { name: "memcpy", parameters: ["buffer", "usize", "usize"], result: "usize" },
  // size_t strlen(const char *s), on a native address
  strlen: { parameters: ["usize"], result: "usize" },
  // ---- privileges (wrappers in ffi/privileges.ts)
  // int prctl(int option, unsigned long arg2, unsigned long arg3, unsigned long arg4, unsigned long arg5)
  prctl: { parameters: ["i32", "u64", "u64", "u64", "u64"], result: "i32" },
  // int capget(cap_user_header_t hdr, cap_user_data_t data)
  capget: { parameters: ["buffer", "buffer"], result: "i32" },
  // int capset(cap_user_header_t hdr, const cap_user_data_t data)
  capset: { parameters: ["buffer", "buffer"], result: "i32" },
  // int setresuid(uid_t ruid, uid_t euid, uid_t suid)
  setresuid: { parameters: ["u32", "u32", "u32"], result: "i32" },
  // int setresgid(gid_t rgid, gid_t egid, gid_t sgid)
  setresgid: { parameters: ["u32", "u32", "u32"], result: "i32" },
  // int getresuid(uid_t *ruid, uid_t *euid, uid_t *suid)
  getresuid: { parameters: ["buffer", "buffer", "buffer"], result: "i32" },
  // int getresgid(gid_t *rgid, gid_t *egid, gid_t *sgid)
  getresgid: { parameters: ["buffer", "buffer", "buffer"], result: "i32" },
  // int setgroups(size_t size, const gid_t *list)
  setgroups: { parameters: ["usize", "buffer"], result: "i32" },
  // int getgroups(int size, gid_t list[])
  getgroups: { parameters: ["i32", "buffer"], result: "i32" },
  // int getpwnam_r(const char *name, struct passwd *pwd, char *buf, size_t len, struct passwd **result)
  getpwnam_r: { parameters: ["buffer", "buffer", "buffer", "usize", "buffer"], result: "i32" },
  // int getpwuid_r(uid_t uid, struct passwd *pwd, char *buf, size_t len, struct passwd **result)
  getpwuid_r: { parameters: ["u32", "buffer", "buffer", "usize", "buffer"], result: "i32" },
  // int getgrnam_r(const char *name, struct group *grp, char *buf, size_t len, struct group **result)
  getgrnam_r: { parameters: ["buffer", "buffer", "buffer", "usize", "buffer"], result: "i32" },
  // int dup2(int oldfd, int newfd)
  dup2: { parameters: ["i32", "i32"], result: "i32" },
  // int posix_spawn(pid_t *pid, const char *path, const posix_spawn_file_actions_t *fa,
  //                 const posix_spawnattr_t *attr, char *const argv[], char *const envp[])
  posix_spawn: {
    parameters: ["buffer", "buffer", "buffer", "buffer", "buffer", "buffer"],
    result: "i32",
  },
  // int posix_spawnattr_init(posix_spawnattr_t *attr)
  posix_spawnattr_init: { parameters: ["buffer"], result: "i32" },
  // int posix_spawnattr_setflags(posix_spawnattr_t *attr, short flags)
  posix_spawnattr_setflags: { parameters: ["buffer", "i16"], result: "i32" },
  // int posix_spawnattr_destroy(posix_spawnattr_t *attr)
  posix_spawnattr_destroy: { parameters: ["buffer"], result: "i32" },
  // int chdir(const char *path)
  chdir: { parameters: ["buffer"], result: "i32" },
  // int execve(const char *path, char *const argv[], char *const envp[])
  execve: { parameters: ["buffer", "buffer", "buffer"], result: "i32" },
} as const satisfies Deno.ForeignLibraryInterface;

const lib = Deno.dlopen(LIBC_PATH, symbols);

/** The raw libc symbols; for the other modules of ffi/ only. */
export const libc: Deno.DynamicLibrary<typeof symbols>["symbols"] = lib.symbols;

const errnoBuf = new Int32Array(1);
let errnoAddr = 0n;

/** errno of the last synchronous call on this thread. */
export function lastErrno(): number {
  if (errnoAddr === 0n) errnoAddr = BigInt(libc.__errno_location());
  libc.memcpy_peek(errnoBuf, errnoAddr, 4n);
  return errnoBuf[0];
}

/** The native address of a JS buffer's first byte (valid while the buffer is referenced). */
export function addressOf(buf: ArrayBufferView | ArrayBuffer): bigint {
  const b = buf as Uint8Array<ArrayBuffer>;
  return BigInt(libc.memcpy_addr(b, b, 0n));
}

/** Copy `len` bytes of native memory at `addr` into a new JS buffer. */
export function peek(addr: bigint, len: number): Uint8Array {
  const out = new Uint8Array(len);
  if (len > 0) libc.memcpy_peek(out, addr, BigInt(len));
  return out;
}

/** Read a NUL-terminated string at a native address (UTF-8). */
export function cStringAt(addr: bigint): string {
  const len = Number(libc.strlen(addr));
  return new TextDecoder().decode(peek(addr, len));
}

/**
 * A NULL-terminated `char *[]` (argv, envp) for a call. The strings are pushed
 * onto `keep`, which the caller must hold until the call returns.
 */
export function cStringTable(items: readonly string[], keep: Uint8Array[]): Uint8Array {
  const table = new BigUint64Array(items.length + 1);
  items.forEach((s, i) => {
    const c = cString(s);
    keep.push(c);
    table[i] = addressOf(c);
  });
  return new Uint8Array(table.buffer);
}

/** A NUL-terminated copy of a string, for `const char *` parameters. */
export function cString(s: string): Uint8Array {
  const bytes = new TextEncoder().encode(s);
  const out = new Uint8Array(bytes.length + 1);
  out.set(bytes);
  return out;
}

/**
 * The result of a call that returns -1 and sets errno on failure, as a number;
 * a negative result throws {@linkcode SysError} naming `call`, errno and `subject`.
 * For the other modules of ffi/ only.
 */
export function check(call: string, rc: number | bigint, subject?: string): number {
  const n = Number(rc);
  if (n < 0) throw new SysError(call, lastErrno(), subject);
  return n;
}

const NOT_FOUND: readonly number[] = [Errno.ENOENT, Errno.ENOTDIR];
const NOT_READY: readonly number[] = [Errno.EAGAIN, Errno.EINTR];

function checkUnless(
  call: string,
  rc: number | bigint,
  options: { subject?: string; quiet: readonly number[] },
): number | null {
  const n = Number(rc);
  if (n >= 0) return n;
  const e = lastErrno();
  if (options.quiet.includes(e)) return null;
  throw new SysError(call, e, options.subject);
}

/**
 * {@linkcode check} for a call on a path that may not exist: null when errno
 * says so (ENOENT, ENOTDIR). For the other modules of ffi/ only.
 */
export function checkFound(call: string, rc: number | bigint, path: string): number | null {
  return checkUnless(call, rc, { subject: path, quiet: NOT_FOUND });
}

/**
 * {@linkcode check} for a call on a non-blocking fd: null when it would block
 * or was interrupted (EAGAIN, EINTR). For the other modules of ffi/ only.
 */
export function checkReady(call: string, rc: number | bigint, subject?: string): number | null {
  return checkUnless(call, rc, { subject, quiet: NOT_READY });
}
