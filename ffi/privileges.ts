/**
 * Credentials and capabilities through libc: capget/capset, prctl, the
 * set*id family, NSS look-ups of users and groups, chdir and execve.
 *
 * Every wrapper acts on the calling thread only, except where glibc says
 * otherwise (setresuid, setresgid and setgroups are broadcast to every thread
 * by glibc). See ../src/security/privileges.ts for why the daemon re-executes itself
 * instead of relying on a per-thread drop.
 *
 * Capability sets are `bigint` bit masks (bit n = capability n).
 *
 * @module
 */

import { Errno, SysError } from "./errno.ts";
import { CAP, GROUP, PASSWD } from "./layouts.ts";
import { readSmallFile } from "./files.ts";
import { addressOf, check, cString, lastErrno, libc } from "./libc.ts";

/** Capability numbers used by the daemon (`<linux/capability.h>`). */
export const Cap = {
  CHOWN: 0,
  DAC_OVERRIDE: 1,
  SETGID: 6,
  SETUID: 7,
  SETPCAP: 8,
  SYS_RAWIO: 17,
  SYS_ADMIN: 21,
} as const;

/** The bit of one capability in a capability mask. */
export function capBit(cap: number): bigint {
  return 1n << BigInt(cap);
}

// ---------------------------------------------------------------- capabilities

const LINUX_CAPABILITY_VERSION_3 = 0x20080522;

/** The three per-thread capability sets that capget/capset handle. */
export interface CapSets {
  effective: bigint;
  permitted: bigint;
  inheritable: bigint;
}

function capHeader(): Uint32Array {
  // struct __user_cap_header_struct { __u32 version; int pid; } (pid 0 = this thread)
  return new Uint32Array([LINUX_CAPABILITY_VERSION_3, 0]);
}

/** capget(2) for the calling thread. */
export function capGet(): CapSets {
  // two struct __user_cap_data_struct { __u32 effective, permitted, inheritable; }
  const data = new Uint32Array((2 * CAP.dataSize) / 4);
  check("capget", libc.capget(capHeader(), data));
  const join = (lo: number, hi: number) => BigInt(lo) | (BigInt(hi) << 32n);
  return {
    effective: join(data[0], data[3]),
    permitted: join(data[1], data[4]),
    inheritable: join(data[2], data[5]),
  };
}

/** capset(2) for the calling thread. */
export function capSet(sets: CapSets): void {
  const lo = (v: bigint) => Number(v & 0xffffffffn);
  const hi = (v: bigint) => Number((v >> 32n) & 0xffffffffn);
  const data = new Uint32Array([
    lo(sets.effective),
    lo(sets.permitted),
    lo(sets.inheritable),
    hi(sets.effective),
    hi(sets.permitted),
    hi(sets.inheritable),
  ]);
  check("capset", libc.capset(capHeader(), data));
}

/** The highest capability number this kernel knows (`/proc/sys/kernel/cap_last_cap`). */
export function lastCap(): number {
  const text = readSmallFile("/proc/sys/kernel/cap_last_cap");
  const n = text === null ? NaN : Number.parseInt(text.trim(), 10);
  return Number.isInteger(n) && n > 0 && n < 64 ? n : 40;
}

// ---------------------------------------------------------------- prctl

const PR_GET_DUMPABLE = 3;
const PR_SET_DUMPABLE = 4;
const PR_SET_KEEPCAPS = 8;
const PR_CAPBSET_READ = 23;
const PR_CAPBSET_DROP = 24;
const PR_SET_NO_NEW_PRIVS = 38;
const PR_GET_NO_NEW_PRIVS = 39;
const PR_CAP_AMBIENT = 47;
const PR_CAP_AMBIENT_RAISE = 2;
const PR_CAP_AMBIENT_CLEAR_ALL = 4;

function prctl(option: number, label: string, a2 = 0n, a3 = 0n): number {
  return check("prctl", libc.prctl(option, a2, a3, 0n, 0n), label);
}

/** PR_SET_KEEPCAPS (calling thread): keep permitted caps across a uid change away from 0. */
export function setKeepCaps(on: boolean): void {
  prctl(PR_SET_KEEPCAPS, "PR_SET_KEEPCAPS", on ? 1n : 0n);
}

/** PR_CAPBSET_READ: is `cap` in the bounding set? */
export function inBoundingSet(cap: number): boolean {
  return prctl(PR_CAPBSET_READ, "PR_CAPBSET_READ", BigInt(cap)) === 1;
}

/** The whole bounding set as a mask. */
export function boundingSet(): bigint {
  let mask = 0n;
  const last = lastCap();
  for (let c = 0; c <= last; c++) {
    const rc = libc.prctl(PR_CAPBSET_READ, BigInt(c), 0n, 0n, 0n);
    if (rc < 0) break; // EINVAL: past the last capability (cap_last_cap was not readable)
    if (rc === 1) mask |= capBit(c);
  }
  return mask;
}

/** PR_CAPBSET_DROP (needs CAP_SETPCAP). */
export function dropFromBoundingSet(cap: number): void {
  prctl(PR_CAPBSET_DROP, `PR_CAPBSET_DROP ${cap}`, BigInt(cap));
}

/** PR_CAP_AMBIENT_RAISE (calling thread; the cap must be permitted and inheritable). */
export function raiseAmbient(cap: number): void {
  prctl(PR_CAP_AMBIENT, `PR_CAP_AMBIENT_RAISE ${cap}`, BigInt(PR_CAP_AMBIENT_RAISE), BigInt(cap));
}

/** PR_CAP_AMBIENT_CLEAR_ALL (calling thread). */
export function clearAmbient(): void {
  prctl(PR_CAP_AMBIENT, "PR_CAP_AMBIENT_CLEAR_ALL", BigInt(PR_CAP_AMBIENT_CLEAR_ALL));
}

/** PR_SET_NO_NEW_PRIVS (whole process from now on, inherited across execve; cannot be undone). */
export function setNoNewPrivs(): void {
  prctl(PR_SET_NO_NEW_PRIVS, "PR_SET_NO_NEW_PRIVS", 1n);
}

/** PR_GET_NO_NEW_PRIVS. */
export function noNewPrivs(): boolean {
  return prctl(PR_GET_NO_NEW_PRIVS, "PR_GET_NO_NEW_PRIVS") === 1;
}

/** PR_SET_DUMPABLE (process-wide): 0 = no core dumps, /proc/PID owned by root, no ptrace. */
export function setDumpable(on: boolean): void {
  prctl(PR_SET_DUMPABLE, "PR_SET_DUMPABLE", on ? 1n : 0n);
}

/** PR_GET_DUMPABLE. */
export function dumpable(): boolean {
  return prctl(PR_GET_DUMPABLE, "PR_GET_DUMPABLE") !== 0;
}

// ---------------------------------------------------------------- ids

/** Real, effective and saved ids. */
export interface ResIds {
  real: number;
  effective: number;
  saved: number;
}

/** getresuid(2). */
export function getResUid(): ResIds {
  const r = new Uint32Array(1), e = new Uint32Array(1), s = new Uint32Array(1);
  check("getresuid", libc.getresuid(r, e, s));
  return { real: r[0], effective: e[0], saved: s[0] };
}

/** getresgid(2). */
export function getResGid(): ResIds {
  const r = new Uint32Array(1), e = new Uint32Array(1), s = new Uint32Array(1);
  check("getresgid", libc.getresgid(r, e, s));
  return { real: r[0], effective: e[0], saved: s[0] };
}

/** setresuid(2) with all three ids equal (glibc applies it to every thread). */
export function setAllUids(uid: number): void {
  check("setresuid", libc.setresuid(uid, uid, uid), String(uid));
}

/** setresgid(2) with all three ids equal (glibc applies it to every thread). */
export function setAllGids(gid: number): void {
  check("setresgid", libc.setresgid(gid, gid, gid), String(gid));
}

/** setgroups(2) (glibc applies it to every thread); `[]` clears the supplementary groups. */
export function setSupplementaryGroups(gids: number[]): void {
  const list = new Uint32Array(Math.max(gids.length, 1));
  list.set(gids);
  check("setgroups", libc.setgroups(BigInt(gids.length), list));
}

/** getgroups(2). */
export function supplementaryGroups(): number[] {
  const n = check("getgroups", libc.getgroups(0, new Uint32Array(1)));
  const list = new Uint32Array(Math.max(n, 1));
  const got = check("getgroups", libc.getgroups(n, list));
  return Array.from(list.subarray(0, got));
}

// ---------------------------------------------------------------- NSS

/** A user found through NSS. */
export interface UserEntry {
  name: string;
  uid: number;
  /** The primary group. */
  gid: number;
}

/** A group found through NSS. */
export interface GroupEntry {
  name: string;
  gid: number;
}

// struct passwd (LP64): pw_name@0, pw_passwd@8, pw_uid@16, pw_gid@20, pw_gecos@24,
// pw_dir@32, pw_shell@40; 48 bytes. struct group (LP64): gr_name@0, gr_passwd@8,
// gr_gid@16, gr_mem@24; 32 bytes.

function nssLookup(
  call: string,
  subject: string,
  structSize: number,
  invoke: (st: Uint8Array, buf: Uint8Array, out: BigUint64Array) => number,
): DataView | null {
  for (let size = 4096; size <= 1 << 22; size *= 4) {
    const st = new Uint8Array(structSize);
    const buf = new Uint8Array(size);
    const out = new BigUint64Array(1);
    const rc = invoke(st, buf, out);
    if (rc === Errno.ERANGE) continue;
    if (rc !== 0) throw new SysError(call, rc, subject);
    return out[0] === 0n ? null : new DataView(st.buffer);
  }
  throw new SysError(call, Errno.ERANGE, subject);
}

/** getpwnam_r(3); null if there is no such user. */
export function userByName(name: string): UserEntry | null {
  const v = nssLookup(
    "getpwnam_r",
    name,
    PASSWD.size,
    (st, buf, out) => libc.getpwnam_r(cString(name), st, buf, BigInt(buf.length), out),
  );
  return v === null
    ? null
    : { name, uid: v.getUint32(PASSWD.pw_uid, true), gid: v.getUint32(PASSWD.pw_gid, true) };
}

/** getpwuid_r(3); null if no user has this uid. */
export function userById(uid: number): UserEntry | null {
  let name = "";
  const v = nssLookup("getpwuid_r", String(uid), PASSWD.size, (st, buf, out) => {
    const rc = libc.getpwuid_r(uid, st, buf, BigInt(buf.length), out);
    if (rc === 0 && out[0] !== 0n) name = nameFromBuffer(st, buf);
    return rc;
  });
  return v === null
    ? null
    : { name, uid: v.getUint32(PASSWD.pw_uid, true), gid: v.getUint32(PASSWD.pw_gid, true) };
}

/** getgrnam_r(3); null if there is no such group. */
export function groupByName(name: string): GroupEntry | null {
  const v = nssLookup(
    "getgrnam_r",
    name,
    GROUP.size,
    (st, buf, out) => libc.getgrnam_r(cString(name), st, buf, BigInt(buf.length), out),
  );
  return v === null ? null : { name, gid: v.getUint32(GROUP.gr_gid, true) };
}

// The first string field (pw_name) points into `buf`; find it by offset.
function nameFromBuffer(st: Uint8Array, buf: Uint8Array): string {
  const ptr = new DataView(st.buffer).getBigUint64(PASSWD.pw_name, true);
  const base = addressOf(buf as Uint8Array<ArrayBuffer>);
  const off = Number(ptr - base);
  if (off < 0 || off >= buf.length) return "";
  const end = buf.indexOf(0, off);
  return new TextDecoder().decode(buf.subarray(off, end < 0 ? buf.length : end));
}

// ---------------------------------------------------------------- exec

/** chdir(2). */
export function changeDirectory(path: string): void {
  check("chdir", libc.chdir(cString(path)), path);
}

/**
 * execve(2). Only returns by throwing: on success this process image is
 * replaced (same pid; every other thread is gone).
 */
export function execve(path: string, argv: string[], envp: string[]): never {
  const keep: Uint8Array[] = [];
  const table = (items: string[]) => {
    const arr = new BigUint64Array(items.length + 1);
    items.forEach((s, i) => {
      const c = cString(s) as Uint8Array<ArrayBuffer>;
      keep.push(c);
      arr[i] = addressOf(c);
    });
    return arr;
  };
  const argvTable = table(argv);
  const envTable = table(envp);
  const rc = libc.execve(
    cString(path),
    new Uint8Array(argvTable.buffer),
    new Uint8Array(envTable.buffer),
  );
  // Still referenced here, so the strings stayed alive during the call.
  keep.length = 0;
  throw new SysError("execve", rc < 0 ? lastErrno() : 0, path);
}
