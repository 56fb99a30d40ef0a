/**
 * Access decisions, as pure functions of their inputs (no I/O here).
 *
 * Two policies live here:
 *
 * - {@linkcode decideSelinuxState}: at start-up, whether the kernel runs
 *   SELinux (decided from the kernel's own signs, never from libselinux's
 *   `is_selinux_enabled()`) and whether the daemon can ask it.
 * - {@linkcode decideAccess}: the per-request SELinux check. Given what the
 *   I/O edge (src/security/selinux_access.ts) read — is SELinux on, is it enforcing,
 *   the client's and the device node's contexts, the kernel's access-vector
 *   answer for `ioctl` on `blk_file`/`chr_file` and the loaded policy's
 *   ioctl extended permissions for SG_IO — it returns allow or deny, whether
 *   the policy would have denied (for permissive-mode logging), a reason code
 *   and the fields of an AVC-like log line.
 * - {@linkcode decidePeer}: the peer-credential policy applied at accept time
 *   to SO_PEERCRED {pid, uid, gid}, with {@linkcode resolvePeerPolicy} turning
 *   user and group names into ids from passwd/group text.
 *
 * @module
 */

import type { FileKind } from "../../ffi/files.ts";

// ---------------------------------------------------------------- SELinux

/** The sense data for a refused request: ILLEGAL REQUEST, ACCESS DENIED - NO ACCESS RIGHTS (05/20/02). */
export const ACCESS_DENIED_SENSE: { key: number; asc: number; ascq: number } = Object.freeze({
  key: 0x05,
  asc: 0x20,
  ascq: 0x02,
});

/** The permission the daemon checks on behalf of the client. */
export const CHECKED_PERMISSION = "ioctl";

/** The kind of file a passed fd refers to (the `kind` of ffi/files.ts `FileStat`). */
export type DeviceKind = FileKind;

/** A security context as read, or why it could not be read. */
export type ContextRead = { context: string } | { error: string };

/**
 * The extended-permission part of the kernel's ioctl decision for SG_IO, from
 * the loaded policy (src/security/selinux_policy.ts `decideIoctlXperm`).
 */
export type XpermAnswer =
  /** No `allowxperm`/`auditallowxperm`/`dontauditxperm` rule for (source, target, class). */
  | { kind: "no-rules" }
  /** Such rules exist and list the command. */
  | { kind: "allowed" }
  /** Such rules exist and do not list the command: the kernel refuses the ioctl. */
  | { kind: "denied"; why: string };

/** The ioctl command the daemon issues for the client, as the kernel would check it (SG_IO). */
export const CHECKED_IOCTL_COMMAND = 0x2285;

/** The kernel's access-vector answer, or why it could not be obtained. */
export type AvAnswer =
  | {
    /** The requested permission is in the `allowed` vector. */
    allowed: boolean;
    /** `SELINUX_AVD_FLAGS_PERMISSIVE`: the source domain is permissive. */
    domainPermissive: boolean;
    /**
     * The ioctl extended permissions for SG_IO. The daemon's checker always
     * sets it; absent only in what-if queries that do not read the policy
     * (`prhelperd check --as`), where `ioctl` alone is judged.
     */
    xperm?: XpermAnswer;
  }
  | { error: string };

/** The state of SELinux as the I/O edge found it. */
export type SelinuxState =
  /** The check is switched off (option, no SELinux, or no libselinux and no SELinux). */
  | { kind: "off"; why: string }
  /**
   * SELinux is active in the kernel but the daemon cannot ask it (libselinux
   * missing, selinuxfs read-only or not mounted, the query or the policy
   * refused): fail closed. The daemon does not start in this state (modes
   * auto and require); every request would be refused.
   */
  | { kind: "unusable"; why: string }
  /** SELinux is on; `enforcing` is the global mode, or an error if it could not be read. */
  | { kind: "on"; enforcing: boolean | { error: string } };

/** What `statfs("/sys/fs/selinux")` showed. */
export type SelinuxfsFact =
  /** selinuxfs is mounted there; `readOnly`: in this mount namespace. */
  | { kind: "mounted"; readOnly: boolean }
  /**
   * The path exists but holds another file system. The kernel creates this
   * sysfs mount point only when SELinux is enabled, so SELinux is on and
   * selinuxfs is just not mounted here (a container, an early boot).
   */
  | { kind: "not-mounted" }
  /** No such path: the kernel has no SELinux (or /sys is not mounted here). */
  | { kind: "absent" }
  /** statfs failed otherwise (counted as active: fail closed). */
  | { kind: "error"; error: string };

/** The kernel's own signs of SELinux, as the I/O edge read them. */
export interface KernelSelinuxFacts {
  /** `statfs("/sys/fs/selinux")`. */
  selinuxfs: SelinuxfsFact;
  /** This process's context, `/proc/self/attr/current` (EINVAL without a labelling LSM). */
  selfContext: ContextRead;
}

/**
 * Whether `text` is shaped like an SELinux context (`user:role:type` and an
 * optional MLS part, no white space). AppArmor's `unconfined` or
 * `profile (enforce)` and Smack's labels are not.
 */
export function isSelinuxContext(text: string): boolean {
  return /^[^:\s]+:[^:\s]+:[^:\s]+(:\S+)?$/.test(text);
}

/**
 * Does the kernel run SELinux? Decided from the kernel's signs only:
 * selinuxfs mounted, its mount point present, or this process labelled with
 * an SELinux context. libselinux's `is_selinux_enabled()` is not one of them:
 * it says 0 when selinuxfs is read-only or /etc/selinux/config is missing,
 * while the kernel enforces all the same. `evidence` says what decided.
 */
export function selinuxActive(facts: KernelSelinuxFacts): { active: boolean; evidence: string } {
  const fs = facts.selinuxfs;
  const self = "context" in facts.selfContext && isSelinuxContext(facts.selfContext.context)
    ? facts.selfContext.context
    : null;
  if (fs.kind === "mounted") {
    return {
      active: true,
      evidence: `selinuxfs is mounted at /sys/fs/selinux${fs.readOnly ? " (read-only)" : ""}`,
    };
  }
  if (fs.kind === "not-mounted") {
    return { active: true, evidence: "the kernel created /sys/fs/selinux" };
  }
  if (fs.kind === "error") {
    return { active: true, evidence: `statfs(/sys/fs/selinux) failed (${fs.error})` };
  }
  if (self !== null) return { active: true, evidence: `this process runs as ${self}` };
  const why = "error" in facts.selfContext
    ? `no /sys/fs/selinux, no process context (${facts.selfContext.error})`
    : `no /sys/fs/selinux, process label "${facts.selfContext.context}" is not SELinux's`;
  return { active: false, evidence: why };
}

/** Everything {@linkcode decideSelinuxState} needs, read once at start-up. */
export interface SelinuxStartInputs {
  /** The kernel's signs. */
  kernel: KernelSelinuxFacts;
  /** libselinux could be loaded (or a test backend was given), or why not. */
  library: { loaded: true } | { loaded: false; error: string };
  /**
   * A trial access query (this process's context against itself, `blk_file`
   * `ioctl`), made only when the library is loaded: does the kernel answer?
   */
  probe?: { ok: true } | { error: string };
  /** The loaded policy image, read and parsed (for its ioctl extended permissions). */
  policy?: { ok: true } | { error: string };
  /** The enforcing mode, read once. */
  enforcing?: boolean | { error: string };
}

/**
 * The SELinux state at start-up:
 *
 * - the kernel shows no SELinux → "off" ("SELinux disabled (…)");
 * - it does, and libselinux, the trial query and the policy image all work →
 *   "on";
 * - it does, and one of them fails → "unusable", with the reason (a
 *   read-only selinuxfs is named as such: libselinux ignores a read-only
 *   mount and the access query is a write to /sys/fs/selinux/access).
 */
export function decideSelinuxState(inputs: SelinuxStartInputs): SelinuxState {
  const { active, evidence } = selinuxActive(inputs.kernel);
  if (!active) return { kind: "off", why: `SELinux disabled (${evidence})` };
  const fs = inputs.kernel.selinuxfs;
  if (!inputs.library.loaded) {
    return {
      kind: "unusable",
      why:
        `SELinux is active (${evidence}) but libselinux cannot be loaded (${inputs.library.error})`,
    };
  }
  const probe = inputs.probe ?? { error: "no access query was made" };
  if ("error" in probe) {
    if (fs.kind === "mounted" && fs.readOnly) {
      return {
        kind: "unusable",
        why: "SELinux is active but selinuxfs is mounted read-only at /sys/fs/selinux in this " +
          "mount namespace, so the kernel cannot be asked (an access query is a write to " +
          `/sys/fs/selinux/access): ${probe.error}`,
      };
    }
    if (fs.kind !== "mounted") {
      return {
        kind: "unusable",
        why: `SELinux is active (${evidence}) but selinuxfs is not mounted at /sys/fs/selinux, ` +
          `so the kernel cannot be asked: ${probe.error}`,
      };
    }
    return {
      kind: "unusable",
      why: `SELinux is active but the kernel's access query fails: ${probe.error}`,
    };
  }
  const policy = inputs.policy ?? { error: "the loaded policy was not read" };
  if ("error" in policy) {
    return {
      kind: "unusable",
      why: "SELinux is active but the loaded policy cannot be read, so its ioctl extended " +
        `permissions cannot be checked: ${policy.error}`,
    };
  }
  return { kind: "on", enforcing: inputs.enforcing ?? { error: "not read" } };
}

/** Everything {@linkcode decideAccess} needs for one request. */
export interface AccessInputs {
  selinux: SelinuxState;
  /** The client's context (SO_PEERSEC, read once per connection). */
  peer: ContextRead;
  /** The device node's context (fgetfilecon on the passed fd). */
  file: ContextRead;
  /** The type of the passed fd. */
  deviceKind: DeviceKind;
  /**
   * The kernel's answer for (peer, file, class, ioctl); absent when it was not
   * asked (the caller asks only when both contexts and the class are known).
   */
  av?: AvAnswer;
}

/** Why a decision came out the way it did. */
export type AccessReason =
  /** SELinux check off: allowed without a query. */
  | "check-off"
  /** The policy allows ioctl. */
  | "allowed"
  /** Denied by an enforcing policy. */
  | "denied"
  /** `ioctl` is allowed, but the policy's ioctl extended permissions do not list SG_IO: denied. */
  | "denied-xperm"
  /** The policy denies, but SELinux is globally permissive: allowed and logged. */
  | "permissive"
  /** The policy denies, but the client's domain is permissive: allowed and logged. */
  | "permissive-domain"
  /** SELinux is active but cannot be queried: refused. */
  | "selinux-unusable"
  /** The enforcing mode could not be read: refused. */
  | "enforce-unreadable"
  /** The client's context could not be read: refused. */
  | "peer-context-unreadable"
  /** The device node's context could not be read: refused. */
  | "file-context-unreadable"
  /** The fd is not a block or character device: refused. */
  | "not-a-device"
  /** The kernel's access decision could not be obtained: refused. */
  | "av-query-failed";

/** The fields of an AVC-like log line. */
export interface AvcFields {
  /** Client context, or "?" if unreadable. */
  scontext: string;
  /** Device node context, or "?" if unreadable. */
  tcontext: string;
  /** `blk_file`, `chr_file`, or "?" for other file types. */
  tclass: string;
  /** Always `ioctl`. */
  perm: string;
  /** `0x2285` when the policy has ioctl extended-permission rules for this check (as the kernel logs it). */
  ioctlcmd?: string;
  /** How SELinux stood when deciding. */
  mode: "enforcing" | "permissive" | "permissive-domain";
}

/** The outcome of {@linkcode decideAccess}. */
export interface AccessDecision {
  /** Whether the request may proceed to SG_IO. */
  verdict: "allow" | "deny";
  /**
   * true if the policy refuses the permission (or the check failed): true on
   * every "deny", and on an "allow" granted only because of permissive mode.
   * Every decision with `wouldDeny` is logged with an AVC-like line.
   */
  wouldDeny: boolean;
  /** Reason code. */
  reason: AccessReason;
  /** Human-readable detail (the error text of a failed read, the off reason). */
  detail?: string;
  /** AVC-like fields; absent when the check is off. */
  avc?: AvcFields;
}

/** The SELinux object class of a file type: `blk_file`, `chr_file`, or null for anything else. */
export function securityClassFor(kind: DeviceKind): "blk_file" | "chr_file" | null {
  if (kind === "block") return "blk_file";
  if (kind === "char") return "chr_file";
  return null;
}

function contextOf(read: ContextRead): string {
  return "context" in read ? read.context : "?";
}

/**
 * Decide one request. Rules, in order:
 *
 * 1. check off → allow ("check-off").
 * 2. SELinux active but unusable → deny.
 * 3. The fd is not a block/char device → deny.
 * 4. The client's or the node's context unreadable → deny (fail closed, in
 *    permissive mode too: an unreadable label is an anomaly, not a policy).
 * 5. Enforcing mode unreadable → deny.
 * 6. No access answer, or the query failed → deny.
 * 7. ioctl allowed, and the ioctl extended permissions (if the policy has
 *    any for this source, target and class) list SG_IO → allow.
 * 8. Denied (either part) and SELinux globally permissive → allow,
 *    wouldDeny ("permissive").
 * 9. Denied and the domain permissive → allow, wouldDeny ("permissive-domain").
 * 10. Denied → deny ("denied", or "denied-xperm" when only the extended
 *    permissions refuse).
 *
 * Permissive mode covers extended permissions as it covers `ioctl`: the
 * kernel's `avc_denied()` decides both.
 */
export function decideAccess(inputs: AccessInputs): AccessDecision {
  const { selinux } = inputs;
  if (selinux.kind === "off") {
    return { verdict: "allow", wouldDeny: false, reason: "check-off", detail: selinux.why };
  }
  const tclass = securityClassFor(inputs.deviceKind);
  const base = {
    scontext: contextOf(inputs.peer),
    tcontext: contextOf(inputs.file),
    tclass: tclass ?? "?",
    perm: CHECKED_PERMISSION,
  };
  const enforcing = selinux.kind === "on" && typeof selinux.enforcing === "boolean"
    ? selinux.enforcing
    : true;
  const deny = (reason: AccessReason, detail?: string): AccessDecision => ({
    verdict: "deny",
    wouldDeny: true,
    reason,
    ...(detail === undefined ? {} : { detail }),
    avc: { ...base, mode: enforcing ? "enforcing" : "permissive" },
  });

  if (selinux.kind === "unusable") return deny("selinux-unusable", selinux.why);
  if (tclass === null) return deny("not-a-device", `file type ${inputs.deviceKind}`);
  if ("error" in inputs.peer) return deny("peer-context-unreadable", inputs.peer.error);
  if ("error" in inputs.file) return deny("file-context-unreadable", inputs.file.error);
  if (typeof selinux.enforcing !== "boolean") {
    return deny("enforce-unreadable", selinux.enforcing.error);
  }
  const av = inputs.av;
  if (av === undefined) return deny("av-query-failed", "no access decision was computed");
  if ("error" in av) return deny("av-query-failed", av.error);

  const xperm = av.xperm;
  const withCmd = xperm !== undefined && xperm.kind !== "no-rules"
    ? { ...base, ioctlcmd: `0x${CHECKED_IOCTL_COMMAND.toString(16)}` }
    : base;
  const xpermDenied = xperm?.kind === "denied" ? xperm.why : undefined;
  const detail = av.allowed ? xpermDenied : undefined;
  if (av.allowed && xpermDenied === undefined) {
    return {
      verdict: "allow",
      wouldDeny: false,
      reason: "allowed",
      avc: { ...withCmd, mode: enforcing ? "enforcing" : "permissive" },
    };
  }
  if (!enforcing) {
    return {
      verdict: "allow",
      wouldDeny: true,
      reason: "permissive",
      ...(detail === undefined ? {} : { detail }),
      avc: { ...withCmd, mode: "permissive" },
    };
  }
  if (av.domainPermissive) {
    return {
      verdict: "allow",
      wouldDeny: true,
      reason: "permissive-domain",
      ...(detail === undefined ? {} : { detail }),
      avc: { ...withCmd, mode: "permissive-domain" },
    };
  }
  return {
    verdict: "deny",
    wouldDeny: true,
    reason: detail === undefined ? "denied" : "denied-xperm",
    ...(detail === undefined ? {} : { detail }),
    avc: { ...withCmd, mode: "enforcing" },
  };
}

// ---------------------------------------------------------------- peer credentials

/** SO_PEERCRED of a client. */
export interface PeerCredentials {
  pid: number;
  uid: number;
  gid: number;
}

/**
 * Which clients may talk to the daemon at all, by uid and primary gid.
 *
 * `uids` and `gids` null (no list given) means "no restriction": the socket's
 * file mode is the only gate, as with qemu-pr-helper. Once either list is
 * given, a client must match one of them.
 */
export interface PeerPolicy {
  /** Allowed uids, or null for no uid/gid restriction at all (when gids is also null). */
  uids: ReadonlySet<number> | null;
  /** Allowed primary gids. */
  gids: ReadonlySet<number> | null;
  /**
   * Whether uid 0 passes even when not listed (default true). Root can open
   * the disks and issue SG_IO itself, so refusing it protects nothing; a
   * confined root QEMU is still held by the SELinux check on every request.
   */
  allowRoot: boolean;
}

/** The policy that lets every client in. */
export const OPEN_PEER_POLICY: PeerPolicy = Object.freeze({
  uids: null,
  gids: null,
  allowRoot: true,
});

/** The outcome of {@linkcode decidePeer}. */
export interface PeerDecision {
  verdict: "allow" | "deny";
  /** "no-restriction", "root", "uid-listed", "gid-listed" or "not-listed". */
  reason: "no-restriction" | "root" | "uid-listed" | "gid-listed" | "not-listed";
}

/**
 * Whether a client with these credentials may use the daemon. Only the
 * primary gid from SO_PEERCRED is compared; supplementary groups are not.
 */
export function decidePeer(policy: PeerPolicy, cred: PeerCredentials): PeerDecision {
  if (policy.uids === null && policy.gids === null) {
    return { verdict: "allow", reason: "no-restriction" };
  }
  if (policy.uids?.has(cred.uid)) return { verdict: "allow", reason: "uid-listed" };
  if (policy.gids?.has(cred.gid)) return { verdict: "allow", reason: "gid-listed" };
  if (cred.uid === 0 && policy.allowRoot) return { verdict: "allow", reason: "root" };
  return { verdict: "deny", reason: "not-listed" };
}

/** What the operator asked for, before names are resolved. */
export interface PeerPolicyOptions {
  /** User names or numeric uids. */
  users?: readonly string[];
  /** Group names or numeric gids. */
  groups?: readonly string[];
  /** See {@linkcode PeerPolicy.allowRoot}; default true. */
  allowRoot?: boolean;
}

/** The text of /etc/passwd and /etc/group (either may be empty). */
export interface AccountDatabase {
  passwd: string;
  group: string;
}

/** Parse `name:x:id:...` lines into a name → id map (first occurrence wins). */
export function parseIdFile(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#") || line.startsWith("+") || line.startsWith("-")) {
      continue;
    }
    const fields = line.split(":");
    if (fields.length < 3 || !/^\d+$/.test(fields[2])) continue;
    if (!out.has(fields[0])) out.set(fields[0], Number(fields[2]));
  }
  return out;
}

function resolveIds(
  names: readonly string[] | undefined,
  table: Map<string, number>,
  what: "user" | "group",
): Set<number> | null {
  if (names === undefined) return null;
  const ids = new Set<number>();
  for (const raw of names) {
    const name = raw.trim();
    if (/^\d+$/.test(name)) {
      const id = Number(name);
      if (id > 0xfffffffe) throw new RangeError(`${what} id "${raw}" is out of range`);
      ids.add(id);
      continue;
    }
    const id = table.get(name);
    if (id === undefined) {
      throw new Error(
        `unknown ${what} "${raw}" (not in /etc/${what === "user" ? "passwd" : "group"}; ` +
          `give a numeric id for accounts from other name services)`,
      );
    }
    ids.add(id);
  }
  return ids;
}

/**
 * Turn the operator's user and group lists into a {@linkcode PeerPolicy}.
 * Names are looked up in the given passwd/group text (no NSS); numeric ids are
 * taken as they are. An unknown name is an error naming it.
 */
export function resolvePeerPolicy(
  options: PeerPolicyOptions,
  db: AccountDatabase,
): PeerPolicy {
  const uids = resolveIds(options.users, parseIdFile(db.passwd), "user");
  const gids = resolveIds(options.groups, parseIdFile(db.group), "group");
  return { uids, gids, allowRoot: options.allowRoot ?? true };
}

/** One line describing the peer policy, for start-up logging. */
export function describePeerPolicy(policy: PeerPolicy): string {
  if (policy.uids === null && policy.gids === null) {
    return "peer policy: any uid (socket permissions only)";
  }
  const list = (s: ReadonlySet<number> | null) => s === null ? "-" : [...s].join(",") || "none";
  return `peer policy: uids ${list(policy.uids)}; gids ${list(policy.gids)}; root ${
    policy.allowRoot ? "allowed" : "refused unless listed"
  }`;
}
