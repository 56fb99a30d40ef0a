/**
 * The AppArmor access check's decisions, as pure functions of their inputs
 * (no I/O here; src/security/apparmor_access.ts reads the inputs).
 *
 * - {@linkcode decideApparmorState}: at start-up, whether the kernel runs
 *   AppArmor and whether the daemon can ask it (the query interface
 *   `/sys/kernel/security/apparmor/.access`).
 * - {@linkcode parseApparmorLabel}: a peer's label text (`name (mode)`,
 *   `unconfined`) as SO_PEERSEC or `/proc/PID/attr/apparmor/current` give it.
 * - {@linkcode encodeFileQuery} / {@linkcode parseQueryAnswer}: the bytes of
 *   a file-permission query and the kernel's answer (the format libapparmor's
 *   `aa_query_file_path` uses).
 * - {@linkcode deviceNodePaths}: the /dev paths a profile names for a device,
 *   from what sysfs says about its device number.
 * - {@linkcode decideApparmorAccess}: the per-request verdict.
 *
 * @module
 */

/** The check's mode, from `--apparmor`. */
export type ApparmorMode = "auto" | "off" | "require";

/** What to do with a client that AppArmor does not confine (`--apparmor-unconfined`). */
export type UnconfinedPolicy = "allow" | "refuse";

/** AppArmor file permission bits as the kernel reports them in a query answer. */
export const AA_MAY_EXEC = 0x1;
/** Write. */
export const AA_MAY_WRITE = 0x2;
/** Read. */
export const AA_MAY_READ = 0x4;

/** What the daemon asks for on the client's behalf: read and write of the device node. */
export const CHECKED_MASK = AA_MAY_READ | AA_MAY_WRITE;

/** The class byte of a file query (`AA_CLASS_FILE`). */
export const AA_CLASS_FILE = 2;

/** The largest query the kernel takes (one page minus its header); longer ones are refused. */
export const MAX_QUERY_BYTES = 4000;

// ---------------------------------------------------------------- state

/** The kernel's signs of AppArmor, read once at start-up. */
export interface KernelApparmorFacts {
  /** `/sys/module/apparmor/parameters/enabled` ("Y"/"N"), or null if absent. */
  moduleEnabled: string | null;
  /** `/sys/kernel/security/lsm` (the active LSMs, comma-separated), or null if unreadable. */
  lsmList: string | null;
}

/** The AppArmor state the checker runs in. */
export type ApparmorState =
  | { kind: "off"; why: string }
  | { kind: "on" }
  | { kind: "unusable"; why: string };

/**
 * Whether the kernel runs AppArmor: the module says enabled, and the active
 * LSM list (when readable) names it. An LSM list that cannot be read while
 * the module says enabled counts as active (fail closed).
 */
export function apparmorActive(facts: KernelApparmorFacts): { active: boolean; evidence: string } {
  const enabled = (facts.moduleEnabled ?? "").trim();
  if (enabled !== "Y") {
    return {
      active: false,
      evidence: facts.moduleEnabled === null
        ? "no /sys/module/apparmor"
        : `/sys/module/apparmor/parameters/enabled is "${enabled}"`,
    };
  }
  if (facts.lsmList === null) {
    return { active: true, evidence: "module enabled, LSM list unreadable" };
  }
  const lsms = facts.lsmList.trim().split(",");
  if (!lsms.includes("apparmor")) {
    return { active: false, evidence: `AppArmor is not among the active LSMs (${lsms.join(",")})` };
  }
  return { active: true, evidence: "module enabled and in the active LSM list" };
}

/**
 * The AppArmor state at start-up:
 *
 * - mode off → "off";
 * - the kernel shows no AppArmor → "off" (mode require makes the caller
 *   refuse to start);
 * - it does, and a trial query through `.access` was answered → "on";
 * - it does, and the trial query failed → "unusable" (never "off": fail
 *   closed).
 */
export function decideApparmorState(
  mode: ApparmorMode,
  inputs: { kernel: KernelApparmorFacts; probe?: { ok: true } | { error: string } },
): ApparmorState {
  if (mode === "off") return { kind: "off", why: "disabled by option" };
  const { active, evidence } = apparmorActive(inputs.kernel);
  if (!active) return { kind: "off", why: `AppArmor disabled (${evidence})` };
  const probe = inputs.probe ?? { error: "no query was made" };
  if ("error" in probe) {
    return {
      kind: "unusable",
      why: `AppArmor is active (${evidence}) but its policy cannot be queried through ` +
        `/sys/kernel/security/apparmor/.access: ${probe.error}`,
    };
  }
  return { kind: "on" };
}

// ---------------------------------------------------------------- labels

/** A peer's AppArmor label, parsed. */
export type ApparmorLabel =
  /** Not confined: `unconfined`, or a profile in mode `unconfined`. */
  | { kind: "unconfined"; text: string }
  /**
   * Confined by `name` (a profile, or a stack `a//&b`) in `mode`: enforce,
   * complain, kill, user, mixed (a stack whose profiles differ), or "" if
   * the text carried no mode.
   */
  | { kind: "confined"; name: string; mode: string; text: string };

/**
 * Parse label text as the kernel prints it (`vm-A (enforce)`,
 * `unconfined`), with any trailing NULs and newlines. Throws a RangeError
 * naming the text when it is empty or not printable.
 */
export function parseApparmorLabel(raw: string): ApparmorLabel {
  const text = raw.replace(/[\0\n]+$/, "");
  if (text === "" || hasControlOrSpace(text, false)) {
    throw new RangeError(`AppArmor label ${JSON.stringify(raw)} is empty or not printable`);
  }
  if (text === "unconfined") return { kind: "unconfined", text };
  const m = /^(.+) \(([a-z_]+)\)$/.exec(text);
  const name = m ? m[1] : text;
  const mode = m ? m[2] : "";
  if (mode === "unconfined") return { kind: "unconfined", text };
  return { kind: "confined", name, mode, text };
}

// ---------------------------------------------------------------- the query

/**
 * The bytes written to `.access` to ask which file permissions `label` has
 * on `path`: `label\0`, the label name, `\0`, the class byte
 * {@linkcode AA_CLASS_FILE}, the path (not NUL-terminated). Throws a
 * RangeError when the label or path holds a NUL or the query is too long.
 */
export function encodeFileQuery(label: string, path: string): Uint8Array {
  if (label === "" || label.includes("\0")) {
    throw new RangeError(`AppArmor label ${JSON.stringify(label)} cannot be queried`);
  }
  if (!path.startsWith("/") || path.includes("\0")) {
    throw new RangeError(`path ${JSON.stringify(path)} cannot be queried`);
  }
  const enc = new TextEncoder();
  const l = enc.encode(label);
  const p = enc.encode(path);
  const out = new Uint8Array(6 + l.length + 1 + 1 + p.length);
  out.set(enc.encode("label\0"), 0);
  out.set(l, 6);
  out[6 + l.length] = 0;
  out[6 + l.length + 1] = AA_CLASS_FILE;
  out.set(p, 6 + l.length + 2);
  if (out.length > MAX_QUERY_BYTES) {
    throw new RangeError(`AppArmor query for ${path} is ${out.length} bytes, too long`);
  }
  return out;
}

/** The kernel's answer to a permission query. */
export interface QueryAnswer {
  allow: number;
  deny: number;
  audit: number;
  quiet: number;
}

/**
 * Parse `allow 0x…\ndeny 0x…\naudit 0x…\nquiet 0x…\n`. Throws a RangeError
 * quoting the text when it is not that.
 */
export function parseQueryAnswer(text: string): QueryAnswer {
  const m =
    /^allow 0x([0-9a-f]{1,8})\ndeny 0x([0-9a-f]{1,8})\naudit 0x([0-9a-f]{1,8})\nquiet 0x([0-9a-f]{1,8})\n?\0*$/
      .exec(text);
  if (m === null) {
    throw new RangeError(`unexpected AppArmor query answer ${JSON.stringify(text.slice(0, 200))}`);
  }
  return {
    allow: parseInt(m[1], 16) >>> 0,
    deny: parseInt(m[2], 16) >>> 0,
    audit: parseInt(m[3], 16) >>> 0,
    quiet: parseInt(m[4], 16) >>> 0,
  };
}

/** Whether an answer grants every bit of `mask` (allowed and not denied). */
export function answerGrants(answer: QueryAnswer, mask: number): boolean {
  return ((mask & ~(answer.allow & ~answer.deny)) >>> 0) === 0;
}

/** `rw`-style text for a permission mask (r, w, x), for log lines. */
export function maskText(mask: number): string {
  return `${mask & AA_MAY_READ ? "r" : ""}${mask & AA_MAY_WRITE ? "w" : ""}${
    mask & AA_MAY_EXEC ? "x" : ""
  }` || "-";
}

// ---------------------------------------------------------------- device paths

/** What sysfs says about a device number, for naming its nodes. */
export interface SysfsDeviceNames {
  /** The text of `/sys/dev/{block,char}/M:m/uevent`, or null if unreadable. */
  uevent: string | null;
  /** A device-mapper device's `dm/name`, or null. */
  dmName?: string | null;
}

/**
 * The /dev paths an AppArmor profile names for the device: `/dev/DEVNAME`
 * from the uevent (the node the kernel's devtmpfs and udev create, and the
 * path the kernel checks when QEMU opens it, since opening resolves
 * symlinks), and for device-mapper devices also `/dev/mapper/NAME`. Throws a
 * RangeError when the uevent has no usable DEVNAME (a name the client
 * cannot influence: it comes from the device number, not from a path).
 */
export function deviceNodePaths(names: SysfsDeviceNames): string[] {
  if (names.uevent === null) throw new RangeError("the device has no uevent in sysfs");
  const line = names.uevent.split("\n").find((l) => l.startsWith("DEVNAME="));
  const devname = line?.slice("DEVNAME=".length).trim() ?? "";
  if (!validNodeName(devname)) {
    throw new RangeError(`sysfs uevent has no usable DEVNAME (${JSON.stringify(devname)})`);
  }
  const paths = [`/dev/${devname}`];
  const dm = names.dmName?.trim();
  if (dm !== undefined && dm !== "" && validNodeName(dm) && !dm.includes("/")) {
    paths.push(`/dev/mapper/${dm}`);
  }
  return paths;
}

/** Whether `s` holds a control character (or, with `space`, a space). */
function hasControlOrSpace(s: string, space: boolean): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x20 || c === 0x7f || (space && c === 0x20)) return true;
  }
  return false;
}

function validNodeName(name: string): boolean {
  return name !== "" && !hasControlOrSpace(name, true) &&
    name.split("/").every((part) => part !== "" && part !== "." && part !== "..");
}

// ---------------------------------------------------------------- decisions

/** Everything {@linkcode decideApparmorAccess} needs for one request. */
export interface ApparmorAccessInputs {
  state: ApparmorState;
  /** What to do with unconfined clients. */
  unconfined: UnconfinedPolicy;
  /** The client's label, or why it could not be read. */
  label: ApparmorLabel | { error: string };
  /** The device's node paths, or why they could not be derived. */
  paths: readonly string[] | { error: string };
  /**
   * The kernel's answer per path, in the order of `paths`, absent when not
   * asked (unconfined client, or a path not needed after an earlier allow).
   */
  answers?: readonly (QueryAnswer | { error: string })[];
}

/** Why an AppArmor decision came out the way it did. */
export type ApparmorReason =
  | "check-off"
  | "allowed"
  | "denied"
  | "complain"
  | "unconfined-allowed"
  | "unconfined-refused"
  | "apparmor-unusable"
  | "label-unreadable"
  | "device-unnamed"
  | "query-failed";

/** The outcome of {@linkcode decideApparmorAccess}. */
export interface ApparmorDecision {
  verdict: "allow" | "deny";
  /** The policy refuses (or the check failed): log an audit line. */
  wouldDeny: boolean;
  reason: ApparmorReason;
  detail?: string;
  /** The profile (label name without the mode), or "?" when unknown. */
  profile: string;
  /** The node path the verdict is about (the first one, when none allowed), or "?". */
  name: string;
  /** The profile's mode as the label gave it, or "?". */
  mode: string;
}

/**
 * Decide one request. Rules, in order:
 *
 * 1. check off → allow.
 * 2. AppArmor active but unusable → deny.
 * 3. The client's label unreadable → deny.
 * 4. Unconfined client → allow or deny, as `--apparmor-unconfined` says.
 * 5. The device's node path unknown → deny.
 * 6. Any path's answer grants read and write → allow.
 * 7. A query failed (and none allowed) → deny.
 * 8. Denied, profile in complain mode → allow, logged.
 * 9. Denied → deny (modes enforce, kill, user, mixed and unknown alike).
 */
export function decideApparmorAccess(inputs: ApparmorAccessInputs): ApparmorDecision {
  const { state } = inputs;
  const label = "error" in inputs.label ? null : inputs.label;
  const profile = label === null ? "?" : label.kind === "confined" ? label.name : label.text;
  const mode = label === null ? "?" : label.kind === "confined" ? label.mode || "?" : "unconfined";
  const paths = Array.isArray(inputs.paths) ? inputs.paths as readonly string[] : null;
  const first = paths?.[0] ?? "?";
  const base = { profile, mode, name: first };
  const deny = (reason: ApparmorReason, detail?: string, name = first): ApparmorDecision => ({
    verdict: "deny",
    wouldDeny: true,
    reason,
    ...(detail === undefined ? {} : { detail }),
    ...base,
    name,
  });
  if (state.kind === "off") {
    return { verdict: "allow", wouldDeny: false, reason: "check-off", detail: state.why, ...base };
  }
  if (state.kind === "unusable") return deny("apparmor-unusable", state.why);
  if ("error" in inputs.label) return deny("label-unreadable", inputs.label.error);
  if (inputs.label.kind === "unconfined") {
    return inputs.unconfined === "allow"
      ? { verdict: "allow", wouldDeny: false, reason: "unconfined-allowed", ...base }
      : deny("unconfined-refused", "the client is not confined by AppArmor");
  }
  if (paths === null || paths.length === 0) {
    return deny(
      "device-unnamed",
      paths === null ? (inputs.paths as { error: string }).error : "no node path",
    );
  }
  const answers = inputs.answers ?? [];
  const errors: string[] = [];
  for (let i = 0; i < paths.length; i++) {
    const a = answers[i];
    if (a === undefined) continue;
    if ("error" in a) {
      errors.push(`${paths[i]}: ${a.error}`);
      continue;
    }
    if (answerGrants(a, CHECKED_MASK)) {
      return { verdict: "allow", wouldDeny: false, reason: "allowed", ...base, name: paths[i] };
    }
  }
  if (errors.length > 0) return deny("query-failed", errors.join("; "));
  if (answers.length === 0) return deny("query-failed", "no query was made");
  if (inputs.label.mode === "complain") {
    return { verdict: "allow", wouldDeny: true, reason: "complain", ...base };
  }
  return deny("denied");
}

/**
 * The audit line for a decision with `wouldDeny`, shaped like the kernel's
 * AppArmor records: `apparmor="DENIED"` (or `"ALLOWED"` in complain mode),
 * operation, profile, name, masks, the client's pid and uid, and the reason.
 */
export function formatApparmorAudit(
  d: ApparmorDecision,
  peer: { pid: number; uid: number },
): string {
  const q = (s: string) => JSON.stringify(s);
  const mask = maskText(CHECKED_MASK);
  return `apparmor=${d.verdict === "allow" ? '"ALLOWED"' : '"DENIED"'} operation="sg_io" ` +
    `profile=${q(d.profile)} name=${q(d.name)} requested_mask=${q(mask)} ` +
    `denied_mask=${q(mask)} mode=${q(d.mode)} pid=${peer.pid} ouid=${peer.uid} ` +
    `reason=${q(d.reason)}${d.detail ? ` detail=${q(d.detail)}` : ""}`;
}
