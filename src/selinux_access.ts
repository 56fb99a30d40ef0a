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
  type ContextRead,
  decideAccess,
  type DeviceKind,
  type PeerCredentials,
  type PeerPolicy,
  type PeerPolicyOptions,
  resolvePeerPolicy,
  securityClassFor,
  type SelinuxState,
} from "./access_policy.ts";
import { type AvDecision, openLibselinux, SELINUX_AVD_FLAGS_PERMISSIVE } from "../ffi/selinux.ts";
import { peerSecurityContext, readSmallFile, statPath } from "../ffi/libc.ts";
import { formatFields } from "./audit.ts";

/** The libselinux calls the checker uses (ffi/selinux.ts `Libselinux`, or a fake in tests). */
export interface SelinuxBackend {
  isEnabled(): boolean;
  getEnforce(): boolean;
  peerContext(fd: number): string;
  fileContext(fd: number): string;
  securityClass(name: string): number;
  avPerm(tclass: number, name: string): number;
  computeAv(scon: string, tcon: string, options: { tclass: number; requested: number }): AvDecision;
  close?(): void;
}

/** Options of {@linkcode createAccessChecker}. */
export interface AccessCheckerOptions {
  /**
   * "auto" (default): check when SELinux is enabled; off otherwise.
   * "off": never check. "require": like auto, but throw at creation unless
   * the check can run (SELinux enabled and libselinux loaded).
   */
  mode?: "auto" | "off" | "require";
  /** libselinux path (default ffi/selinux.ts `LIBSELINUX_PATH`). */
  libraryPath?: string;
  /** Use this instead of loading libselinux (tests). */
  backend?: SelinuxBackend;
  /**
   * Whether SELinux is active in the kernel, for the case that libselinux
   * cannot be loaded (default: does /sys/fs/selinux/enforce exist).
   */
  kernelSelinuxActive?: () => boolean;
}

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
  /** What the checker found at creation. */
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

function defaultKernelSelinuxActive(): boolean {
  try {
    return statPath("/sys/fs/selinux/enforce") !== null;
  } catch {
    return true; // it exists but cannot be stat'ed: assume active (fail closed)
  }
}

/**
 * Create the checker: load libselinux (unless a backend is given) and find
 * out whether SELinux is on. Throws only in mode "require" when the check
 * cannot run, with a message saying why.
 */
export function createAccessChecker(options: AccessCheckerOptions = {}): AccessChecker {
  const mode = options.mode ?? "auto";
  if (mode !== "auto" && mode !== "off" && mode !== "require") {
    throw new TypeError(`SELinux check mode "${mode}" is not one of auto, off, require`);
  }
  let backend: SelinuxBackend | null = null;
  let state: SelinuxState;
  if (mode === "off") {
    state = { kind: "off", why: "disabled by option" };
  } else {
    let loadError: string | null = null;
    let notFound = false;
    if (options.backend) {
      backend = options.backend;
    } else {
      const load = openLibselinux(options.libraryPath);
      if (load.ok) backend = load.lib;
      else {
        loadError = load.message;
        notFound = load.notFound;
      }
    }
    if (backend === null) {
      const active = (options.kernelSelinuxActive ?? defaultKernelSelinuxActive)();
      state = active
        ? {
          kind: "unusable",
          why: `SELinux is active but libselinux cannot be loaded (${loadError})`,
        }
        : { kind: "off", why: notFound ? "libselinux not found" : `libselinux: ${loadError}` };
    } else if (!backend.isEnabled()) {
      state = { kind: "off", why: "SELinux disabled" };
      backend.close?.();
      backend = null;
    } else {
      state = { kind: "on", enforcing: readEnforce(backend) };
    }
    if (mode === "require" && state.kind !== "on") {
      backend?.close?.();
      throw new Error(`SELinux access check required but not possible: ${state.why}`);
    }
  }
  return new Checker(state, backend);
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

  constructor(state: SelinuxState, backend: SelinuxBackend | null) {
    this.state = state;
    this.#backend = backend;
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
    return `SELinux access check: on (${mode})`;
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
      inputs.av = queryAv(b, {
        scon: inputs.peer.context,
        tcon: inputs.file.context,
        tclass,
      });
    }
    return decideAccess(inputs);
  }

  close(): void {
    this.#backend?.close?.();
    this.#backend = null;
  }
}

function readFileContext(b: SelinuxBackend, fd: number): ContextRead {
  try {
    return { context: b.fileContext(fd) };
  } catch (e) {
    return { error: errorText(e) };
  }
}

function queryAv(
  b: SelinuxBackend,
  q: { scon: string; tcon: string; tclass: string },
): AvAnswer {
  try {
    const cls = b.securityClass(q.tclass);
    const perm = b.avPerm(cls, "ioctl");
    const avd = b.computeAv(q.scon, q.tcon, { tclass: cls, requested: perm });
    return {
      allowed: (avd.allowed & perm) === perm,
      domainPermissive: (avd.flags & SELINUX_AVD_FLAGS_PERMISSIVE) !== 0,
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
