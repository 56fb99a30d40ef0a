/**
 * Access decisions, as pure functions of their inputs (no I/O here).
 *
 * Two policies live here:
 *
 * - {@linkcode decideAccess}: the per-request SELinux check. Given what the
 *   I/O edge (src/selinux_access.ts) read — is SELinux on, is it enforcing,
 *   the client's and the device node's contexts, the kernel's access-vector
 *   answer for `ioctl` on `blk_file`/`chr_file` — it returns allow or deny,
 *   whether the policy would have denied (for permissive-mode logging), a
 *   reason code and the fields of an AVC-like log line.
 * - {@linkcode decidePeer}: the peer-credential policy applied at accept time
 *   to SO_PEERCRED {pid, uid, gid}, with {@linkcode resolvePeerPolicy} turning
 *   user and group names into ids from passwd/group text.
 *
 * @module
 */

// ---------------------------------------------------------------- SELinux

/** The sense data for a refused request: ILLEGAL REQUEST, ACCESS DENIED - NO ACCESS RIGHTS (05/20/02). */
export const ACCESS_DENIED_SENSE: { key: number; asc: number; ascq: number } = Object.freeze({
  key: 0x05,
  asc: 0x20,
  ascq: 0x02,
});

/** The permission the daemon checks on behalf of the client. */
export const CHECKED_PERMISSION = "ioctl";

/** The kind of file a passed fd refers to (the `kind` of ffi/libc.ts `FileStat`). */
export type DeviceKind =
  | "block"
  | "char"
  | "regular"
  | "directory"
  | "fifo"
  | "socket"
  | "symlink"
  | "unknown";

/** A security context as read, or why it could not be read. */
export type ContextRead = { context: string } | { error: string };

/** The kernel's access-vector answer, or why it could not be obtained. */
export type AvAnswer =
  | {
    /** The requested permission is in the `allowed` vector. */
    allowed: boolean;
    /** `SELINUX_AVD_FLAGS_PERMISSIVE`: the source domain is permissive. */
    domainPermissive: boolean;
  }
  | { error: string };

/** The state of SELinux as the I/O edge found it. */
export type SelinuxState =
  /** The check is switched off (option, no SELinux, or no libselinux and no SELinux). */
  | { kind: "off"; why: string }
  /** SELinux is active but the daemon cannot query it (e.g. libselinux missing): fail closed. */
  | { kind: "unusable"; why: string }
  /** SELinux is on; `enforcing` is the global mode, or an error if it could not be read. */
  | { kind: "on"; enforcing: boolean | { error: string } };

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
 * 7. ioctl allowed → allow.
 * 8. Denied and SELinux globally permissive → allow, wouldDeny ("permissive").
 * 9. Denied and the domain permissive → allow, wouldDeny ("permissive-domain").
 * 10. Denied → deny.
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

  if (av.allowed) {
    return {
      verdict: "allow",
      wouldDeny: false,
      reason: "allowed",
      avc: { ...base, mode: enforcing ? "enforcing" : "permissive" },
    };
  }
  if (!enforcing) {
    return {
      verdict: "allow",
      wouldDeny: true,
      reason: "permissive",
      avc: { ...base, mode: "permissive" },
    };
  }
  if (av.domainPermissive) {
    return {
      verdict: "allow",
      wouldDeny: true,
      reason: "permissive-domain",
      avc: { ...base, mode: "permissive-domain" },
    };
  }
  return deny("denied");
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
