/**
 * The daemon's security hooks, ready to plug into the server and the request
 * handler: `admit` (peer policy at accept; the client's AppArmor label is
 * read there too), `access` (the per-request SELinux check, logging AVC-like
 * lines, then the AppArmor check, logging AppArmor-like lines) and `audit`
 * (one record per PR OUT that reached a device). docs/SECURITY.md describes
 * the model.
 *
 * @module
 */

import type { Logger } from "@logtape/logtape";
import { decidePeer, describePeerPolicy, type PeerPolicy } from "./access_policy.ts";
import { auditProperties, buildAuditRecord, quoteFieldValue } from "./audit.ts";
import { logger } from "../log.ts";
import { parseSense } from "../sense.ts";
import { ScsiStatus } from "../wire.ts";
import { type ApparmorChecker, createApparmorChecker } from "./apparmor_access.ts";
import {
  type ApparmorLabel,
  type ApparmorMode,
  formatApparmorAudit,
  type UnconfinedPolicy,
} from "./apparmor_policy.ts";
import type { AccessCheck, AccessVerdict, AuditEvent, Peer } from "../request_handler.ts";
import {
  type AccessChecker,
  type AccessRequest,
  createAccessChecker,
  formatAvc,
  loadPeerPolicy,
} from "./selinux_access.ts";

/** Options of {@linkcode createSecurity}. */
export interface SecurityOptions {
  /** SELinux check mode (default "auto"). */
  selinux?: "auto" | "off" | "require";
  /** AppArmor check mode (default "auto"). */
  apparmor?: ApparmorMode;
  /** Clients AppArmor does not confine (default "allow"). */
  apparmorUnconfined?: UnconfinedPolicy;
  /** Users (names or uids) allowed to connect; absent: no uid restriction. */
  allowUsers?: readonly string[];
  /** Groups (names or gids) whose members by primary gid may connect. */
  allowGroups?: readonly string[];
  /** Refuse uid 0 unless it is listed. */
  refuseRoot?: boolean;
  /** Use this checker instead of creating one (tests). */
  checker?: AccessChecker;
  /** Use this AppArmor checker instead of creating one (tests). */
  apparmorChecker?: ApparmorChecker;
  /** Use this peer policy instead of resolving names (tests). */
  peerPolicy?: PeerPolicy;
  /** Loggers (tests); default the daemon's "selinux" and "audit" categories. */
  loggers?: { selinux?: Logger; audit?: Logger; apparmor?: Logger };
}

/** The hooks and their start-up description. */
export interface Security {
  /** Lines to log once at start-up (SELinux state, peer policy). */
  readonly startupLines: readonly string[];
  /** Server `admit`: a reason to refuse the peer, or null. */
  admit(peer: Peer): string | null;
  /** Request handler `access`. */
  readonly access: AccessCheck;
  /** Request handler `audit`. */
  audit(event: AuditEvent): void;
  /** Release libselinux. */
  close(): void;
}

/** Template for LogTape: `k1={k1} k2={k2} …` over the keys given. */
function template(keys: readonly string[]): string {
  return keys.map((k) => `${k}={${k}}`).join(" ");
}

/** The input of an access check. */
type AccessInput = Parameters<AccessCheck["check"]>[0];

/** SELinux's part of the access check: the refusal, or null if SELinux allows it. */
function selinuxDenial(
  checker: AccessChecker,
  log: Logger,
  { peer, fd, facts }: AccessInput,
): AccessVerdict | null {
  const request: AccessRequest = {
    peerContext: peer.context === null
      ? { error: "the socket carries no security context (SO_PEERSEC)" }
      : { context: peer.context },
    fd,
    deviceKind: facts.kind,
    peer: { pid: peer.pid, uid: peer.uid, gid: peer.gid },
    major: facts.major,
    minor: facts.minor,
  };
  const d = checker.check(request);
  if (d.wouldDeny) {
    const line = formatAvc(d, request);
    if (line !== null) {
      // the line is the message; braces are escaped for LogTape's template syntax
      log.warning(line.replaceAll("{", "{{").replaceAll("}", "}}"), { conn: peer.connection });
    }
  }
  if (d.verdict === "allow") return null;
  return { allow: false, reason: `SELinux: ${d.reason}${d.detail ? ` (${d.detail})` : ""}` };
}

/** AppArmor's part of the access check, for a client whose label was read at accept. */
function apparmorVerdict(
  apparmor: ApparmorChecker,
  log: Logger,
  { peer, facts, label }: AccessInput & { label: ApparmorLabel | { error: string } },
): AccessVerdict {
  const a = apparmor.check({
    label,
    kind: facts.kind === "char" ? "char" : "block",
    major: facts.major,
    minor: facts.minor,
  });
  if (a.wouldDeny) {
    const line = formatApparmorAudit(a, peer);
    log.warning(line.replaceAll("{", "{{").replaceAll("}", "}}"), { conn: peer.connection });
  }
  return a.verdict === "allow"
    ? { allow: true }
    : { allow: false, reason: `AppArmor: ${a.reason}${a.detail ? ` (${a.detail})` : ""}` };
}

/** One audit line for a PR OUT that reached the device. */
function logAudit(log: Logger, event: AuditEvent): void {
  const kind = event.facts.kind === "char" ? "char" : "block";
  const record = buildAuditRecord({
    peer: {
      pid: event.peer.pid,
      uid: event.peer.uid,
      gid: event.peer.gid,
      context: event.peer.context,
    },
    device: { kind, major: event.facts.major, minor: event.facts.minor },
    cdb: event.command.deviceCdb,
    result: {
      status: event.status,
      ...(event.status === ScsiStatus.CHECK_CONDITION
        ? { sense: parseSense(event.sense) ?? undefined }
        : {}),
    },
  });
  // free-text values are pre-quoted where needed, so the rendered line stays k=v parseable
  const props: Record<string, string | number> = {};
  for (const [k, v] of Object.entries(auditProperties(record))) {
    props[k] = typeof v === "string" ? quoteFieldValue(v) : v;
  }
  props.conn = event.peer.connection;
  log.info(`audit: ${template(Object.keys(props))}`, props);
}

/**
 * Build the hooks: resolve the peer policy (throws naming an unknown user or
 * group), create the SELinux checker (throws in mode "require" if it cannot
 * run).
 */
export function createSecurity(options: SecurityOptions = {}): Security {
  const selinuxLog = options.loggers?.selinux ?? logger("selinux");
  const auditLog = options.loggers?.audit ?? logger("audit");
  const policy = options.peerPolicy ?? loadPeerPolicy({
    users: options.allowUsers,
    groups: options.allowGroups,
    allowRoot: !options.refuseRoot,
  });
  const checker = options.checker ?? createAccessChecker({ mode: options.selinux ?? "auto" });
  let apparmor: ApparmorChecker;
  try {
    apparmor = options.apparmorChecker ?? createApparmorChecker({
      mode: options.apparmor ?? "auto",
      unconfined: options.apparmorUnconfined ?? "allow",
    });
  } catch (e) {
    checker.close();
    throw e;
  }
  const apparmorLog = options.loggers?.apparmor ?? logger("apparmor");
  // the client's AppArmor label, read once at accept (the same Peer object
  // comes back with every request of the connection)
  const labels = new WeakMap<Peer, ApparmorLabel | { error: string }>();
  const labelOf = (peer: Peer) => {
    let label = labels.get(peer);
    if (label === undefined) {
      label = apparmor.peerLabel(peer);
      labels.set(peer, label);
    }
    return label;
  };

  const access: AccessCheck = {
    check(input): AccessVerdict {
      const denied = selinuxDenial(checker, selinuxLog, input);
      if (denied !== null) return denied;
      const { facts, peer } = input;
      if (apparmor.state.kind === "off" || (facts.kind !== "block" && facts.kind !== "char")) {
        return { allow: true };
      }
      return apparmorVerdict(apparmor, apparmorLog, { ...input, label: labelOf(peer) });
    },
  };

  return {
    startupLines: [checker.describe(), apparmor.describe(), describePeerPolicy(policy)],
    admit(peer: Peer): string | null {
      const d = decidePeer(policy, peer);
      if (d.verdict === "allow") {
        if (apparmor.state.kind === "on") labelOf(peer);
        return null;
      }
      // the server logs the refusal with pid, uid, gid and context
      return `peer policy: uid ${peer.uid} gid ${peer.gid} is not allowed`;
    },
    access,
    audit(event: AuditEvent): void {
      logAudit(auditLog, event);
    },
    close(): void {
      checker.close();
    },
  };
}
