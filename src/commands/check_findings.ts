/**
 * `prhelperd check`'s judgements: each area's finding from what the probes
 * gathered (src/commands/check_probes.ts), pure functions with no I/O, and the
 * text report. Areas: the device (the daemon's own rule,
 * src/device_check.ts), PR support (REPORT CAPABILITIES), SELinux (the
 * daemon's own decision, src/security/access_policy.ts), the running daemon, and the
 * socket's permissions for the QEMU user.
 *
 * @module
 */

import type { FileStat } from "../../ffi/files.ts";
import {
  type AvAnswer,
  decideAccess,
  type DeviceKind,
  securityClassFor,
} from "../security/access_policy.ts";
import { PrInAction } from "../cdb.ts";
import { decideDevice, type DeviceFacts } from "../device_check.ts";
import { Cap, capBit } from "../../ffi/privileges.ts";
import type { StatusCreds } from "../security/privileges.ts";
import { formatSense, parseSense } from "../sense.ts";
import { describeOutcome, type MultipathdOutcome } from "../multipathd.ts";
import { MAX_DATA_LEN, ScsiStatus } from "../wire.ts";
import { type CapabilitiesData, decodePrIn, PR_TYPE_NAMES, scsiStatusName } from "./prin_decode.ts";

/** How a finding came out. */
export type FindingStatus = "ok" | "info" | "warn" | "fail" | "skip";

/** One line of the report. */
export interface Finding {
  area: "device" | "pr" | "selinux" | "daemon" | "multipathd" | "socket";
  status: FindingStatus;
  message: string;
  /** How to fix it (problems only). */
  fix?: string;
}

const f = (
  area: Finding["area"],
  status: FindingStatus,
  message: string,
  fix?: string,
): Finding => (fix === undefined ? { area, status, message } : { area, status, message, fix });

// ---------------------------------------------------------------- device

/** What was learnt about the device path. */
export type DeviceProbe =
  | { kind: "error"; errno: number; code: string }
  | { kind: "facts"; facts: DeviceFacts; parent: string | null };

/** Findings about the device (pure). */
export function deviceFindings(path: string, probe: DeviceProbe): Finding[] {
  if (probe.kind === "error") {
    if (probe.code === "ENOENT" || probe.code === "ENOTDIR") {
      return [f(
        "device",
        "fail",
        `${path} does not exist`,
        "give the path of the disk the VM uses (/dev/sdX, /dev/disk/by-id/…, /dev/sgN, " +
          "/dev/mapper/mpathX)",
      )];
    }
    if (probe.code === "EACCES" || probe.code === "EPERM") {
      return [f("device", "fail", `${path} cannot be opened: ${probe.code}`, "run check as root")];
    }
    return [f("device", "fail", `${path} cannot be opened: ${probe.code}`)];
  }
  const facts = probe.facts;
  const dev = `${facts.major}:${facts.minor}`;
  const decision = decideDevice(facts);
  if (decision.ok) {
    const what = decision.deviceClass === "scsi-disk"
      ? "a whole-disk SCSI block device"
      : decision.deviceClass === "scsi-generic"
      ? "a SCSI generic (sg) character device"
      : "a device-mapper multipath device";
    return [f("device", "ok", `${path} (${dev}) is ${what}`)];
  }
  const refused = "the helper refuses it: the guest sees ILLEGAL REQUEST, INVALID COMMAND " +
    'OPERATION CODE (05/20/00), i.e. "PR not supported"';
  if (facts.kind === "block" && facts.dmUuid !== null) {
    return [f(
      "device",
      "fail",
      `${path} (${dev}) is a device-mapper device that is not multipath (uuid "${facts.dmUuid}"); ` +
        refused,
      "give the VM the multipath device (/dev/mapper/mpathX, dm uuid mpath-…) or the SCSI disk " +
        "underneath; LVM, crypt and other dm targets cannot pass reservations on",
    )];
  }
  if (facts.kind === "block" && facts.partition) {
    const whole = probe.parent === null ? "the whole disk" : `the whole disk /dev/${probe.parent}`;
    return [f(
      "device",
      "fail",
      `${path} (${dev}) is a partition, not a whole disk; ${refused}`,
      `give the VM ${whole}: a reservation covers the whole LUN, so a partition cannot carry ` +
        "its own (and SG_IO from a partition would reach the whole disk)",
    )];
  }
  if (facts.kind === "block") {
    return [f(
      "device",
      "fail",
      `${path} (${dev}) is a block device but not a SCSI disk; ${refused}`,
      "PR passthrough needs a SCSI LUN (sd, sg, or dm-multipath over SCSI paths); virtio-blk, " +
        "NVMe, loop, md and rbd devices have no SCSI persistent reservations",
    )];
  }
  if (facts.kind === "char") {
    return [f(
      "device",
      "fail",
      `${path} (${dev}) is a character device but not a SCSI generic (sg) node; ${refused}`,
      "use the disk's sd block device, or its /dev/sgN node (lsscsi -g lists them)",
    )];
  }
  const kind = facts.kind === "regular" ? "a regular file" : `a ${facts.kind}`;
  return [f(
    "device",
    "fail",
    `${path} is ${kind}, not a device; ${refused}`,
    "persistent reservations need a SCSI LUN; a file-backed disk (raw or qcow2 image) has " +
      "none: give the VM a SCSI disk with <disk type='block' device='lun'>",
  )];
}

// ---------------------------------------------------------------- PR support

/** The outcome of REPORT CAPABILITIES (and, if that was refused, READ KEYS). */
export type CapabilitiesProbe =
  | { kind: "skipped"; why: string }
  | { kind: "error"; via: "helper" | "SG_IO"; message: string; errno?: string }
  | {
    kind: "reply";
    via: "helper" | "SG_IO";
    status: number;
    sense: Uint8Array;
    data: Uint8Array;
    /** READ KEYS' status, when REPORT CAPABILITIES was refused with ILLEGAL REQUEST. */
    readKeysStatus?: number;
  };

const TYPE_BITS: [keyof CapabilitiesData["types"], number][] = [
  ["writeExclusive", 1],
  ["exclusiveAccess", 3],
  ["writeExclusiveRegistrantsOnly", 5],
  ["exclusiveAccessRegistrantsOnly", 6],
  ["writeExclusiveAllRegistrants", 7],
  ["exclusiveAccessAllRegistrants", 8],
];

type CapabilitiesError = Extract<CapabilitiesProbe, { kind: "error" }>;
type CapabilitiesReply = Extract<CapabilitiesProbe, { kind: "reply" }>;

/** Findings about PR support (pure). */
export function capabilityFindings(probe: CapabilitiesProbe): Finding[] {
  if (probe.kind === "skipped") return [f("pr", "skip", `PR support not checked: ${probe.why}`)];
  if (probe.kind === "error") return capabilityErrorFindings(probe);
  const via = probe.via === "helper" ? "through the helper" : "by SG_IO";
  if (probe.status !== ScsiStatus.GOOD) return capabilityRefusalFindings(probe, via);
  return capabilitySupportFindings(probe, via);
}

/** REPORT CAPABILITIES could not be sent. */
function capabilityErrorFindings(probe: CapabilitiesError): Finding[] {
  if (probe.errno === "EPERM" || probe.errno === "EACCES") {
    return [f(
      "pr",
      "fail",
      `REPORT CAPABILITIES by ${probe.via} failed: ${probe.message}`,
      "SG_IO to a SCSI device needs CAP_SYS_RAWIO: run check as root, or give --socket to ask " +
        "through the daemon",
    )];
  }
  return [f(
    "pr",
    "fail",
    `REPORT CAPABILITIES by ${probe.via} failed: ${probe.message}`,
    probe.via === "helper"
      ? "see the daemon findings below and the daemon's log"
      : "check that the device answers SCSI commands (sg_inq DEVICE)",
  )];
}

/** REPORT CAPABILITIES answered with a status other than GOOD. */
function capabilityRefusalFindings(probe: CapabilitiesReply, via: string): Finding[] {
  const sense = parseSense(probe.sense);
  const code = probe.status === ScsiStatus.CHECK_CONDITION && sense !== null
    ? formatSense(sense)
    : null;
  const what = `REPORT CAPABILITIES ${via}: ${scsiStatusName(probe.status)}` +
    (code === null ? "" : ` ${code}`);
  if (code === "05/20/02") {
    return [f(
      "pr",
      "fail",
      `${what}: the helper refused access (SELinux or its peer policy)`,
      "see the SELinux findings (give --as with the VM's context) and the daemon's log " +
        "(prhelperd avc: lines)",
    )];
  }
  if (code?.startsWith("05/") && probe.readKeysStatus === ScsiStatus.GOOD) {
    return [f(
      "pr",
      "warn",
      `${what}, but READ KEYS works: the device has persistent reservations without ` +
        "REPORT CAPABILITIES (an SPC-2 device); types, ATP_C and PTPL_C are unknown",
      "nothing to do unless the guest needs REPORT CAPABILITIES (Windows failover clustering " +
        "asks for it)",
    )];
  }
  if (code === "05/20/00" || code === "05/24/00") {
    return [f(
      "pr",
      "fail",
      `${what}: the device does not support PERSISTENT RESERVE IN`,
      "use a device (or a target configuration) with SCSI-3 persistent reservations",
    )];
  }
  if (code === "0B/00/06" && probe.via === "helper") {
    return [f(
      "pr",
      "fail",
      `${what}: the helper's SG_IO failed (I/O PROCESS TERMINATED)`,
      "most often the daemon lacks CAP_SYS_RAWIO (see the daemon findings); else see its log",
    )];
  }
  return [f(
    "pr",
    "fail",
    `${what}`,
    probe.status === ScsiStatus.RESERVATION_CONFLICT
      ? "another initiator holds a reservation that blocks PR IN; see sg_persist -s"
      : "retry; if it persists, check the device and its paths (dmesg)",
  )];
}

/** What a GOOD REPORT CAPABILITIES says the device supports. */
function capabilitySupportFindings(probe: CapabilitiesReply, via: string): Finding[] {
  const caps = decodePrIn(PrInAction.REPORT_CAPABILITIES, probe.data, {
    allocationLength: MAX_DATA_LEN,
  }) as CapabilitiesData;
  if (caps.length !== 8) {
    return [f(
      "pr",
      "fail",
      `REPORT CAPABILITIES ${via}: malformed response (length ${caps.length}, expected 8)`,
      "the device's PR implementation is broken; try a firmware update",
    )];
  }
  const out: Finding[] = [];
  const flags = `ATP_C=${+caps.atpC} PTPL_C=${+caps.ptplC} PTPL_A=${+caps.ptplA} ` +
    `SIP_C=${+caps.sipC} CRH=${+caps.crh} RLR_C=${+caps.rlrC}`;
  if (!caps.tmv) {
    out.push(f(
      "pr",
      "ok",
      `PR supported (REPORT CAPABILITIES ${via}): ${flags}; no type mask (TMV=0): the device ` +
        "does not list its reservation types",
    ));
  } else {
    const have = TYPE_BITS.filter(([k]) => caps.types[k]).map(([, t]) => t);
    const missing = TYPE_BITS.filter(([k]) => !caps.types[k]).map(([, t]) => t);
    if (have.length === 0) {
      out.push(f(
        "pr",
        "fail",
        `REPORT CAPABILITIES ${via}: the type mask lists no reservation type (${flags})`,
        "the device cannot hold any reservation; use another device or target configuration",
      ));
    } else {
      out.push(f(
        "pr",
        "ok",
        `PR supported (REPORT CAPABILITIES ${via}): types ${
          have.map((t) => `${t} (${PR_TYPE_NAMES[t]})`).join(", ")
        }; ${flags}`,
      ));
      if (missing.length > 0) {
        out.push(f(
          "pr",
          "info",
          `reservation types not supported: ${
            missing.map((t) => `${t} (${PR_TYPE_NAMES[t]})`).join(", ")
          }`,
        ));
      }
    }
  }
  if (!caps.ptplC) {
    out.push(f(
      "pr",
      "info",
      "PTPL_C=0: reservations do not survive a power loss of the device (APTPL is refused)",
    ));
  }
  if (!caps.atpC) {
    out.push(f(
      "pr",
      "info",
      "ATP_C=0: a registration covers one target port only (ALL_TG_PT is refused)",
    ));
  }
  return out;
}

// ---------------------------------------------------------------- SELinux

/** What was learnt about SELinux. */
export interface SelinuxProbe {
  state: { kind: "off"; why: string } | { kind: "on"; enforcing: boolean };
  /** The device node's label. */
  deviceLabel?: string | { error: string };
  deviceKind?: DeviceKind;
  /** The daemon's context (/proc/PID/attr/current). */
  daemonContext?: string | null;
  /** `--as`. */
  clientContext?: string;
  /** The kernel's answer for (client, device, ioctl). */
  deviceAv?: AvAnswer;
  /** The kernel's answer for (client, daemon, unix_stream_socket connectto). */
  connectAv?: AvAnswer;
}

/** Findings about SELinux (pure). */
export function selinuxFindings(p: SelinuxProbe): Finding[] {
  if (p.state.kind === "off") {
    const out = [f(
      "selinux",
      "info",
      `SELinux is off (${p.state.why}): the daemon's per-request check allows every client`,
    )];
    if (p.clientContext !== undefined) {
      out.push(f("selinux", "skip", `--as ${p.clientContext} not checked: SELinux is off`));
    }
    return out;
  }
  const enforcing = p.state.enforcing;
  const out = [f("selinux", "info", `SELinux is on (${enforcing ? "enforcing" : "permissive"})`)];
  if (p.deviceLabel !== undefined) {
    out.push(
      typeof p.deviceLabel === "string"
        ? f("selinux", "info", `device label: ${p.deviceLabel}`)
        : f(
          "selinux",
          "fail",
          `the device's label cannot be read (${p.deviceLabel.error}): the daemon refuses every ` +
            "request on it",
          "relabel the device (restorecon DEVICE, or chcon)",
        ),
    );
  }
  if (p.daemonContext) out.push(f("selinux", "info", `daemon context: ${p.daemonContext}`));
  if (p.clientContext === undefined) {
    out.push(f(
      "selinux",
      "info",
      "give --as CONTEXT (the VM's qemu process context, e.g. from ps -Z) to check its access",
    ));
    return out;
  }
  if (p.deviceKind !== undefined && typeof p.deviceLabel === "string") {
    const d = decideAccess({
      selinux: { kind: "on", enforcing },
      peer: { context: p.clientContext },
      file: { context: p.deviceLabel },
      deviceKind: p.deviceKind,
      av: p.deviceAv,
    });
    const tclass = securityClassFor(p.deviceKind) ?? "?";
    const subject = `a client at ${p.clientContext} ${tclass}:ioctl on ${p.deviceLabel}`;
    const relabel = "label the device for the VM: for a disk shared by several VMs (the PR " +
      "case) libvirt uses svirt_image_t:s0 without categories (<shareable/>): " +
      "chcon -t svirt_image_t -l s0 DEVICE; for one VM, the VM's categories " +
      "(chcon -l s0:cA,cB DEVICE)";
    if (d.verdict === "allow" && !d.wouldDeny) {
      out.push(f("selinux", "ok", `${subject}: allowed`));
    } else if (d.verdict === "allow") {
      out.push(f(
        "selinux",
        "warn",
        `${subject}: denied by the policy, allowed only because ${
          d.reason === "permissive" ? "SELinux is permissive" : "the client's domain is permissive"
        }`,
        relabel,
      ));
    } else {
      out.push(f(
        "selinux",
        "fail",
        `${subject}: refused (${d.reason}${d.detail ? `: ${d.detail}` : ""}); the guest sees ` +
          "ILLEGAL REQUEST, ACCESS DENIED (05/20/02)",
        d.reason === "denied" ? relabel : "see the daemon's log (prhelperd avc: lines)",
      ));
    }
  }
  if (p.daemonContext && p.connectAv !== undefined) {
    const what = `a client at ${p.clientContext} unix_stream_socket:connectto ${p.daemonContext}`;
    if ("error" in p.connectAv) {
      out.push(f("selinux", "warn", `${what}: cannot be checked (${p.connectAv.error})`));
    } else if (p.connectAv.allowed) {
      out.push(f("selinux", "ok", `${what}: allowed`));
    } else if (!enforcing || p.connectAv.domainPermissive) {
      out.push(f(
        "selinux",
        "warn",
        `${what}: denied by the policy, allowed only in permissive mode`,
        "load prhelperd's policy module, or run the daemon in the domain the VM may connect " +
          "to (the one libvirt uses for qemu-pr-helper)",
      ));
    } else {
      out.push(f(
        "selinux",
        "fail",
        `${what}: denied; QEMU cannot even connect`,
        "load prhelperd's policy module, or run the daemon in the domain the VM may connect " +
          "to (the one libvirt uses for qemu-pr-helper)",
      ));
    }
  }
  return out;
}

// ---------------------------------------------------------------- daemon

/** What was learnt about the daemon behind `--socket`. */
export type DaemonProbe =
  | { kind: "skipped"; why: string }
  | { kind: "unreachable"; socket: string; code: string; message: string }
  | {
    kind: "found";
    socket: string;
    pid: number;
    features: number;
    status: StatusCreds | null;
    userName: string | null;
  };

const RAWIO = capBit(Cap.SYS_RAWIO);

/** Findings about the running daemon (pure). */
export function daemonFindings(p: DaemonProbe): Finding[] {
  if (p.kind === "skipped") return [f("daemon", "skip", `daemon not checked: ${p.why}`)];
  if (p.kind === "unreachable") {
    const fix = p.code === "ENOENT"
      ? "start the daemon (systemctl start prhelperd.socket) or give the socket path the VM " +
        "uses (<reservations managed='no'><source type='unix' path='…'/>)"
      : p.code === "ECONNREFUSED"
      ? "nothing listens there (a stale socket file): start or restart the daemon"
      : p.code === "EACCES"
      ? "run check as root (or as the QEMU user, to test its access)"
      : "check the daemon's log";
    return [f("daemon", "fail", `cannot talk to a helper at ${p.socket}: ${p.message}`, fix)];
  }
  const out: Finding[] = [];
  if (p.pid === 0 || p.status === null) {
    out.push(f(
      "daemon",
      "warn",
      `a helper answers at ${p.socket}, but its process cannot be inspected` +
        (p.pid === 0 ? " (it lives in another pid namespace)" : ` (/proc/${p.pid} unreadable)`),
      "run check in the daemon's pid namespace, as root",
    ));
    return out;
  }
  const s = p.status;
  const uid = s.uid[1] ?? s.uid[0];
  const gid = s.gid[1] ?? s.gid[0];
  out.push(f(
    "daemon",
    "info",
    `helper at ${p.socket}: pid ${p.pid} (${s.name}), uid ${uid}${
      p.userName ? ` (${p.userName})` : ""
    }, gid ${gid}, CapEff 0x${s.capEff.toString(16)}, features 0x${p.features.toString(16)}`,
  ));
  if ((s.capEff & RAWIO) === 0n) {
    out.push(f(
      "daemon",
      "fail",
      `the daemon (pid ${p.pid}) runs without CAP_SYS_RAWIO: every SG_IO to a SCSI device ` +
        "fails with EPERM, and the guest sees every PR command fail",
      "start prhelperd as root (it keeps only CAP_SYS_RAWIO), or give it " +
        "AmbientCapabilities=CAP_SYS_RAWIO with CAP_SYS_RAWIO in CapabilityBoundingSet " +
        "(prhelperd.service)",
    ));
  } else {
    out.push(f("daemon", "ok", `the daemon has CAP_SYS_RAWIO`));
  }
  const extra = s.capEff & ~RAWIO;
  if (extra !== 0n) {
    out.push(f(
      "daemon",
      "warn",
      `the daemon keeps capabilities beyond CAP_SYS_RAWIO (CapEff 0x${s.capEff.toString(16)})`,
      "it should need none but CAP_SYS_RAWIO: restart it (it drops the rest at start-up) and " +
        "check its unit's CapabilityBoundingSet",
    ));
  }
  return out;
}

// ---------------------------------------------------------------- multipathd

/** What was learnt about multipathd, for a multipath map (issue 18). */
export type MultipathdProbe =
  | { kind: "skipped" }
  | {
    kind: "asked";
    /** The map's dm name. */
    map: string;
    /** How multipathd answered `getprkey map MAP`, asked by check itself. */
    outcome: MultipathdOutcome;
    /** The daemon behind `--socket`: its uid and whether it shares check's network namespace. */
    daemon: { uid: number; sameNetns: boolean | null } | null;
  };

const MULTIPATHD_FIX = "run the helper as root in the host's network namespace (libvirt's " +
  "managed helper, prhelperd -u root), or accept that multipathd does not register the key on " +
  "reinstated paths (docs/DESIGN.md, Multipath)";

/** Findings about multipathd and whether the daemon can tell it its keys (pure). */
export function multipathdFindings(p: MultipathdProbe): Finding[] {
  if (p.kind === "skipped") return [];
  const o = p.outcome;
  const out: Finding[] = [];
  if (o.kind === "unreachable" || o.kind === "timeout" || o.kind === "broken") {
    return [f(
      "multipathd",
      "warn",
      `multipathd is not reachable (${o.kind === "unreachable" ? o.error : describeOutcome(o)}): ` +
        `PR commands on ${p.map} succeed, ` +
        "but a path that fails and comes back is not registered again, and the daemon logs " +
        "a warning for the map",
      "run multipathd with `reservation_key file` in multipath.conf",
    )];
  }
  if (o.kind === "not-root") {
    out.push(f(
      "multipathd",
      "info",
      "multipathd answers, but takes PR key commands from uid 0 only: run check as root to " +
        `see the key it keeps for ${p.map}`,
    ));
  } else if (o.kind === "fail" && !/^(0x[0-9a-f]+(:aptpl)?|none)$/i.test(o.reply)) {
    out.push(f(
      "multipathd",
      "warn",
      `multipathd refuses "getprkey map ${p.map}" ("${o.reply}"): it does not manage this map`,
      "let multipathd manage the map (multipath -ll lists it)",
    ));
  } else {
    // getprkey answers with the key ("0x5151", "0x5151:aptpl") or "none", not "ok"
    const key = o.reply.split("\n")[0].trim();
    out.push(f(
      "multipathd",
      "info",
      key === "none"
        ? `multipathd has no key for ${p.map} (nothing registered yet, or reservation_key ` +
          "is not `file` in multipath.conf)"
        : `multipathd keeps key ${key} for ${p.map} and registers it on reinstated paths`,
    ));
  }
  if (p.daemon === null) {
    out.push(f(
      "multipathd",
      "skip",
      "whether the daemon can tell multipathd its keys: give --socket PATH",
    ));
  } else if (p.daemon.sameNetns === false) {
    out.push(f(
      "multipathd",
      "warn",
      "the daemon runs in another network namespace (PrivateNetwork=yes in the packaged " +
        "unit): multipathd's abstract socket is out of its reach, so multipathd does not " +
        "learn the keys it registers",
      MULTIPATHD_FIX,
    ));
  } else if (p.daemon.uid !== 0) {
    out.push(f(
      "multipathd",
      "warn",
      `the daemon runs as uid ${p.daemon.uid}: multipathd refuses its commands ` +
        '("permission deny: need to be root"), so it does not learn the keys it registers',
      MULTIPATHD_FIX,
    ));
  } else {
    out.push(f(
      "multipathd",
      "ok",
      "the daemon (uid 0, this network namespace) can tell multipathd the keys it registers",
    ));
  }
  return out;
}

// ---------------------------------------------------------------- socket access

/** A local user who may run QEMU. */
export interface QemuUser {
  name: string;
  uid: number;
  /** Primary and supplementary groups. */
  gids: number[];
}

/** What was learnt about the socket file. */
export type SocketProbe =
  | { kind: "skipped"; why: string }
  | {
    kind: "stat";
    path: string;
    /** The socket file, or null if absent. */
    stat: FileStat | null;
    /** Each parent directory (outermost first). */
    dirs: { path: string; stat: FileStat }[];
    /** Users that exist among libvirt-qemu, qemu. */
    users: QemuUser[];
    /** The kvm group, if it exists. */
    kvmGroup: { gid: number } | null;
  };

/** Whether a user may access a file with the `want` bits (4 r, 2 w, 1 x), by mode. */
export function modeAllows(
  st: { mode: number; uid: number; gid: number },
  user: QemuUser,
  want: number,
): boolean {
  if (user.uid === 0) return true;
  if (st.uid === user.uid) return ((st.mode >> 6) & want) === want;
  if (user.gids.includes(st.gid)) return ((st.mode >> 3) & want) === want;
  return (st.mode & want) === want;
}

function modeText(st: FileStat): string {
  return `mode ${(st.mode & 0o7777).toString(8).padStart(4, "0")} owner ${st.uid} group ${st.gid}`;
}

/** Findings about who can connect to the socket (pure). */
export function socketFindings(p: SocketProbe): Finding[] {
  if (p.kind === "skipped") return [f("socket", "skip", `socket access not checked: ${p.why}`)];
  if (p.stat === null) {
    return [f("socket", "fail", `${p.path} does not exist`, "start the daemon, or fix --socket")];
  }
  if (p.stat.kind !== "socket") {
    return [f(
      "socket",
      "fail",
      `${p.path} is a ${p.stat.kind}, not a socket`,
      "remove it and restart the daemon",
    )];
  }
  const fix = (who: string) =>
    `let ${who} write to the socket and search its directories: with socket activation ` +
    "SocketGroup=kvm and SocketMode=0660 in prhelperd.socket; otherwise " +
    `chgrp kvm ${p.path} && chmod 0660 ${p.path} (and add ${who} to group kvm)`;
  if (p.users.length === 0) {
    const out = [f(
      "socket",
      "info",
      `${p.path}: ${modeText(p.stat)}; no QEMU user (libvirt-qemu, qemu) on this host`,
    )];
    if (p.kvmGroup !== null) {
      const member: QemuUser = { name: "kvm group", uid: -1, gids: [p.kvmGroup.gid] };
      const ok = modeAllows(p.stat, member, 2) &&
        p.dirs.every((d) => modeAllows(d.stat, member, 1));
      out.push(f(
        "socket",
        ok ? "ok" : "info",
        `members of group kvm (${p.kvmGroup.gid}) ${ok ? "can" : "cannot"} connect`,
      ));
    }
    return out;
  }
  const out: Finding[] = [];
  for (const u of p.users) {
    const blockedDir = p.dirs.find((d) => !modeAllows(d.stat, u, 1));
    if (blockedDir !== undefined) {
      out.push(f(
        "socket",
        "fail",
        `user ${u.name} (uid ${u.uid}) cannot reach ${p.path}: no search permission on ` +
          `${blockedDir.path} (${modeText(blockedDir.stat)})`,
        fix(u.name),
      ));
    } else if (!modeAllows(p.stat, u, 2)) {
      out.push(f(
        "socket",
        "fail",
        `user ${u.name} (uid ${u.uid}, groups ${u.gids.join(",")}) cannot connect to ${p.path} ` +
          `(${modeText(p.stat)}): connect(2) needs write permission`,
        fix(u.name),
      ));
    } else {
      out.push(f("socket", "ok", `user ${u.name} can connect to ${p.path} (${modeText(p.stat)})`));
    }
  }
  return out;
}

/** Supplementary groups of `user` from /etc/group text (pure). */
export function groupsOf(groupText: string, user: string): number[] {
  const out: number[] = [];
  for (const line of groupText.split("\n")) {
    const parts = line.split(":");
    if (parts.length < 4) continue;
    if (parts[3].split(",").map((m) => m.trim()).includes(user)) {
      const gid = Number(parts[2]);
      if (Number.isInteger(gid)) out.push(gid);
    }
  }
  return out;
}

// ---------------------------------------------------------------- report

const TAG: Record<FindingStatus, string> = {
  ok: "[ OK ]",
  info: "[INFO]",
  warn: "[WARN]",
  fail: "[FAIL]",
  skip: "[SKIP]",
};

/** The text report (pure). */
export function formatFindings(device: string, findings: Finding[]): string {
  let out = `prhelperd check ${device}\n`;
  for (const x of findings) {
    out += `${TAG[x.status]} ${x.area}: ${x.message}\n`;
    if (x.fix) out += `       fix: ${x.fix}\n`;
  }
  const fails = findings.filter((x) => x.status === "fail").length;
  const warns = findings.filter((x) => x.status === "warn").length;
  out += fails === 0
    ? `result: no problem found${warns ? ` (${warns} warning${warns > 1 ? "s" : ""})` : ""}\n`
    : `result: ${fails} problem${fails > 1 ? "s" : ""} found\n`;
  return out;
}

/** The exit status for a set of findings: 1 if anything failed. */
export function checkExitStatus(findings: Finding[]): number {
  return findings.some((x) => x.status === "fail") ? 1 : 0;
}
