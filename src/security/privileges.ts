/**
 * Least privilege: end with the requested uid/gid, no supplementary groups and
 * exactly CAP_SYS_RAWIO, on every thread of the process.
 *
 * Why a re-exec: capabilities and keepcaps are per thread. An in-process drop
 * through capset(2) changes only the calling thread, and V8's and tokio's
 * threads that already exist end up with no capabilities at all (measured on
 * Deno 2.9), so nonblocking FFI calls would fail at random. Instead, stage 1
 * (the process as started) does the drop on the main
 * thread, raises CAP_SYS_RAWIO into the ambient set and execve(2)s the same
 * Deno with the same arguments. The kernel then builds every thread of stage 2
 * from the same credentials. Same pid, so LISTEN_PID, MAINPID and the pidfile
 * stay valid; the listening socket and the pidfile fd are passed across by
 * clearing FD_CLOEXEC and naming them in `PRHELPERD_STAGE2`.
 *
 * Cases:
 * - root (with or without `-u`/`-g`): re-exec; stage 2 has uid/gid as asked,
 *   no groups, CapEff = CapPrm = CapInh = CapAmb = CAP_SYS_RAWIO, CapBnd = 0.
 * - already minimal (systemd `User=` + `AmbientCapabilities=CAP_SYS_RAWIO` +
 *   `NoNewPrivileges=yes`): nothing to drop; dumpable=0 is set (process-wide).
 *   With `reexecAnyway` (the daemon) it still re-executes once, changing no
 *   credential, so that the new image has SIGUSR1 blocked on every thread.
 *   no_new_privs is per thread like the capabilities, so if it is not set yet
 *   (a plain `setpriv` start without --no-new-privs, or an unprivileged user)
 *   the process re-executes once to have it on every thread; that needs no
 *   privilege.
 * - non-root with more capabilities than CAP_SYS_RAWIO: re-exec with only
 *   CAP_SYS_RAWIO ambient (needs no privilege).
 * - CAP_SYS_RAWIO not permitted: runs, with a warning (every SG_IO fails).
 *
 * The ambient and inheritable sets keep CAP_SYS_RAWIO on purpose. They only
 * matter for programs the daemon would execute, and it executes none (its
 * permission set has `run: false`, and no_new_privs is set). Lowering them is
 * per thread, so doing it would make threads unequal again.
 *
 * @module
 */

import { isOpenFd, readLink, readSmallFile, setCloexec } from "../../ffi/files.ts";
import {
  boundingSet,
  Cap,
  capBit,
  capGet,
  capSet,
  type CapSets,
  changeDirectory,
  clearAmbient,
  dropFromBoundingSet,
  execve,
  getResGid,
  getResUid,
  groupByName,
  inBoundingSet,
  lastCap,
  noNewPrivs,
  raiseAmbient,
  type ResIds,
  setAllGids,
  setAllUids,
  setDumpable,
  setKeepCaps,
  setNoNewPrivs,
  setSupplementaryGroups,
  supplementaryGroups,
  userById,
  userByName,
} from "../../ffi/privileges.ts";

/** The environment variable that carries the fds from stage 1 to stage 2. */
export const STAGE2_ENV = "PRHELPERD_STAGE2";

/** CAP_SYS_RAWIO as a mask. */
export const RAWIO: bigint = capBit(Cap.SYS_RAWIO);

/** A bad `-u`/`-g` value, or a drop that cannot be done. The message is for the user. */
export class PrivilegeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "PrivilegeError";
  }
}

// ---------------------------------------------------------------- users and groups

const NUMERIC_ID = /^[0-9]{1,10}$/;

function numericId(spec: string): number | null {
  if (!NUMERIC_ID.test(spec)) return null;
  const n = Number(spec);
  return n < 0xffffffff ? n : null;
}

/** A resolved `-u` argument. */
export interface ResolvedUser {
  uid: number;
  /** The user's primary group, when the user database knows the user. */
  gid: number | null;
}

/** Resolve `-u USER`: a name first (as qemu-pr-helper does), then a number. */
export function resolveUser(spec: string): ResolvedUser {
  const byName = spec === "" ? null : userByName(spec);
  if (byName !== null) return { uid: byName.uid, gid: byName.gid };
  const uid = numericId(spec);
  if (uid === null) throw new PrivilegeError(`invalid user '${spec}'`);
  return { uid, gid: userById(uid)?.gid ?? null };
}

/** Resolve `-g GROUP`: a name first, then a number. */
export function resolveGroup(spec: string): number {
  const byName = spec === "" ? null : groupByName(spec);
  if (byName !== null) return byName.gid;
  const gid = numericId(spec);
  if (gid === null) throw new PrivilegeError(`invalid group '${spec}'`);
  return gid;
}

// ---------------------------------------------------------------- the plan (pure)

/** The credentials of the calling thread. */
export interface Credentials {
  uid: ResIds;
  gid: ResIds;
  groups: number[];
  caps: CapSets;
  bounding: bigint;
  /** no_new_privs of this thread (the flag is per thread; set before exec it is on all). */
  noNewPrivs: boolean;
}

/** Where the process should end up. */
export interface PrivilegeTarget {
  uid: number;
  gid: number;
}

/** What {@linkcode planPrivileges} decided. */
export type PrivilegePlan =
  | { action: "keep"; warnings: string[] }
  | { action: "reexec"; keepRawio: boolean; warnings: string[] }
  | { action: "fail"; message: string };

const has = (mask: bigint, cap: number) => (mask & capBit(cap)) !== 0n;
const allIs = (ids: ResIds, v: number) => ids.real === v && ids.effective === v && ids.saved === v;

/** The warning given when CAP_SYS_RAWIO is not permitted. */
export const NO_RAWIO_WARNING =
  "CAP_SYS_RAWIO is not in the permitted capability set: every SG_IO to a SCSI device " +
  "will fail with EPERM. Start prhelperd as root (it drops everything else itself), or " +
  "give it AmbientCapabilities=CAP_SYS_RAWIO in its systemd unit.";

/** Decide what to do from the current credentials (pure; unit-tested). */
export function planPrivileges(
  now: Credentials,
  target: PrivilegeTarget,
  inStage2: boolean,
): PrivilegePlan {
  const warnings: string[] = [];
  const eff = now.caps.effective;
  const idsOk = allIs(now.uid, target.uid) && allIs(now.gid, target.gid);
  const capsOk = (now.caps.permitted & ~RAWIO) === 0n && now.caps.effective === now.caps.permitted;
  const rawio = has(now.caps.permitted, Cap.SYS_RAWIO);
  // The target gid itself in the supplementary list grants nothing more: systemd's
  // User= puts the primary group there (initgroups), and it cannot be removed
  // without CAP_SETGID, which the service does not get.
  let groupsOk = now.groups.every((g) => g === target.gid);
  if (!groupsOk && idsOk && !has(eff, Cap.SETGID)) {
    // Nothing asked of us but the groups, and we may not change them: live with it.
    warnings.push(
      `supplementary groups ${now.groups.join(",")} cannot be dropped without CAP_SETGID`,
    );
    groupsOk = true;
  }
  // no_new_privs is per thread: set in place it would miss the threads that
  // already run, so it too is a reason to re-exec (systemd sets it before exec).
  if (idsOk && groupsOk && capsOk && now.noNewPrivs) {
    if (!rawio) warnings.push(NO_RAWIO_WARNING);
    return { action: "keep", warnings };
  }
  if (inStage2) {
    return {
      action: "fail",
      message: "privileges are still not minimal after the re-exec " +
        `(uid ${now.uid.effective}, gid ${now.gid.effective}, ` +
        `CapPrm 0x${now.caps.permitted.toString(16)}); refusing to loop`,
    };
  }
  if (!allIs(now.uid, target.uid) && !has(eff, Cap.SETUID)) {
    return {
      action: "fail",
      message: `cannot switch to uid ${target.uid}: CAP_SETUID is missing (start as root)`,
    };
  }
  if ((!allIs(now.gid, target.gid) || !groupsOk) && !has(eff, Cap.SETGID)) {
    return {
      action: "fail",
      message: `cannot switch to gid ${target.gid}: CAP_SETGID is missing (start as root)`,
    };
  }
  if (!rawio) warnings.push(NO_RAWIO_WARNING);
  return { action: "reexec", keepRawio: rawio, warnings };
}

// ---------------------------------------------------------------- /proc parsing (pure)

/** The credential lines of `/proc/PID[/task/TID]/status`. */
export interface StatusCreds {
  name: string;
  uid: number[];
  gid: number[];
  groups: number[];
  capInh: bigint;
  capPrm: bigint;
  capEff: bigint;
  capBnd: bigint;
  capAmb: bigint;
  noNewPrivs: boolean;
}

/** Parse the credential lines of a `/proc/.../status` file. */
export function parseStatus(text: string): StatusCreds {
  const field = (key: string) => {
    const m = text.match(new RegExp(`^${key}:[ \\t]*(.*)$`, "m"));
    return m === null ? "" : m[1].trim();
  };
  const nums = (s: string) => s.split(/\s+/).filter((x) => x !== "").map(Number);
  const hex = (s: string) => (s === "" ? 0n : BigInt(`0x${s}`));
  return {
    name: field("Name"),
    uid: nums(field("Uid")),
    gid: nums(field("Gid")),
    groups: nums(field("Groups")),
    capInh: hex(field("CapInh")),
    capPrm: hex(field("CapPrm")),
    capEff: hex(field("CapEff")),
    capBnd: hex(field("CapBnd")),
    capAmb: hex(field("CapAmb")),
    noNewPrivs: field("NoNewPrivs") === "1",
  };
}

/** Split a NUL-separated `/proc/self/cmdline` or `/proc/self/environ`. */
export function splitNul(text: string): string[] {
  const parts = text.split("\0");
  if (parts.length > 0 && parts[parts.length - 1] === "") parts.pop();
  return parts;
}

/** What stage 1 hands to stage 2. */
export interface Stage2Payload {
  /** Directory stage 2 should change to (stage 1's cwd at the time of the drop). */
  cwd: string;
  /** fds kept across the exec, by role. */
  fds: Record<string, number>;
}

/** Encode the payload as the value of {@linkcode STAGE2_ENV}. */
export function encodeStage2(p: Stage2Payload): string {
  return JSON.stringify({ v: 1, cwd: p.cwd, fds: p.fds });
}

/** Decode {@linkcode STAGE2_ENV}; throws PrivilegeError if it is malformed. */
export function decodeStage2(value: string): Stage2Payload {
  let raw: unknown;
  try {
    raw = JSON.parse(value);
  } catch {
    throw new PrivilegeError(`${STAGE2_ENV} is not valid JSON`);
  }
  const o = raw as { v?: unknown; cwd?: unknown; fds?: unknown };
  if (typeof o !== "object" || o === null || o.v !== 1 || typeof o.cwd !== "string") {
    throw new PrivilegeError(`${STAGE2_ENV} has an unknown format`);
  }
  const fds: Record<string, number> = {};
  if (typeof o.fds !== "object" || o.fds === null) {
    throw new PrivilegeError(`${STAGE2_ENV} has no fds`);
  }
  for (const [k, v] of Object.entries(o.fds)) {
    if (!Number.isInteger(v) || (v as number) < 0) {
      throw new PrivilegeError(`${STAGE2_ENV}: fd "${k}" is not a descriptor number`);
    }
    fds[k] = v as number;
  }
  return { cwd: o.cwd, fds };
}

const DROPPED_ENV = new Set(["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", STAGE2_ENV]);

/** The environment of stage 2: stage 1's, minus socket-activation variables, plus the payload. */
export function stage2Environment(environ: string[], payload: Stage2Payload): string[] {
  const out = environ.filter((kv) => !DROPPED_ENV.has(kv.slice(0, kv.indexOf("="))));
  out.push(`${STAGE2_ENV}=${encodeStage2(payload)}`);
  return out;
}

// ---------------------------------------------------------------- stage 2

// The directory the process started in: relative paths on the command line
// (the script, --config) are resolved against it, so the exec happens there.
const startCwd: string | null = readLink("/proc/self/cwd");

let stage2: Stage2Payload | null | undefined;

function consumeStage2(): Stage2Payload | null {
  if (stage2 !== undefined) return stage2;
  const value = Deno.env.get(STAGE2_ENV);
  if (value === undefined) return stage2 = null;
  const payload = decodeStage2(value);
  Deno.env.delete(STAGE2_ENV);
  for (const [role, fd] of Object.entries(payload.fds)) {
    if (!isOpenFd(fd)) throw new PrivilegeError(`stage 2: the ${role} fd ${fd} is not open`);
    setCloexec(fd, true);
  }
  if (payload.cwd !== startCwd) changeDirectory(payload.cwd);
  return stage2 = payload;
}

/**
 * In stage 2: the fds stage 1 kept (by the names given in `keepFds`), with
 * FD_CLOEXEC set again. null in a process that was not re-executed.
 */
export function stage2Fds(): Record<string, number> | null {
  return consumeStage2()?.fds ?? null;
}

// ---------------------------------------------------------------- the drop

/** Options for {@linkcode dropPrivileges}. */
export interface DropOptions {
  /** `-u`: a user name or number. */
  user?: string;
  /** `-g`: a group name or number. */
  group?: string;
  /**
   * The user to switch to when `user` is absent and the process runs as root,
   * if that user exists (issue 14, finding 8); absent: stay root, as
   * qemu-pr-helper does. `-u root` keeps uid 0.
   */
  defaultUser?: string;
  /** fds that must survive the re-exec (listening socket, pidfile), by role. */
  keepFds?: Record<string, number>;
  /**
   * Re-execute once even when there is nothing to drop (credentials already
   * minimal, e.g. under systemd): the new image inherits the signal mask of
   * this thread, so SIGUSR1, blocked by src/ignore_sigusr1.ts, is then blocked
   * on every thread (issue 14, finding 10). If the exec fails, the process
   * goes on as it is, with a warning.
   */
  reexecAnyway?: boolean;
}

/** What {@linkcode dropPrivileges} did when it returns. */
export interface DropResult {
  /** "reexecuted": this is stage 2; "in-place": the credentials were already minimal. */
  mode: "reexecuted" | "in-place";
  uid: number;
  gid: number;
  /** CAP_SYS_RAWIO is effective. */
  rawio: boolean;
  /** Something the operator must know (e.g. no CAP_SYS_RAWIO); log it as a warning. */
  warning?: string;
  /** How the user was chosen without `-u` (log it as information). */
  note?: string;
}

/**
 * Without `-u`, in a process running as root: the default user if it exists,
 * else undefined (stay root). A process that is not root (stage 2 after the
 * switch, a systemd `User=` service, a developer) keeps its own uid.
 */
export function defaultUserSpec(options: DropOptions, now: Credentials): string | undefined {
  if (options.user !== undefined || options.defaultUser === undefined) return undefined;
  if (now.uid.effective !== 0) return undefined;
  return userByName(options.defaultUser) !== null ? options.defaultUser : undefined;
}

/** The target ids for `-u`/`-g` (or the default user), given the current ids. */
export function privilegeTarget(options: DropOptions, now: Credentials): PrivilegeTarget {
  const spec = options.user ?? defaultUserSpec(options, now);
  const user = spec === undefined ? null : resolveUser(spec);
  const gid = options.group !== undefined ? resolveGroup(options.group) : user?.gid ?? now.gid.real;
  return { uid: user?.uid ?? now.uid.real, gid };
}

/** The credentials of the calling (main) thread. */
export function currentCredentials(): Credentials {
  return {
    uid: getResUid(),
    gid: getResGid(),
    groups: supplementaryGroups(),
    caps: capGet(),
    bounding: boundingSet(),
    noNewPrivs: noNewPrivs(),
  };
}

/**
 * Drop to `-u`/`-g` and CAP_SYS_RAWIO on every thread. Call it on the main
 * thread after the socket listens and the pidfile is written, in both stages
 * (stage 2 calls it again with the same options; it then only verifies and
 * hardens). Either returns, or re-executes the process and never returns.
 * Throws PrivilegeError if the drop is impossible.
 */
export function dropPrivileges(options: DropOptions = {}): DropResult {
  const inStage2 = consumeStage2() !== null;
  const now = currentCredentials();
  const target = privilegeTarget(options, now);
  const plan = planPrivileges(now, target, inStage2);
  if (plan.action === "fail") throw new PrivilegeError(plan.message);
  if (plan.action === "reexec") reexec(target, plan.keepRawio, options.keepFds ?? {});
  const warnings = [...plan.warnings];
  if (!inStage2 && options.reexecAnyway) {
    try {
      execSelf(prepareSelfExec(options.keepFds ?? {}));
    } catch (e) {
      warnings.push(
        `cannot re-execute to block SIGUSR1 on every thread (${(e as Error).message}); ` +
          "it is kept at SIG_IGN instead",
      );
    }
  }
  setNoNewPrivs();
  setDumpable(false);
  const caps = capGet();
  const note = userNote(options, now.uid.effective);
  return {
    mode: inStage2 ? "reexecuted" : "in-place",
    uid: now.uid.effective,
    gid: now.gid.effective,
    rawio: (caps.effective & RAWIO) !== 0n,
    ...(warnings.length > 0 ? { warning: warnings.join("; ") } : {}),
    ...(note !== null ? { note } : {}),
  };
}

/** Without `-u`: say which user the daemon ended with and why (after the drop). */
function userNote(options: DropOptions, uid: number): string | null {
  const name = options.defaultUser;
  if (options.user !== undefined || name === undefined) return null;
  if (uid === 0) {
    return `no -u given and no "${name}" user exists: uid 0 kept (without capabilities ` +
      `but CAP_SYS_RAWIO); create the user (the package does) or give -u`;
  }
  return userByName(name)?.uid === uid ? `no -u given: running as the default user ${name}` : null;
}

/** What execve(2) of this same program needs, read from /proc/self. */
interface SelfExec {
  exe: string;
  argv: string[];
  env: string[];
  cwd: string;
  keepFds: Record<string, number>;
}

function prepareSelfExec(keepFds: Record<string, number>): SelfExec {
  const cmdline = readSmallFile("/proc/self/cmdline", 1 << 20);
  const environ = readSmallFile("/proc/self/environ", 1 << 20);
  const cwd = readLink("/proc/self/cwd") ?? "/";
  // The real path keeps the process name ("deno"); /proc/self/exe would rename it "exe".
  const self = readLink("/proc/self/exe");
  const exe = self !== null && !self.endsWith(" (deleted)") ? self : "/proc/self/exe";
  if (cmdline === null || environ === null) {
    throw new PrivilegeError("cannot read /proc/self/cmdline or /proc/self/environ");
  }
  const argv = splitNul(cmdline);
  const env = stage2Environment(splitNul(environ), { cwd, fds: keepFds });
  return { exe, argv, env, cwd, keepFds };
}

/** Same binary, same arguments, from the directory the process started in; throws if execve fails. */
function execSelf(p: SelfExec): never {
  const fds = Object.values(p.keepFds);
  for (const fd of fds) setCloexec(fd, false);
  try {
    if (startCwd !== null && startCwd !== p.cwd) changeDirectory(startCwd);
    return execve(p.exe, p.argv, p.env);
  } finally {
    for (const fd of fds) if (isOpenFd(fd)) setCloexec(fd, true);
  }
}

function reexec(
  target: PrivilegeTarget,
  keepRawio: boolean,
  keepFds: Record<string, number>,
): never {
  // Everything read from /proc/self must be read before the uid changes.
  const self = prepareSelfExec(keepFds);

  const now = capGet();
  const rawio = keepRawio ? RAWIO : 0n;
  // 1. Empty the bounding set; inheritable first (pI' must stay within pI ∪ bset).
  if (has(now.effective, Cap.SETPCAP)) {
    capSet({ ...now, inheritable: now.inheritable | rawio });
    const last = lastCap();
    for (let c = 0; c <= last; c++) if (inBoundingSet(c)) dropFromBoundingSet(c);
  }
  // 2. Ids; glibc broadcasts these three calls to every thread.
  setKeepCaps(true);
  if (has(now.effective, Cap.SETGID)) {
    setSupplementaryGroups([]);
    setAllGids(target.gid);
  }
  if (has(now.effective, Cap.SETUID)) setAllUids(target.uid);
  // 3. This thread: exactly CAP_SYS_RAWIO, ambient so that it survives execve
  //    (the kernel clears ambient on a 0 -> non-0 uid change, hence after it).
  capSet({ effective: rawio, permitted: rawio, inheritable: rawio });
  clearAmbient();
  if (keepRawio) raiseAmbient(Cap.SYS_RAWIO);
  setKeepCaps(false);
  setNoNewPrivs();
  // 4. Same binary, same arguments, from the directory the process started in.
  return execSelf(self);
}
