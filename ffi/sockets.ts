/**
 * Unix sockets through libc: socket, bind, connect, accept, socket options,
 * datagrams, and recvmsg/sendmsg with SCM_RIGHTS in one reusable msghdr.
 * Rules as in ffi/libc.ts.
 *
 * @module
 */

import { Errno, SysError } from "./errno.ts";
import { CMSGHDR, IOVEC, MSGHDR, SOCKADDR_UN, UCRED } from "./layouts.ts";
import { addressOf, check, checkReady, lastErrno, libc } from "./libc.ts";

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

// ---------------------------------------------------------------- sockets

/** A `sockaddr_un` for a filesystem path or an abstract name, and the length to pass with it. */
function sockaddrUn(name: string, kind: "path" | "abstract"): { sa: Uint8Array; len: number } {
  const bytes = new TextEncoder().encode(name);
  // a path keeps its terminating NUL; an abstract name starts after a NUL and has none
  const at = SOCKADDR_UN.sun_path + (kind === "abstract" ? 1 : 0);
  const max = SOCKADDR_UN.size - at - (kind === "path" ? 1 : 0);
  if (bytes.length === 0 || bytes.length > max) {
    throw new RangeError(`unix socket ${kind} "${name}" must be 1 to ${max} bytes long`);
  }
  const sa = new Uint8Array(SOCKADDR_UN.size);
  new DataView(sa.buffer).setUint16(SOCKADDR_UN.sun_family, AF_UNIX, true);
  sa.set(bytes, at);
  return { sa, len: at + bytes.length + (kind === "path" ? 1 : 0) };
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
  const { sa, len } = sockaddrUn(path, "path");
  check("bind", libc.bind(fd, sa, len), path);
}

/** connect(2) a unix socket to a filesystem path. */
export function connectUnix(fd: number, path: string): void {
  const { sa, len } = sockaddrUn(path, "path");
  check("connect", libc.connect(fd, sa, len), path);
}

/** bind(2) a unix socket to the abstract name `name` (no leading NUL or `@`). */
export function bindAbstract(fd: number, name: string): void {
  const { sa, len } = sockaddrUn(name, "abstract");
  check("bind", libc.bind(fd, sa, len), `@${name}`);
}

/**
 * connect(2) a unix socket to the abstract name `name` (no leading NUL or
 * `@`). On a non-blocking socket a full backlog is an EAGAIN error.
 */
export function connectAbstract(fd: number, name: string): void {
  const { sa, len } = sockaddrUn(name, "abstract");
  check("connect", libc.connect(fd, sa, len), `@${name}`);
}

/** listen(2). */
export function listenSocket(fd: number, backlog: number): void {
  check("listen", libc.listen(fd, backlog));
}

/** accept4(2), close-on-exec and non-blocking; `null` when no connection is waiting. */
export function acceptConnection(fd: number): number | null {
  return checkReady("accept4", libc.accept4(fd, null, null, SOCK_CLOEXEC | SOCK_NONBLOCK));
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
  const { sa, len } = path.startsWith("@")
    ? sockaddrUn(path.slice(1), "abstract")
    : sockaddrUn(path, "path");
  check("sendto", libc.sendto(fd, data, BigInt(data.length), MSG_NOSIGNAL, sa, len), path);
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
  const rc = checkReady("recvmsg", libc.recvmsg(fd, msg.header, flags));
  if (rc === null) return null;
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
  const rc = checkReady("sendmsg", libc.sendmsg(fd, msg.header, flags));
  void data.length;
  return rc;
}
