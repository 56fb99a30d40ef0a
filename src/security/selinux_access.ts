/**
 * The SELinux access check's I/O edge: reads contexts, the enforcing mode and
 * the kernel's access decision through ffi/selinux.ts, and hands them to the
 * pure {@linkcode decideAccess}. Also loads the peer policy's account files.
 *
 * Usage (per process, or per Worker: a checker holds a loaded library):
 *
 * ```ts
 * const checker = createAccessChecker({ mode: "auto" });
 * log.info(checker.describe());                 // once at start-up
 * const peerContext = checker.peerContext(connFd); // once per connection
 * const d = checker.check({ peerContext, fd, deviceKind, peer, major, minor });
 * if (d.wouldDeny) log.warn(formatAvc(d, request));
 * if (d.verdict === "deny") reply CHECK CONDITION 05/20/02, no SG_IO
 * ```
 *
 * @module
 */

import {
  type AccessDecision,
  type AccessInputs,
  type AvAnswer,
  CHECKED_IOCTL_COMMAND,
  type ContextRead,
  decideAccess,
  decideSelinuxState,
  type DeviceKind,
  type KernelSelinuxFacts,
  type PeerCredentials,
  type PeerPolicy,
  type PeerPolicyOptions,
  resolvePeerPolicy,
  securityClassFor,
  selinuxActive,
  type SelinuxState,
  type XpermAnswer,
} from "./access_policy.ts";
import {
  type AvDecision,
  openLibselinux,
  SELINUX_AVD_FLAGS_PERMISSIVE,
} from "../../ffi/selinux.ts";
import {
  readLoadedPolicy,
  readSelfContext,
  SELINUX_MAGIC,
  SELINUXFS_PATH,
  statFilesystem,
} from "../../ffi/selinuxfs.ts";
import { Errno, SysError } from "../../ffi/errno.ts";
import { readSmallFile } from "../../ffi/files.ts";
import { peerSecurityContext } from "../../ffi/sockets.ts";
import { formatFields } from "./audit.ts";
import { type BinaryPolicy, decideIoctlXperm, parseBinaryPolicy } from "./selinux_policy.ts";

/** The libselinux calls the checker uses (ffi/selinux.ts `Libselinux`, or a fake in tests). */
export interface SelinuxBackend {
  /**
   * libselinux's `is_selinux_enabled()`. Not consulted: it answers 0 while
   * the kernel enforces (read-only selinuxfs, no /etc/selinux/config); the
   * kernel's own signs decide ({@linkcode readKernelSelinuxFacts}).
   */
  isEnabled?(): boolean;
  /** `security_getenforce()`: true if enforcing; throws if unreadable. */
  getEnforce(): boolean;
  /** `getpeercon_raw(fd)`. */
  peerContext(fd: number): string;
  /** `fgetfilecon_raw(fd)`. */
  fileContext(fd: number): string;
  /** `string_to_security_class(name)`; throws if unknown or selinuxfs is unusable. */
  securityClass(name: string): number;
  /** `string_to_av_perm(tclass, name)`. */
  avPerm(tclass: number, name: string): number;
  /** `security_compute_av_flags_raw()`: the kernel's decision, its flags and policy seqno. */
  computeAv(scon: string, tcon: string, options: { tclass: number; requested: number }): AvDecision;
  /** Unload. */
  close?(): void;
}

/** Options of {@linkcode createAccessChecker}. */
export interface AccessCheckerOptions {
  /**
   * "auto" (default): off when the kernel shows no SELinux; when it does, the
   * check must be able to run, else creation throws (so "require" wherever
   * SELinux is active). "require": like auto, and also throws when the kernel
   * has no SELinux. "off": never check, load nothing.
   */
  mode?: "auto" | "off" | "require";
  /** libselinux path (default ffi/selinux.ts `LIBSELINUX_PATH`). */
  libraryPath?: string;
  /**
   * Use this instead of loading libselinux (tests). A backend stands for the
   * kernel: unless `kernelFacts` and `readPolicy` are given too, SELinux
   * counts as active ({@linkcode SIMULATED_KERNEL_FACTS}) and the policy as
   * one without ioctl extended-permission rules.
   */
  backend?: SelinuxBackend;
  /**
   * The kernel's signs of SELinux (default: read by
   * {@linkcode readKernelSelinuxFacts}; with `backend`:
   * {@linkcode SIMULATED_KERNEL_FACTS}).
   */
  kernelFacts?: () => KernelSelinuxFacts;
  /** The loaded policy image (default: ffi/selinuxfs.ts `readLoadedPolicy`). */
  readPolicy?: () => Uint8Array;
}

/** What a test backend stands for unless told otherwise: SELinux active, selinuxfs read-write. */
export const SIMULATED_KERNEL_FACTS: KernelSelinuxFacts = Object.freeze({
  selinuxfs: Object.freeze({ kind: "mounted", readOnly: false }),
  selfContext: Object.freeze({ context: "system_u:system_r:prhelperd_t:s0" }),
});

/** One request to check. */
export interface AccessRequest {
  /** The client's context, from {@linkcode AccessChecker.peerContext} at accept time. */
  peerContext: ContextRead;
  /** The passed device fd. */
  fd: number;
  /** Its file type (fstat). */
  deviceKind: DeviceKind;
  /** The client's SO_PEERCRED. */
  peer: PeerCredentials;
  /** The device's st_rdev major and minor. */
  major: number;
  minor: number;
}

/** The per-request SELinux check. */
export interface AccessChecker {
  /** What the checker found at creation ("on" or "off"; "unusable" makes creation throw). */
  readonly state: SelinuxState;
  /** One start-up line, e.g. "SELinux access check: on (enforcing)". */
  describe(): string;
  /** The client's security context (SO_PEERSEC), to read once per connection. */
  peerContext(connFd: number): ContextRead;
  /** Decide one request. Never throws: failures become fail-closed decisions. */
  check(request: AccessRequest): AccessDecision;
  /** Release the library. */
  close(): void;
}

function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/**
 * The kernel's signs of SELinux for this process: `statfs` of
 * /sys/fs/selinux and /proc/self/attr/current. Never throws.
 */
export function readKernelSelinuxFacts(): KernelSelinuxFacts {
  let selinuxfs: KernelSelinuxFacts["selinuxfs"];
  try {
    const st = statFilesystem(SELINUXFS_PATH);
    selinuxfs = st === null
      ? { kind: "absent" }
      : st.type === SELINUX_MAGIC
      ? { kind: "mounted", readOnly: st.readOnly }
      : { kind: "not-mounted" };
  } catch (e) {
    selinuxfs = { kind: "error", error: errorText(e) };
  }
  let selfContext: ContextRead;
  try {
    selfContext = { context: readSelfContext() };
  } catch (e) {
    selfContext = { error: errorText(e) };
  }
  return { selinuxfs, selfContext };
}

/** The kernel allows one reader of /sys/fs/selinux/policy at a time (EBUSY otherwise). */
const POLICY_READ_ATTEMPTS = 3;

function readPolicyWithRetry(read: () => Uint8Array): Uint8Array {
  for (let attempt = 1;; attempt++) {
    try {
      return read();
    } catch (e) {
      if (!(e instanceof SysError && e.errno === Errno.EBUSY) || attempt >= POLICY_READ_ATTEMPTS) {
        throw e;
      }
    }
  }
}

/**
 * Create the checker: decide from the kernel whether SELinux is active, load
 * libselinux (unless a backend is given), make one trial access query and
 * read the loaded policy. Throws, with the reason, when the check cannot run
 * although SELinux is active (modes auto and require), or when SELinux is
 * not active in mode require.
 */
export function createAccessChecker(options: AccessCheckerOptions = {}): AccessChecker {
  const mode = options.mode ?? "auto";
  if (mode !== "auto" && mode !== "off" && mode !== "require") {
    throw new TypeError(`SELinux check mode "${mode}" is not one of auto, off, require`);
  }
  if (mode === "off") return new Checker({ kind: "off", why: "disabled by option" }, null);

  const kernel = options.kernelFacts?.() ??
    (options.backend ? SIMULATED_KERNEL_FACTS : readKernelSelinuxFacts());
  // a test backend without a policy image stands for a policy without xperm rules (null)
  const readPolicy = options.readPolicy ??
    (options.backend ? null : () => readLoadedPolicy());
  let backend: SelinuxBackend | null = null;
  let state: SelinuxState;
  let policy: { seqno: number; policy: BinaryPolicy } | null = null;
  if (!selinuxActive(kernel).active) {
    state = decideSelinuxState({ kernel, library: { loaded: true } });
  } else {
    let library: { loaded: true } | { loaded: false; error: string } = { loaded: true };
    if (options.backend) {
      backend = options.backend;
    } else {
      const load = openLibselinux(options.libraryPath);
      if (load.ok) backend = load.lib;
      else library = { loaded: false, error: load.message };
    }
    let probe: { ok: true } | { error: string } | undefined;
    let policyRead: { ok: true } | { error: string } | undefined;
    let enforcing: boolean | { error: string } | undefined;
    if (backend !== null) {
      const self = "context" in kernel.selfContext ? kernel.selfContext.context : null;
      const trial = self === null
        ? { error: `this process's context is unreadable (${errorOf(kernel.selfContext)})` }
        : rawAv(backend, { scon: self, tcon: self, tclass: "blk_file" });
      probe = "error" in trial ? trial : { ok: true };
      if (!("error" in trial)) {
        try {
          policy = readPolicy === null
            ? null
            : { seqno: trial.seqno, policy: parseBinaryPolicy(readPolicyWithRetry(readPolicy)) };
          policyRead = { ok: true };
        } catch (e) {
          policyRead = { error: errorText(e) };
        }
      }
      enforcing = readEnforce(backend);
    }
    state = decideSelinuxState({ kernel, library, probe, policy: policyRead, enforcing });
  }
  if (state.kind === "unusable" || (mode === "require" && state.kind !== "on")) {
    backend?.close?.();
    throw new Error(
      mode === "require" || state.kind !== "unusable"
        ? `SELinux access check required but not possible: ${state.why}`
        : `SELinux access check not possible while SELinux is active: ${state.why}; ` +
          "refusing to start (fix the cause, or pass --selinux=off to run without the check)",
    );
  }
  if (state.kind === "off") {
    backend?.close?.();
    backend = null;
  }
  return new Checker(state, backend, { readPolicy, policy });
}

function errorOf(read: ContextRead): string {
  return "error" in read ? read.error : "";
}

function readEnforce(backend: SelinuxBackend): boolean | { error: string } {
  try {
    return backend.getEnforce();
  } catch (e) {
    return { error: errorText(e) };
  }
}

class Checker implements AccessChecker {
  readonly state: SelinuxState;
  #backend: SelinuxBackend | null;
  /** null: a test backend's policy without ioctl extended-permission rules. */
  #readPolicy: (() => Uint8Array) | null;
  #policy: { seqno: number; policy: BinaryPolicy } | null;

  constructor(
    state: SelinuxState,
    backend: SelinuxBackend | null,
    options: {
      readPolicy?: (() => Uint8Array) | null;
      policy?: { seqno: number; policy: BinaryPolicy } | null;
    } = {},
  ) {
    this.state = state;
    this.#backend = backend;
    this.#readPolicy = options.readPolicy === undefined
      ? () => readLoadedPolicy()
      : options.readPolicy;
    this.#policy = options.policy ?? null;
  }

  describe(): string {
    const s = this.state;
    if (s.kind === "off") return `SELinux access check: off: ${s.why}`;
    if (s.kind === "unusable") {
      return `SELinux access check: on, failing closed: ${s.why}; every request is refused`;
    }
    const enforcing = this.#backend ? readEnforce(this.#backend) : s.enforcing;
    const mode = typeof enforcing === "boolean"
      ? (enforcing ? "enforcing" : "permissive")
      : `enforcing mode unreadable (${enforcing.error}): requests are refused`;
    const p = this.#policy?.policy;
    const rules = p === undefined
      ? ""
      : `, policy version ${p.version} with ${
        p.ioctlXperms.length === 0 ? "no" : p.ioctlXperms.length
      } ioctl extended-permission rules`;
    return `SELinux access check: on (${mode})${rules}`;
  }

  peerContext(connFd: number): ContextRead {
    try {
      if (this.#backend) return { context: this.#backend.peerContext(connFd) };
      const ctx = peerSecurityContext(connFd);
      return ctx === null ? { error: "the socket carries no security context" } : {
        context: ctx,
      };
    } catch (e) {
      return { error: errorText(e) };
    }
  }

  check(request: AccessRequest): AccessDecision {
    const b = this.#backend;
    if (this.state.kind !== "on" || b === null) {
      return decideAccess({
        selinux: this.state,
        peer: request.peerContext,
        file: { error: "not read" },
        deviceKind: request.deviceKind,
      });
    }
    const inputs: AccessInputs = {
      selinux: { kind: "on", enforcing: readEnforce(b) },
      peer: request.peerContext,
      file: readFileContext(b, request.fd),
      deviceKind: request.deviceKind,
    };
    const tclass = securityClassFor(request.deviceKind);
    if ("context" in inputs.peer && "context" in inputs.file && tclass !== null) {
      inputs.av = this.#queryAv(b, {
        scon: inputs.peer.context,
        tcon: inputs.file.context,
        tclass,
      });
    }
    return decideAccess(inputs);
  }

  /** The kernel's answer for `ioctl`, and the loaded policy's for SG_IO's ioctl command. */
  #queryAv(b: SelinuxBackend, q: { scon: string; tcon: string; tclass: string }): AvAnswer {
    const raw = rawAv(b, q);
    if ("error" in raw) return raw;
    let xperm: XpermAnswer;
    try {
      xperm = this.#xperm(raw.seqno, q);
    } catch (e) {
      return { error: `ioctl extended permissions could not be evaluated: ${errorText(e)}` };
    }
    return { allowed: raw.allowed, domainPermissive: raw.domainPermissive, xperm };
  }

  /**
   * The extended-permission decision, from the policy image of the answer's
   * policy sequence number (re-read when a policy load or a boolean change
   * moved it).
   */
  #xperm(seqno: number, q: { scon: string; tcon: string; tclass: string }): XpermAnswer {
    const read = this.#readPolicy;
    if (read === null) return { kind: "no-rules" };
    if (this.#policy === null || this.#policy.seqno !== seqno) {
      this.#policy = null;
      this.#policy = { seqno, policy: parseBinaryPolicy(readPolicyWithRetry(read)) };
    }
    const d = decideIoctlXperm(this.#policy.policy, {
      sourceType: contextType(q.scon),
      targetType: contextType(q.tcon),
      tclass: q.tclass,
      command: CHECKED_IOCTL_COMMAND,
    });
    return d.kind === "denied" ? { kind: "denied", why: d.why } : { kind: d.kind };
  }

  close(): void {
    this.#backend?.close?.();
    this.#backend = null;
  }
}

/** The type field of a context (`user:role:type[:level]`); throws naming a malformed context. */
function contextType(context: string): string {
  const parts = context.split(":");
  if (parts.length < 3 || parts[2] === "") {
    throw new RangeError(`context "${context}" has no type field`);
  }
  return parts[2];
}

function readFileContext(b: SelinuxBackend, fd: number): ContextRead {
  try {
    return { context: b.fileContext(fd) };
  } catch (e) {
    return { error: errorText(e) };
  }
}

/** `security_compute_av_flags_raw` for `ioctl`: allowed, permissive domain, policy seqno. */
function rawAv(
  b: SelinuxBackend,
  q: { scon: string; tcon: string; tclass: string },
): { allowed: boolean; domainPermissive: boolean; seqno: number } | { error: string } {
  try {
    const cls = b.securityClass(q.tclass);
    const perm = b.avPerm(cls, "ioctl");
    const avd = b.computeAv(q.scon, q.tcon, { tclass: cls, requested: perm });
    return {
      allowed: (avd.allowed & perm) === perm,
      domainPermissive: (avd.flags & SELINUX_AVD_FLAGS_PERMISSIVE) !== 0,
      seqno: avd.seqno,
    };
  } catch (e) {
    return { error: errorText(e) };
  }
}

/**
 * An AVC-like line for a decision (null when the check was off), in the
 * kernel's shape plus the daemon's verdict and reason:
 *
 * `prhelperd avc: denied { ioctl } for pid=812 uid=107 gid=107 dev=8:0
 *  scontext=… tcontext=… tclass=blk_file permissive=0 mode=enforcing
 *  verdict=deny reason=denied`
 *
 * `ioctlcmd=0x2285` follows `dev=` (as in the kernel's line) when the policy
 * has ioctl extended-permission rules for the check.
 */
export function formatAvc(decision: AccessDecision, request: AccessRequest): string | null {
  const avc = decision.avc;
  if (avc === undefined) return null;
  const what = decision.wouldDeny ? "denied" : "granted";
  return `prhelperd avc: ${what} { ${avc.perm} } for ` + formatFields({
    pid: request.peer.pid,
    uid: request.peer.uid,
    gid: request.peer.gid,
    dev: `${request.major}:${request.minor}`,
    ioctlcmd: avc.ioctlcmd,
    scontext: avc.scontext,
    tcontext: avc.tcontext,
    tclass: avc.tclass,
    permissive: decision.verdict === "allow" && decision.wouldDeny ? 1 : 0,
    mode: avc.mode,
    verdict: decision.verdict,
    reason: decision.reason,
    detail: decision.detail,
  });
}

/**
 * Build the peer policy, resolving names from /etc/passwd and /etc/group
 * (read through libc: the daemon's permission set has no read access there).
 * Throws if a name is unknown.
 */
export function loadPeerPolicy(options: PeerPolicyOptions): PeerPolicy {
  const need = (options.users?.some((u) => !/^\d+$/.test(u.trim())) ?? false) ||
    (options.groups?.some((g) => !/^\d+$/.test(g.trim())) ?? false);
  const db = need
    ? {
      passwd: readSmallFile("/etc/passwd", 1 << 22) ?? "",
      group: readSmallFile("/etc/group", 1 << 22) ?? "",
    }
    : { passwd: "", group: "" };
  return resolvePeerPolicy(options, db);
}
