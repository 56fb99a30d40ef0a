/**
 * libc through `Deno.dlopen`: one symbols table, thin typed wrappers.
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
import {
  CMSGHDR,
  FLOCK,
  IOVEC,
  MSGHDR,
  SIGACTION,
  SIGSET,
  SOCKADDR_UN,
  STAT,
  STATX,
  UCRED,
} from "./layouts.ts";

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
  // int setsockopt(int fd, int level, int name, const void *val, socklen_t len)
  setsockopt: { parameters: ["i32", "i32", "i32", "buffer", "u32"], result: "i32" },
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
  // int unlink(const char *path)
  unlink: { parameters: ["buffer"], result: "i32" },
  // off_t lseek(int fd, off_t offset, int whence)
  lseek: { parameters: ["i32", "i64", "i32"], result: "i64" },
  // int ftruncate(int fd, off_t len)
  ftruncate: { parameters: ["i32", "i64"], result: "i32" },
  // int pipe2(int fds[2], int flags)
  pipe2: { parameters: ["buffer", "i32"], result: "i32" },
  // int eventfd(unsigned int initval, int flags)
  eventfd: { parameters: ["u32", "i32"], result: "i32" },
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
  // void free(void *p), on a native address
  free: { parameters: ["usize"], result: "void" },
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

/** Release memory that a C library allocated with malloc. */
export function freeNative(addr: bigint): void {
  libc.free(addr);
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

function check(call: string, rc: number | bigint, subject?: string): number {
  const n = Number(rc);
  if (n < 0) throw new SysError(call, lastErrno(), subject);
  return n;
}

// ---------------------------------------------------------------- constants

/** Address and socket constants (Linux). */
export const AF_UNIX = 1;
const SOCK_STREAM = 1;
const SOCK_DGRAM = 2;
const SOCK_NONBLOCK = 0o4000;
const SOCK_CLOEXEC = 0o2000000;
const SOL_SOCKET = 1;
const SO_TYPE = 3;
const SO_ACCEPTCONN = 30;
const SO_PEERCRED = 17;
const SO_PEERSEC = 31;
const SCM_RIGHTS = 1;
const MSG_DONTWAIT = 0x40;
const MSG_NOSIGNAL = 0x4000;
const MSG_CTRUNC = 0x8;
const MSG_CMSG_CLOEXEC = 0x40000000;

const F_GETFD = 1;
const F_SETFD = 2;
const F_GETFL = 3;
const F_SETFL = 4;
const FD_CLOEXEC = 1;
/** `open(2)` and `fcntl(2)` flags. */
export const O_RDONLY = 0;
export const O_WRONLY = 1;
export const O_RDWR = 2;
export const O_ACCMODE = 3;
export const O_CREAT = 0o100;
export const O_NONBLOCK = 0o4000;
export const O_CLOEXEC = 0o2000000;
export const O_NOFOLLOW = 0o400000;
export const O_DIRECTORY = 0o200000;
/** An fd that only names a file (no I/O, no ioctl): `open(2)` O_PATH, also reported by F_GETFL. */
export const O_PATH = 0o10000000;
const F_GETLK = 5;
const F_SETLK = 6;
const F_OFD_GETLK = 36;
const F_OFD_SETLK = 37;
const F_WRLCK = 1;
const F_UNLCK = 2;

/** `poll(2)` event bits. */
export const POLLIN = 0x1;
export const POLLOUT = 0x4;
export const POLLERR = 0x8;
export const POLLHUP = 0x10;
export const POLLNVAL = 0x20;

// ---------------------------------------------------------------- sockets

function sockaddrUn(path: string): Uint8Array {
  const bytes = new TextEncoder().encode(path);
  if (bytes.length === 0 || bytes.length > 107) {
    throw new RangeError(`unix socket path "${path}" must be 1 to 107 bytes long`);
  }
  const sa = new Uint8Array(SOCKADDR_UN.size);
  new DataView(sa.buffer).setUint16(SOCKADDR_UN.sun_family, AF_UNIX, true);
  sa.set(bytes, SOCKADDR_UN.sun_path);
  return sa;
}

/** Options for {@linkcode unixSocket}. */
export interface UnixSocketOptions {
  /** Datagram instead of stream. */
  datagram?: boolean;
  /** Open in non-blocking mode. */
  nonblocking?: boolean;
}

/** A new AF_UNIX socket (close-on-exec). */
export function unixSocket(options: UnixSocketOptions = {}): number {
  const type = (options.datagram ? SOCK_DGRAM : SOCK_STREAM) | SOCK_CLOEXEC |
    (options.nonblocking ? SOCK_NONBLOCK : 0);
  return check("socket", libc.socket(AF_UNIX, type, 0));
}

/** A connected pair of AF_UNIX stream sockets (close-on-exec). */
export function unixSocketPair(): [number, number] {
  const sv = new Int32Array(2);
  check("socketpair", libc.socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv));
  return [sv[0], sv[1]];
}

/** bind(2) a unix socket to a filesystem path. */
export function bindUnix(fd: number, path: string): void {
  const sa = sockaddrUn(path);
  check("bind", libc.bind(fd, sa, sa.length), path);
}

/** connect(2) a unix socket to a filesystem path. */
export function connectUnix(fd: number, path: string): void {
  const sa = sockaddrUn(path);
  check("connect", libc.connect(fd, sa, sa.length), path);
}

/** listen(2). */
export function listenSocket(fd: number, backlog: number): void {
  check("listen", libc.listen(fd, backlog));
}

/** accept4(2), close-on-exec and non-blocking; `null` when no connection is waiting. */
export function acceptConnection(fd: number): number | null {
  const rc = libc.accept4(fd, null, null, SOCK_CLOEXEC | SOCK_NONBLOCK);
  if (rc >= 0) return rc;
  const e = lastErrno();
  if (e === Errno.EAGAIN || e === Errno.EINTR) return null;
  throw new SysError("accept4", e);
}

/** shutdown(2), both directions unless `how` says; errors (e.g. ENOTCONN) are ignored. */
export function shutdownSocket(
  fd: number,
  options: { how?: "read" | "write" | "both" } = {},
): void {
  libc.shutdown(fd, options.how === "read" ? 0 : options.how === "write" ? 1 : 2);
}

/** Peer credentials of a unix socket (SO_PEERCRED). */
export interface PeerCred {
  pid: number;
  uid: number;
  gid: number;
}

/** SO_PEERCRED of a connected unix socket. */
export function peerCred(fd: number): PeerCred {
  const buf = new Uint8Array(UCRED.size);
  const len = new Uint32Array([buf.length]);
  check("getsockopt", libc.getsockopt(fd, SOL_SOCKET, SO_PEERCRED, buf, len), "SO_PEERCRED");
  const v = new DataView(buf.buffer);
  return {
    pid: v.getInt32(UCRED.pid, true),
    uid: v.getUint32(UCRED.uid, true),
    gid: v.getUint32(UCRED.gid, true),
  };
}

/** SO_PEERSEC of a connected unix socket: the peer's security context, or null if none. */
export function peerSecurityContext(fd: number): string | null {
  let size = 256;
  for (let attempt = 0; attempt < 3; attempt++) {
    const buf = new Uint8Array(size);
    const len = new Uint32Array([size]);
    const rc = libc.getsockopt(fd, SOL_SOCKET, SO_PEERSEC, buf, len);
    if (rc === 0) {
      let n = len[0];
      while (n > 0 && buf[n - 1] === 0) n--;
      return new TextDecoder().decode(buf.subarray(0, n));
    }
    const e = lastErrno();
    if (e === Errno.ERANGE) {
      size = Math.max(len[0], size * 4);
      continue;
    }
    if (e === Errno.ENOPROTOOPT) return null;
    throw new SysError("getsockopt", e, "SO_PEERSEC");
  }
  throw new SysError("getsockopt", Errno.ERANGE, "SO_PEERSEC");
}

function sockoptInt(fd: number, name: number, label: string): number {
  const buf = new Int32Array(1);
  const len = new Uint32Array([4]);
  check("getsockopt", libc.getsockopt(fd, SOL_SOCKET, name, buf, len), label);
  return buf[0];
}

/** Facts about an inherited socket, for socket activation checks. */
export interface SocketInfo {
  /** AF_* family of the bound address. */
  family: number;
  /** true for SOCK_STREAM. */
  stream: boolean;
  /** true if listen(2) was called on it. */
  listening: boolean;
}

/** Describe an fd that should be a socket; throws SysError(ENOTSOCK) if it is not one. */
export function socketInfo(fd: number): SocketInfo {
  const type = sockoptInt(fd, SO_TYPE, "SO_TYPE");
  const listening = sockoptInt(fd, SO_ACCEPTCONN, "SO_ACCEPTCONN") !== 0;
  const sa = new Uint8Array(128);
  const len = new Uint32Array([128]);
  check("getsockname", libc.getsockname(fd, sa, len));
  const family = new DataView(sa.buffer).getUint16(0, true);
  return { family, stream: type === SOCK_STREAM, listening };
}

/** Send a datagram to a unix socket path; a leading `@` names an abstract socket. */
export function sendDatagram(fd: number, path: string, data: Uint8Array): void {
  const abstract = path.startsWith("@");
  const bytes = new TextEncoder().encode(abstract ? path.slice(1) : path);
  if (bytes.length === 0 || bytes.length > 107) {
    throw new RangeError(`datagram socket path "${path}" must be 1 to 107 bytes long`);
  }
  const sa = new Uint8Array(SOCKADDR_UN.size);
  new DataView(sa.buffer).setUint16(SOCKADDR_UN.sun_family, AF_UNIX, true);
  sa.set(bytes, SOCKADDR_UN.sun_path + (abstract ? 1 : 0));
  const salen = SOCKADDR_UN.sun_path + (abstract ? 1 : 0) + bytes.length + (abstract ? 0 : 1);
  check("sendto", libc.sendto(fd, data, BigInt(data.length), MSG_NOSIGNAL, sa, salen), path);
}

// ---------------------------------------------------------------- recvmsg / sendmsg

/** Largest number of fds one recvmsg can deliver to us; more sets `truncated`. */
export const MAX_FDS_PER_MESSAGE = 16;
const CMSG_HDR = CMSGHDR.data;
const CONTROL_LEN = CMSG_HDR + 4 * MAX_FDS_PER_MESSAGE;
/** Where the iovec and the control area sit in {@linkcode MsgBuffers}' one buffer. */
const IOV_AT = MSGHDR.size;
const CONTROL_AT = IOV_AT + IOVEC.size;

/** Result of {@linkcode recvWithFds}. */
export interface Received {
  /** Bytes read; 0 means end of stream. */
  bytes: number;
  /** File descriptors that arrived with these bytes (the caller owns them). */
  fds: number[];
  /** The control data was cut (more fds were sent than fit; the kernel closed the rest). */
  truncated: boolean;
}

/**
 * A reusable msghdr + iovec + control buffer, so a receive or send makes no garbage.
 * One instance per thread; not reentrant. The msghdr points into the same
 * buffer; its address is taken anew for each call (`prepare`), and the
 * control length can never exceed the control area (`controlLen` is checked).
 */
class MsgBuffers {
  readonly mem = new ArrayBuffer(CONTROL_AT + CONTROL_LEN);
  readonly view = new DataView(this.mem);
  readonly control = new Uint8Array(this.mem, CONTROL_AT, CONTROL_LEN);
  readonly header = new Uint8Array(this.mem, 0, MSGHDR.size);

  prepare(iovAddr: bigint, iovLen: number, controlLen: number): void {
    if (controlLen < 0 || controlLen > this.control.length) {
      throw new RangeError(`control length ${controlLen} outside 0..${this.control.length}`);
    }
    const base = addressOf(this.header);
    const v = this.view;
    v.setBigUint64(MSGHDR.msg_name, 0n, true);
    v.setUint32(MSGHDR.msg_namelen, 0, true);
    v.setBigUint64(MSGHDR.msg_iov, base + BigInt(IOV_AT), true);
    v.setBigUint64(MSGHDR.msg_iovlen, 1n, true);
    v.setBigUint64(MSGHDR.msg_control, controlLen > 0 ? base + BigInt(CONTROL_AT) : 0n, true);
    v.setBigUint64(MSGHDR.msg_controllen, BigInt(controlLen), true);
    v.setInt32(MSGHDR.msg_flags, 0, true);
    v.setBigUint64(IOV_AT + IOVEC.iov_base, iovAddr, true);
    v.setBigUint64(IOV_AT + IOVEC.iov_len, BigInt(iovLen), true);
  }
}

const msg = new MsgBuffers();

/**
 * recvmsg(2) into `buf[offset, offset+length)` collecting SCM_RIGHTS fds
 * (close-on-exec). Returns null when the socket would block.
 */
export function recvWithFds(
  fd: number,
  buf: Uint8Array,
  options: { offset?: number; length?: number; dontWait?: boolean } = {},
): Received | null {
  const offset = options.offset ?? 0;
  const length = options.length ?? buf.length - offset;
  if (offset < 0 || length < 0 || offset + length > buf.length) {
    throw new RangeError(`recv range ${offset}+${length} outside a ${buf.length}-byte buffer`);
  }
  msg.control.fill(0);
  msg.prepare(addressOf(buf) + BigInt(offset), length, CONTROL_LEN);
  const flags = MSG_CMSG_CLOEXEC | (options.dontWait ? MSG_DONTWAIT : 0);
  // keep `buf` alive across the call: it is referenced by address only
  const rc = Number(libc.recvmsg(fd, msg.header, flags));
  if (rc < 0) {
    const e = lastErrno();
    if (e === Errno.EAGAIN || e === Errno.EINTR) return null;
    throw new SysError("recvmsg", e);
  }
  void buf.length;
  const v = msg.view;
  const controlLen = Number(v.getBigUint64(MSGHDR.msg_controllen, true));
  const truncated = (v.getInt32(MSGHDR.msg_flags, true) & MSG_CTRUNC) !== 0;
  const fds: number[] = [];
  let off = 0;
  while (off + CMSG_HDR <= controlLen) {
    const cmsgLen = Number(v.getBigUint64(CONTROL_AT + off + CMSGHDR.cmsg_len, true));
    if (cmsgLen < CMSG_HDR) break;
    const level = v.getInt32(CONTROL_AT + off + CMSGHDR.cmsg_level, true);
    const type = v.getInt32(CONTROL_AT + off + CMSGHDR.cmsg_type, true);
    if (level === SOL_SOCKET && type === SCM_RIGHTS) {
      const n = Math.floor((cmsgLen - CMSG_HDR) / 4);
      for (let i = 0; i < n; i++) fds.push(v.getInt32(CONTROL_AT + off + CMSG_HDR + 4 * i, true));
    }
    off += (cmsgLen + 7) & ~7;
  }
  return { bytes: rc, fds, truncated };
}

/**
 * sendmsg(2) of `data` with optional SCM_RIGHTS fds; MSG_NOSIGNAL, so a gone
 * peer is an EPIPE error, never a signal. Returns bytes sent, or null if it would block.
 */
export function sendWithFds(
  fd: number,
  data: Uint8Array,
  options: { fds?: readonly number[]; dontWait?: boolean } = {},
): number | null {
  const fds = options.fds ?? [];
  if (fds.length > MAX_FDS_PER_MESSAGE) {
    throw new RangeError(`${fds.length} fds exceed the ${MAX_FDS_PER_MESSAGE} one message carries`);
  }
  let controlLen = 0;
  if (fds.length > 0) {
    controlLen = (CMSG_HDR + 4 * fds.length + 7) & ~7;
    const v = msg.view;
    msg.control.fill(0);
    v.setBigUint64(CONTROL_AT + CMSGHDR.cmsg_len, BigInt(CMSG_HDR + 4 * fds.length), true);
    v.setInt32(CONTROL_AT + CMSGHDR.cmsg_level, SOL_SOCKET, true);
    v.setInt32(CONTROL_AT + CMSGHDR.cmsg_type, SCM_RIGHTS, true);
    fds.forEach((f, i) => v.setInt32(CONTROL_AT + CMSG_HDR + 4 * i, f, true));
  }
  msg.prepare(addressOf(data), data.length, controlLen);
  const flags = MSG_NOSIGNAL | (options.dontWait ? MSG_DONTWAIT : 0);
  const rc = Number(libc.sendmsg(fd, msg.header, flags));
  void data.length;
  if (rc < 0) {
    const e = lastErrno();
    if (e === Errno.EAGAIN || e === Errno.EINTR) return null;
    throw new SysError("sendmsg", e);
  }
  return rc;
}

// ---------------------------------------------------------------- fds

/** close(2); EBADF is reported, EINTR is not retried (Linux closes anyway). */
export function closeFd(fd: number): void {
  const rc = libc.close(fd);
  if (rc < 0) {
    const e = lastErrno();
    if (e !== Errno.EINTR) throw new SysError("close", e, String(fd));
  }
}

/** The file status flags (F_GETFL). */
export function fileStatusFlags(fd: number): number {
  return check("fcntl", libc.fcntl(fd, F_GETFL, 0n), `F_GETFL ${fd}`);
}

/** Set or clear O_NONBLOCK. */
export function setNonblocking(fd: number, on: boolean): void {
  const fl = fileStatusFlags(fd);
  const next = on ? fl | O_NONBLOCK : fl & ~O_NONBLOCK;
  if (next !== fl) check("fcntl", libc.fcntl(fd, F_SETFL, BigInt(next)), `F_SETFL ${fd}`);
}

/** Set or clear FD_CLOEXEC. */
export function setCloexec(fd: number, on: boolean): void {
  const fl = check("fcntl", libc.fcntl(fd, F_GETFD, 0n), `F_GETFD ${fd}`);
  const next = on ? fl | FD_CLOEXEC : fl & ~FD_CLOEXEC;
  if (next !== fl) check("fcntl", libc.fcntl(fd, F_SETFD, BigInt(next)), `F_SETFD ${fd}`);
}

/** true if `fd` is an open file descriptor. */
export function isOpenFd(fd: number): boolean {
  return libc.fcntl(fd, F_GETFD, 0n) >= 0;
}

/** open(2); the path's bytes are passed unchanged. Always adds O_CLOEXEC. */
export function openPath(path: string, flags: number, mode = 0o644): number {
  return check("open", libc.open(cString(path), flags | O_CLOEXEC, mode), path);
}

/** read(2) once; null if it would block. */
export function readFd(fd: number, buf: Uint8Array): number | null {
  const rc = Number(libc.read(fd, buf, BigInt(buf.length)));
  if (rc < 0) {
    const e = lastErrno();
    if (e === Errno.EAGAIN || e === Errno.EINTR) return null;
    throw new SysError("read", e, String(fd));
  }
  return rc;
}

/** write(2) once; returns bytes written, or null if it would block. */
export function writeSome(fd: number, data: Uint8Array): number | null {
  const rc = Number(libc.write(fd, data, BigInt(data.length)));
  if (rc < 0) {
    const e = lastErrno();
    if (e === Errno.EAGAIN || e === Errno.EINTR) return null;
    throw new SysError("write", e, String(fd));
  }
  return rc;
}

/** write(2) all of `data` (a blocking fd is assumed). */
export function writeAll(fd: number, data: Uint8Array): void {
  let off = 0;
  while (off < data.length) {
    const chunk = data.subarray(off);
    const rc = Number(libc.write(fd, chunk, BigInt(chunk.length)));
    if (rc < 0) {
      const e = lastErrno();
      if (e === Errno.EINTR) continue;
      throw new SysError("write", e, String(fd));
    }
    off += rc;
  }
}

/**
 * Read a small file (sysfs, procfs) through libc: Deno's own fs API refuses
 * /proc, /sys and /dev without --allow-all. Returns null if it does not exist.
 */
export function readSmallFile(path: string, max = 65536): string | null {
  const bytes = readSmallBytes(path, max);
  return bytes === null ? null : new TextDecoder().decode(bytes);
}

/**
 * The first `max` bytes of a small file (sysfs, procfs), through libc like
 * {@linkcode readSmallFile}; null if it does not exist (ENOENT, ENOTDIR).
 * Other failures throw {@linkcode SysError}.
 */
export function readSmallBytes(path: string, max = 65536): Uint8Array | null {
  const rc = libc.open(cString(path), O_RDONLY | O_CLOEXEC, 0);
  if (rc < 0) {
    const e = lastErrno();
    if (e === Errno.ENOENT || e === Errno.ENOTDIR) return null;
    throw new SysError("open", e, path);
  }
  try {
    const buf = new Uint8Array(max);
    let n = 0;
    while (n < max) {
      const got = readFd(rc, buf.subarray(n));
      if (got === null) continue;
      if (got === 0) break;
      n += got;
    }
    return buf.slice(0, n);
  } finally {
    libc.close(rc);
  }
}

/** readlink(2); null if the path does not exist. */
export function readLink(path: string): string | null {
  const buf = new Uint8Array(4096);
  const rc = Number(libc.readlink(cString(path), buf, BigInt(buf.length)));
  if (rc < 0) {
    const e = lastErrno();
    if (e === Errno.ENOENT || e === Errno.ENOTDIR) return null;
    throw new SysError("readlink", e, path);
  }
  return new TextDecoder().decode(buf.subarray(0, rc));
}

/** unlink(2); returns false if the path did not exist. */
export function unlinkPath(path: string): boolean {
  const rc = libc.unlink(cString(path));
  if (rc === 0) return true;
  const e = lastErrno();
  if (e === Errno.ENOENT) return false;
  throw new SysError("unlink", e, path);
}

/**
 * Who owns an fcntl(2) record lock: `"ofd"` (F_OFD_SETLK: the open file
 * description, so it lives as long as any duplicate of the fd, across execve,
 * and closing another fd of the same file does not drop it) or `"process"`
 * (F_SETLK: the classic POSIX lock of the calling process, as libvirt's
 * virFileLock and QEMU's lockf take). Both kinds conflict with each other;
 * neither conflicts with flock(2).
 */
export type LockOwner = "ofd" | "process";

/** Options of {@linkcode tryLockExclusive} and {@linkcode writeLockHolder}. */
export interface RecordLockOptions {
  /** Lock kind (default "ofd"). */
  owner?: LockOwner;
  /** First byte (default 0). */
  start?: number;
  /** Number of bytes; 0 (the default) is "to the end of the file, however long". */
  length?: number;
}

function flockStruct(type: number, options: RecordLockOptions): Uint8Array {
  const buf = new Uint8Array(FLOCK.size);
  const view = new DataView(buf.buffer);
  view.setInt16(FLOCK.l_type, type, true);
  view.setInt16(FLOCK.l_whence, 0, true); // SEEK_SET
  view.setBigInt64(FLOCK.l_start, BigInt(options.start ?? 0), true);
  view.setBigInt64(FLOCK.l_len, BigInt(options.length ?? 0), true);
  return buf;
}

/**
 * Take an exclusive (write) fcntl(2) record lock without waiting: true if
 * taken, false if someone else holds a conflicting lock. The fd must be open
 * for writing.
 */
export function tryLockExclusive(fd: number, options: RecordLockOptions = {}): boolean {
  const cmd = (options.owner ?? "ofd") === "ofd" ? F_OFD_SETLK : F_SETLK;
  const rc = libc.fcntl_lock(fd, cmd, flockStruct(F_WRLCK, options));
  if (rc === 0) return true;
  const e = lastErrno();
  if (e === Errno.EAGAIN || e === Errno.EACCES) return false;
  throw new SysError("fcntl", e, `F_${cmd === F_SETLK ? "" : "OFD_"}SETLK ${fd}`);
}

/**
 * Who would stop this process from taking a write lock on the range (F_GETLK
 * or F_OFD_GETLK): null if nobody, else the holder's pid (-1 when the holder
 * is an open file description, which has no pid).
 */
export function writeLockHolder(fd: number, options: RecordLockOptions = {}): number | null {
  const cmd = (options.owner ?? "ofd") === "ofd" ? F_OFD_GETLK : F_GETLK;
  const buf = flockStruct(F_WRLCK, options);
  check("fcntl", libc.fcntl_lock(fd, cmd, buf), `F_${cmd === F_GETLK ? "" : "OFD_"}GETLK ${fd}`);
  const view = new DataView(buf.buffer);
  if (view.getInt16(FLOCK.l_type, true) === F_UNLCK) return null;
  return view.getInt32(FLOCK.l_pid, true);
}

/** lseek(fd, 0, SEEK_SET). */
export function rewindFd(fd: number): void {
  check("lseek", libc.lseek(fd, 0n, 0), String(fd));
}

/** ftruncate(2). */
export function truncateFd(fd: number, length: number): void {
  check("ftruncate", libc.ftruncate(fd, BigInt(length)), String(fd));
}

/** A pipe, both ends close-on-exec; `nonblocking` applies to both. */
export function makePipe(nonblocking = false): [number, number] {
  const fds = new Int32Array(2);
  check("pipe2", libc.pipe2(fds, O_CLOEXEC | (nonblocking ? O_NONBLOCK : 0)));
  return [fds[0], fds[1]];
}

// ---------------------------------------------------------------- stat

/** The file type part of st_mode. */
export type FileKind =
  | "block"
  | "char"
  | "regular"
  | "directory"
  | "fifo"
  | "socket"
  | "symlink"
  | "unknown";

/** What fstat(2) says about an fd. */
export interface FileStat {
  kind: FileKind;
  /** Full st_mode. */
  mode: number;
  /** st_rdev major/minor (devices only). */
  rdevMajor: number;
  rdevMinor: number;
  /** st_dev and st_ino, to recognise the same file. */
  dev: bigint;
  ino: bigint;
  /** st_nlink: number of hard links. */
  nlink: number;
  uid: number;
  gid: number;
  size: bigint;
}

function kindOf(mode: number): FileKind {
  switch (mode & 0o170000) {
    case 0o060000:
      return "block";
    case 0o020000:
      return "char";
    case 0o100000:
      return "regular";
    case 0o040000:
      return "directory";
    case 0o010000:
      return "fifo";
    case 0o140000:
      return "socket";
    case 0o120000:
      return "symlink";
    default:
      return "unknown";
  }
}

function decodeStat(buf: DataView): FileStat {
  // struct stat of this architecture (ffi/layouts.ts)
  const dev = buf.getBigUint64(STAT.st_dev, true);
  const ino = buf.getBigUint64(STAT.st_ino, true);
  const mode = buf.getUint32(STAT.st_mode, true);
  const nlink = STAT.nlinkBytes === 8
    ? Number(buf.getBigUint64(STAT.st_nlink, true))
    : buf.getUint32(STAT.st_nlink, true);
  const uid = buf.getUint32(STAT.st_uid, true);
  const gid = buf.getUint32(STAT.st_gid, true);
  const rdev = buf.getBigUint64(STAT.st_rdev, true);
  const size = buf.getBigInt64(STAT.st_size, true);
  // glibc's gnu_dev_major/minor
  const major = Number(((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn & 0xffffffffn));
  const minor = Number((rdev & 0xffn) | ((rdev >> 12n) & ~0xffn & 0xffffffffn));
  return {
    kind: kindOf(mode),
    mode,
    rdevMajor: major,
    rdevMinor: minor,
    dev,
    ino,
    nlink,
    uid,
    gid,
    size: BigInt.asUintN(64, size),
  };
}

/** fstat(2). */
export function fstatFd(fd: number): FileStat {
  const buf = new Uint8Array(STAT.size);
  check("fstat", libc.fstat(fd, buf), String(fd));
  return decodeStat(new DataView(buf.buffer));
}

const AT_EMPTY_PATH = 0x1000;
const AT_STATX_DONT_SYNC = 0x4000;
const STATX_TYPE = 0x1;
const STATX_INO = 0x100;
const STATX_SIZE = STATX.size;

/**
 * statx(fd, "", AT_EMPTY_PATH | AT_STATX_DONT_SYNC, STATX_TYPE | STATX_INO):
 * what the kernel already knows about an open file, without asking the file
 * system behind it. A FUSE or network file system is not consulted (a plain
 * fstat(2) sends FUSE a GETATTR and waits for the answer, for ever if its
 * server never answers). Only the type, inode and device numbers are asked
 * for; the other fields are whatever the kernel has cached and may be stale.
 * Works on O_PATH fds.
 */
export function statxFd(fd: number): FileStat {
  const buf = new Uint8Array(STATX_SIZE);
  check(
    "statx",
    libc.statx(fd, cString(""), AT_EMPTY_PATH | AT_STATX_DONT_SYNC, STATX_TYPE | STATX_INO, buf),
    String(fd),
  );
  const v = new DataView(buf.buffer);
  const mode = v.getUint16(STATX.stx_mode, true);
  const devMajor = v.getUint32(STATX.stx_dev_major, true);
  const devMinor = v.getUint32(STATX.stx_dev_minor, true);
  return {
    kind: kindOf(mode),
    mode,
    rdevMajor: v.getUint32(STATX.stx_rdev_major, true),
    rdevMinor: v.getUint32(STATX.stx_rdev_minor, true),
    dev: makeDev(devMajor, devMinor),
    ino: v.getBigUint64(STATX.stx_ino, true),
    uid: v.getUint32(STATX.stx_uid, true),
    gid: v.getUint32(STATX.stx_gid, true),
    size: v.getBigUint64(STATX.stx_size, true),
    nlink: v.getUint32(STATX.stx_nlink, true),
  };
}

/** glibc's gnu_dev_makedev: the st_dev encoding fstat(2) returns. */
function makeDev(major: number, minor: number): bigint {
  const ma = BigInt(major >>> 0);
  const mi = BigInt(minor >>> 0);
  return ((ma & 0xfffff000n) << 32n) | ((ma & 0xfffn) << 8n) | ((mi & 0xffffff00n) << 12n) |
    (mi & 0xffn);
}

/** stat(2); null if the path does not exist. */
export function statPath(path: string): FileStat | null {
  const buf = new Uint8Array(STAT.size);
  const rc = libc.stat(cString(path), buf);
  if (rc < 0) {
    const e = lastErrno();
    if (e === Errno.ENOENT || e === Errno.ENOTDIR) return null;
    throw new SysError("stat", e, path);
  }
  return decodeStat(new DataView(buf.buffer));
}

// ---------------------------------------------------------------- poll

/**
 * A set of pollfd entries in one native buffer. Entries are assigned by index;
 * `revents(i)` reads the result of the last poll.
 */
export class PollSet {
  #buf: Uint8Array;
  #view: DataView;
  #count = 0;

  constructor(capacity = 64) {
    this.#buf = new Uint8Array(8 * capacity);
    this.#view = new DataView(this.#buf.buffer);
  }

  /** Forget every entry. */
  clear(): void {
    this.#count = 0;
  }

  /** Number of entries. */
  get size(): number {
    return this.#count;
  }

  /** Append an entry; returns its index. */
  add(fd: number, events: number): number {
    if (8 * (this.#count + 1) > this.#buf.length) {
      const bigger = new Uint8Array(this.#buf.length * 2);
      bigger.set(this.#buf);
      this.#buf = bigger;
      this.#view = new DataView(bigger.buffer);
    }
    const i = this.#count++;
    this.#view.setInt32(8 * i, fd, true);
    this.#view.setInt16(8 * i + 4, events, true);
    this.#view.setInt16(8 * i + 6, 0, true);
    return i;
  }

  /** fd of entry i. */
  fd(i: number): number {
    return this.#view.getInt32(8 * i, true);
  }

  /** revents of entry i after a poll. */
  revents(i: number): number {
    return this.#view.getInt16(8 * i + 6, true) & 0xffff;
  }

  /** poll(2) on this thread; returns the number of ready entries (0 on timeout or EINTR). */
  pollSync(timeoutMs: number): number {
    const rc = libc.poll(this.#buf, BigInt(this.#count), timeoutMs);
    if (rc < 0) {
      const e = lastErrno();
      if (e === Errno.EINTR) return 0;
      throw new SysError("poll", e);
    }
    return rc;
  }

  /**
   * poll(2) on Deno's blocking thread pool, so the event loop stays free.
   * errno is not recoverable there: a negative result is reported as EINTR-like 0
   * after clearing revents, and the caller simply polls again.
   */
  async pollAsync(timeoutMs: number): Promise<number> {
    const buf = this.#buf;
    const rc = await libc.poll_async(buf, BigInt(this.#count), timeoutMs);
    if (rc < 0) {
      for (let i = 0; i < this.#count; i++) this.#view.setInt16(8 * i + 6, 0, true);
      return 0;
    }
    return rc;
  }
}

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

/** ioctl(2) with a buffer argument; returns 0 or throws. For ffi/ modules. */
export function ioctlBuffer(fd: number, request: bigint, arg: Uint8Array, label: string): number {
  const rc = libc.ioctl(fd, request, arg);
  if (rc < 0) throw new SysError("ioctl", lastErrno(), label);
  return rc;
}
