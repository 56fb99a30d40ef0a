/**
 * File descriptors and files through libc: close, fcntl, open, read, write,
 * readlink, unlink, fcntl record locks, pipes, small sysfs/procfs reads, and stat/statx.
 * Rules as in ffi/libc.ts.
 *
 * @module
 */

import { Errno, SysError } from "./errno.ts";
import { FLOCK, STAT, STATX } from "./layouts.ts";
import { check, checkFound, checkReady, cString, lastErrno, libc } from "./libc.ts";

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
  return checkReady("read", libc.read(fd, buf, BigInt(buf.length)), String(fd));
}

/** write(2) once; returns bytes written, or null if it would block. */
export function writeSome(fd: number, data: Uint8Array): number | null {
  return checkReady("write", libc.write(fd, data, BigInt(data.length)), String(fd));
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
  const rc = checkFound("open", libc.open(cString(path), O_RDONLY | O_CLOEXEC, 0), path);
  if (rc === null) return null;
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
  const rc = checkFound("readlink", libc.readlink(cString(path), buf, BigInt(buf.length)), path);
  if (rc === null) return null;
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
  if (checkFound("stat", libc.stat(cString(path), buf), path) === null) return null;
  return decodeStat(new DataView(buf.buffer));
}
