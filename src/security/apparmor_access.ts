/**
 * The AppArmor access check's I/O edge: reads the kernel's signs of AppArmor,
 * the client's label, the device's node names from sysfs and the kernel's
 * answer to a file-permission query, and hands them to the pure
 * {@linkcode decideApparmorAccess}.
 *
 * ```ts
 * const checker = createApparmorChecker({ mode: "auto", unconfined: "allow" });
 * log.info(checker.describe());               // once at start-up
 * const label = checker.peerLabel(peer);      // once per connection
 * const d = checker.check({ label, kind, major, minor });
 * if (d.wouldDeny) log.warn(formatApparmorAudit(d, peer));
 * if (d.verdict === "deny") reply CHECK CONDITION 05/20/02, no SG_IO
 * ```
 *
 * @module
 */

import {
  type ApparmorDecision,
  type ApparmorLabel,
  type ApparmorMode,
  type ApparmorState,
  decideApparmorAccess,
  decideApparmorState,
  deviceNodePaths,
  encodeFileQuery,
  type KernelApparmorFacts,
  parseApparmorLabel,
  parseQueryAnswer,
  type QueryAnswer,
  type UnconfinedPolicy,
} from "./apparmor_policy.ts";
import {
  APPARMOR_ENABLED_PATH,
  LSM_LIST_PATH,
  queryApparmor,
  readOptional,
  readProcessLabel,
} from "../../ffi/apparmorfs.ts";

/** The kernel calls the checker makes (the real ones, or fakes in tests). */
export interface ApparmorBackend {
  /** The kernel's signs of AppArmor. */
  kernelFacts(): KernelApparmorFacts;
  /** One `.access` transaction: the query bytes in, the answer text out; throws on failure. */
  query(bytes: Uint8Array): string;
  /** A process's label text; throws when unreadable. */
  processLabel(pid: number): string;
  /** A small sysfs file's text, or null when absent (paths under /sys). */
  readSysfs(path: string): string | null;
}

/** The real kernel. */
export const KERNEL_BACKEND: ApparmorBackend = Object.freeze({
  kernelFacts: (): KernelApparmorFacts => ({
    moduleEnabled: readOptional(APPARMOR_ENABLED_PATH),
    lsmList: readOptional(LSM_LIST_PATH),
  }),
  query: (bytes: Uint8Array): string => queryApparmor(bytes),
  processLabel: (pid: number): string => readProcessLabel(pid),
  readSysfs: (path: string): string | null => readOptional(path),
});

/** Options of {@linkcode createApparmorChecker}. */
export interface ApparmorCheckerOptions {
  /**
   * "auto" (default): on where the kernel runs AppArmor (and then it must be
   * able to query it, else creation throws); "require": also throws where
   * AppArmor is not running; "off": never check.
   */
  mode?: ApparmorMode;
  /** Clients AppArmor does not confine: "allow" (default, as without the check) or "refuse". */
  unconfined?: UnconfinedPolicy;
  /** The kernel (default {@linkcode KERNEL_BACKEND}). */
  backend?: ApparmorBackend;
  /** Where sysfs is (default "/sys"; tests point it at a fake tree). */
  sysfsRoot?: string;
}

/** One request to check. */
export interface ApparmorRequest {
  /** The client's label, from {@linkcode ApparmorChecker.peerLabel}. */
  label: ApparmorLabel | { error: string };
  /** The passed fd's file type. */
  kind: "block" | "char";
  /** The device's st_rdev. */
  major: number;
  minor: number;
}

/** The per-request AppArmor check. */
export interface ApparmorChecker {
  readonly state: ApparmorState;
  /** One start-up line. */
  describe(): string;
  /**
   * The client's label: SO_PEERSEC's text when the socket carries an
   * AppArmor label, else the connecting process's
   * `/proc/PID/attr/apparmor/current`, read at accept time.
   */
  peerLabel(peer: { pid: number; context: string | null }): ApparmorLabel | { error: string };
  /** Decide one request; never throws. */
  check(request: ApparmorRequest): ApparmorDecision;
}

function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** The trial query at start-up: the unconfined label on /dev/null. */
const PROBE = { label: "unconfined", path: "/dev/null" };

/**
 * Create the checker: decide from the kernel whether AppArmor runs and make
 * one trial query. Throws, with the reason, when AppArmor runs but cannot be
 * queried (auto and require), or does not run (require).
 */
export function createApparmorChecker(options: ApparmorCheckerOptions = {}): ApparmorChecker {
  const mode = options.mode ?? "auto";
  if (mode !== "auto" && mode !== "off" && mode !== "require") {
    throw new TypeError(`AppArmor check mode "${mode}" is not one of auto, off, require`);
  }
  const unconfined = options.unconfined ?? "allow";
  if (unconfined !== "allow" && unconfined !== "refuse") {
    throw new TypeError(`--apparmor-unconfined "${unconfined}" is not one of allow, refuse`);
  }
  const backend = options.backend ?? KERNEL_BACKEND;
  let state: ApparmorState;
  if (mode === "off") {
    state = decideApparmorState(mode, { kernel: { moduleEnabled: null, lsmList: null } });
  } else {
    const kernel = backend.kernelFacts();
    let probe: { ok: true } | { error: string } | undefined;
    try {
      parseQueryAnswer(backend.query(encodeFileQuery(PROBE.label, PROBE.path)));
      probe = { ok: true };
    } catch (e) {
      probe = { error: errorText(e) };
    }
    state = decideApparmorState(mode, { kernel, probe });
  }
  if (state.kind === "unusable") {
    throw new Error(
      mode === "require"
        ? `AppArmor access check required but not possible: ${state.why}`
        : `AppArmor access check not possible while AppArmor is active: ${state.why}; ` +
          "refusing to start (fix the cause, or pass --apparmor=off to run without the check)",
    );
  }
  if (mode === "require" && state.kind !== "on") {
    throw new Error(`AppArmor access check required but not possible: ${state.why}`);
  }
  return new Checker(state, unconfined, backend, options.sysfsRoot ?? "/sys");
}

class Checker implements ApparmorChecker {
  readonly state: ApparmorState;
  #unconfined: UnconfinedPolicy;
  #backend: ApparmorBackend;
  #sysfs: string;

  constructor(
    state: ApparmorState,
    unconfined: UnconfinedPolicy,
    backend: ApparmorBackend,
    sysfs: string,
  ) {
    this.state = state;
    this.#unconfined = unconfined;
    this.#backend = backend;
    this.#sysfs = sysfs;
  }

  describe(): string {
    const s = this.state;
    if (s.kind === "off") return `AppArmor access check: off: ${s.why}`;
    if (s.kind === "unusable") return `AppArmor access check: failing closed: ${s.why}`;
    return `AppArmor access check: on (unconfined clients ${
      this.#unconfined === "allow" ? "allowed" : "refused"
    })`;
  }

  peerLabel(peer: { pid: number; context: string | null }): ApparmorLabel | { error: string } {
    if (this.state.kind !== "on") return { error: "not read" };
    try {
      // SO_PEERSEC carries AppArmor's label where the kernel mediates unix
      // sockets (and AppArmor is the LSM that answers it); Debian 12's 6.1
      // kernel gives none, so the connecting process's label is read instead
      const text = peer.context ?? this.#backend.processLabel(peer.pid);
      return parseApparmorLabel(text);
    } catch (e) {
      return { error: `label of pid ${peer.pid} unreadable: ${errorText(e)}` };
    }
  }

  check(request: ApparmorRequest): ApparmorDecision {
    if (this.state.kind !== "on") {
      return decideApparmorAccess({
        state: this.state,
        unconfined: this.#unconfined,
        label: request.label,
        paths: { error: "not read" },
      });
    }
    let paths: string[] | { error: string };
    try {
      const sys = `${this.#sysfs}/dev/${request.kind}/${request.major}:${request.minor}`;
      paths = deviceNodePaths({
        uevent: this.#backend.readSysfs(`${sys}/uevent`),
        dmName: request.kind === "block" ? this.#backend.readSysfs(`${sys}/dm/name`) : null,
      });
    } catch (e) {
      paths = { error: `device ${request.major}:${request.minor}: ${errorText(e)}` };
    }
    const label = request.label;
    const answers: (QueryAnswer | { error: string })[] = [];
    if (!("error" in label) && label.kind === "confined" && Array.isArray(paths)) {
      for (const path of paths) {
        let a: QueryAnswer | { error: string };
        try {
          a = parseQueryAnswer(this.#backend.query(encodeFileQuery(label.name, path)));
        } catch (e) {
          a = { error: errorText(e) };
        }
        answers.push(a);
        const d = decideApparmorAccess({
          state: this.state,
          unconfined: this.#unconfined,
          label,
          paths,
          answers,
        });
        if (d.reason === "allowed") return d;
      }
    }
    return decideApparmorAccess({
      state: this.state,
      unconfined: this.#unconfined,
      label,
      paths,
      answers,
    });
  }
}
