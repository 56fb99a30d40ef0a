/**
 * `prhelperd check`'s probes: the I/O that gathers what
 * src/commands/check_findings.ts judges (the device, REPORT CAPABILITIES through
 * the helper or by SG_IO, SELinux labels and access vectors, the daemon's
 * credentials, the socket's mode), and {@linkcode runCheck}, which runs them
 * all. Never throws for what it finds.
 *
 * @module
 */

import {
  closeFd,
  type FileStat,
  fstatFd,
  O_CLOEXEC,
  O_NONBLOCK,
  O_RDONLY,
  openPath,
  readLink,
  readSmallFile,
  statPath,
} from "../../ffi/files.ts";
import { peerCred } from "../../ffi/sockets.ts";
import { SysError } from "../../ffi/errno.ts";
import { DATA_IN_BUFFER_LEN, residAgainst, sgIo } from "../../ffi/sgio.ts";
import { groupByName, userById, userByName } from "../../ffi/privileges.ts";
import {
  type Libselinux,
  openLibselinux,
  SELINUX_AVD_FLAGS_PERMISSIVE,
} from "../../ffi/selinux.ts";
import {
  type AvAnswer,
  type DeviceKind,
  securityClassFor,
  selinuxActive,
} from "../security/access_policy.ts";
import { PrInAction, prInCdb } from "../cdb.ts";
import { PrHelperClient } from "../client.ts";
import { decideDevice, probeDevice } from "../device_check.ts";
import { parseStatus, type StatusCreds } from "../security/privileges.ts";
import { mapSgIoOutcome, parseSense, SenseKey } from "../sense.ts";
import { readKernelSelinuxFacts } from "../security/selinux_access.ts";
import { MAX_DATA_LEN, ScsiStatus } from "../wire.ts";
import { mapName } from "../multipath.ts";
import { askMultipathdSync } from "../multipathd.ts";
import { isUsableAlias } from "../multipathd_plan.ts";
import {
  type CapabilitiesProbe,
  capabilityFindings,
  daemonFindings,
  type DaemonProbe,
  deviceFindings,
  type DeviceProbe,
  type Finding,
  groupsOf,
  multipathdFindings,
  type MultipathdProbe,
  type QemuUser,
  selinuxFindings,
  type SelinuxProbe,
  socketFindings,
  type SocketProbe,
} from "./check_findings.ts";

/** What `prhelperd check` was asked. */
export interface CheckOptions {
  device: string;
  socket: string | null;
  as: string | null;
  json: boolean;
  timeoutMs: number;
}

function errorCode(e: unknown): { code: string; errno: number; message: string } {
  if (e instanceof SysError) return { code: e.code, errno: e.errno, message: e.message };
  return { code: "", errno: -1, message: e instanceof Error ? e.message : String(e) };
}

function probeDevicePath(path: string): { probe: DeviceProbe; fd: number | null } {
  let fd: number;
  try {
    fd = openPath(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  } catch (e) {
    const err = errorCode(e);
    return { probe: { kind: "error", errno: err.errno, code: err.code || err.message }, fd: null };
  }
  const facts = probeDevice(fd);
  let parent: string | null = null;
  if (facts.kind === "block" && facts.partition) {
    // /sys/dev/block/M:m -> ../../devices/…/block/sda/sda1
    const link = readLink(`/sys/dev/block/${facts.major}:${facts.minor}`);
    const parts = link?.split("/") ?? [];
    parent = parts.length >= 2 ? parts[parts.length - 2] : null;
  }
  return { probe: { kind: "facts", facts, parent }, fd };
}

function probeCapabilities(
  fd: number,
  client: PrHelperClient | null,
  timeoutMs: number,
): CapabilitiesProbe {
  const via = client !== null ? "helper" : "SG_IO";
  const ask = (sa: number): { status: number; sense: Uint8Array; data: Uint8Array } => {
    const cdb = prInCdb(sa, MAX_DATA_LEN);
    if (client !== null) return client.request(cdb, fd);
    // the daemon's data-in buffer: slack past the allocation length (ffi/sgio.ts)
    const data = new Uint8Array(DATA_IN_BUFFER_LEN);
    const r = sgIo(fd, { cdb: cdb.subarray(0, 10), direction: "in", data, timeoutMs });
    if (r.kind === "errno") {
      throw new SysError("ioctl", r.errno, "SG_IO");
    }
    const m = mapSgIoOutcome(
      { ...r, resid: residAgainst(MAX_DATA_LEN, data.length, r.resid) },
      MAX_DATA_LEN,
    );
    return { status: m.status, sense: m.sense, data: data.subarray(0, m.dataLength) };
  };
  try {
    const r = ask(PrInAction.REPORT_CAPABILITIES);
    const out: CapabilitiesProbe = { kind: "reply", via, ...r };
    const sense = parseSense(r.sense);
    if (
      r.status === ScsiStatus.CHECK_CONDITION && sense?.key === SenseKey.ILLEGAL_REQUEST &&
      sense.asc !== 0x20
    ) {
      out.readKeysStatus = ask(PrInAction.READ_KEYS).status;
    }
    return out;
  } catch (e) {
    const err = errorCode(e);
    return { kind: "error", via, message: err.message, errno: err.code };
  }
}

function avQuery(
  lib: Libselinux,
  q: { scon: string; tcon: string; tclass: string; perm: string },
): AvAnswer {
  try {
    const cls = lib.securityClass(q.tclass);
    const perm = lib.avPerm(cls, q.perm);
    const avd = lib.computeAv(q.scon, q.tcon, { tclass: cls, requested: perm });
    return {
      allowed: (avd.allowed & perm) === perm,
      domainPermissive: (avd.flags & SELINUX_AVD_FLAGS_PERMISSIVE) !== 0,
    };
  } catch (e) {
    return { error: e instanceof Error ? e.message : String(e) };
  }
}

function probeSelinux(
  fd: number | null,
  deviceKind: DeviceKind | undefined,
  daemonPid: number | null,
  clientContext: string | null,
): SelinuxProbe {
  const load = openLibselinux();
  const base = clientContext === null ? {} : { clientContext };
  // "active" as the daemon decides it: from the kernel, never is_selinux_enabled()
  const { active, evidence } = selinuxActive(readKernelSelinuxFacts());
  if (!load.ok) {
    return {
      ...base,
      state: {
        kind: "off",
        why: active
          ? `SELinux is active but libselinux cannot be loaded (${load.message}); the daemon ` +
            "then refuses every request"
          : "libselinux not available",
      },
    };
  }
  const lib = load.lib;
  try {
    if (!active) {
      return { ...base, state: { kind: "off", why: `SELinux not active (${evidence})` } };
    }
    const p: SelinuxProbe = { ...base, state: { kind: "on", enforcing: lib.getEnforce() } };
    if (fd !== null && deviceKind !== undefined) {
      p.deviceKind = deviceKind;
      try {
        p.deviceLabel = lib.fileContext(fd);
      } catch (e) {
        p.deviceLabel = { error: e instanceof Error ? e.message : String(e) };
      }
    }
    if (daemonPid !== null && daemonPid > 0) {
      const ctx = readSmallFile(`/proc/${daemonPid}/attr/current`, 4096);
      p.daemonContext = ctx === null ? null : ctx.replace(/\0/g, "").trim() || null;
    }
    if (clientContext !== null) {
      const tclass = deviceKind === undefined ? null : securityClassFor(deviceKind);
      if (typeof p.deviceLabel === "string" && tclass !== null) {
        p.deviceAv = avQuery(lib, {
          scon: clientContext,
          tcon: p.deviceLabel,
          tclass,
          perm: "ioctl",
        });
      }
      if (p.daemonContext) {
        p.connectAv = avQuery(lib, {
          scon: clientContext,
          tcon: p.daemonContext,
          tclass: "unix_stream_socket",
          perm: "connectto",
        });
      }
    }
    return p;
  } finally {
    lib.close();
  }
}

function probeDaemon(socket: string, timeoutMs: number): {
  probe: DaemonProbe;
  client: PrHelperClient | null;
} {
  let client: PrHelperClient;
  try {
    client = PrHelperClient.connect(socket, { timeoutMs });
  } catch (e) {
    const err = errorCode(e);
    return {
      probe: { kind: "unreachable", socket, code: err.code, message: err.message },
      client: null,
    };
  }
  const cred = peerCred(client.raw.fd);
  let status: StatusCreds | null = null;
  let userName: string | null = null;
  if (cred.pid > 0) {
    try {
      const text = readSmallFile(`/proc/${cred.pid}/status`, 1 << 16);
      status = text === null ? null : parseStatus(text);
    } catch {
      status = null;
    }
    if (status !== null) {
      try {
        userName = userById(status.uid[1] ?? status.uid[0])?.name ?? null;
      } catch {
        userName = null;
      }
    }
  }
  return {
    probe: {
      kind: "found",
      socket,
      pid: cred.pid,
      features: client.helperFeatures,
      status,
      userName,
    },
    client,
  };
}

function probeSocket(path: string): SocketProbe {
  const stat = statPath(path);
  const dirs: { path: string; stat: FileStat }[] = [];
  const abs = path.startsWith("/") ? path : `${Deno.cwd()}/${path}`;
  const parts = abs.split("/").filter((x) => x !== "");
  for (let i = 0; i < parts.length; i++) {
    const d = `/${parts.slice(0, i).join("/")}`;
    const st = statPath(d);
    if (st !== null) dirs.push({ path: d, stat: st });
  }
  const groupText = readSmallFile("/etc/group", 1 << 22) ?? "";
  const users: QemuUser[] = [];
  for (const name of ["libvirt-qemu", "qemu"]) {
    const u = userByName(name);
    if (u !== null) users.push({ name, uid: u.uid, gids: [u.gid, ...groupsOf(groupText, name)] });
  }
  const kvm = groupByName("kvm");
  return {
    kind: "stat",
    path,
    stat,
    dirs,
    users,
    kvmGroup: kvm === null ? null : { gid: kvm.gid },
  };
}

/**
 * For a multipath map: ask multipathd for the map's key (as check's own
 * user), and compare the daemon's uid and network namespace with what
 * multipathd needs (uid 0, the namespace its abstract socket lives in).
 */
function probeMultipathd(
  device: DeviceProbe,
  daemon: DaemonProbe,
  timeoutMs: number,
): MultipathdProbe {
  if (device.kind !== "facts") return { kind: "skipped" };
  const decision = decideDevice(device.facts);
  if (!decision.ok || decision.deviceClass !== "multipath") return { kind: "skipped" };
  const map = mapName(device.facts.major, device.facts.minor);
  if (map === null || !isUsableAlias(map)) return { kind: "skipped" };
  const outcome = askMultipathdSync(`getprkey map ${map}`, {
    timeoutMs: Math.min(timeoutMs, 4000),
  });
  let probed: { uid: number; sameNetns: boolean | null } | null = null;
  if (daemon.kind === "found" && daemon.status !== null) {
    const link = (path: string) => {
      try {
        return readLink(path);
      } catch {
        return null; // another user's process: not ours to inspect
      }
    };
    const theirs = link(`/proc/${daemon.pid}/ns/net`);
    const ours = link("/proc/self/ns/net");
    probed = {
      uid: daemon.status.uid[1] ?? daemon.status.uid[0],
      sameNetns: theirs === null || ours === null ? null : theirs === ours,
    };
  }
  return { kind: "asked", map, outcome, daemon: probed };
}

/** Run every check; never throws for what it finds. */
export function runCheck(o: CheckOptions): Finding[] {
  const findings: Finding[] = [];
  const { probe, fd } = probeDevicePath(o.device);
  try {
    findings.push(...deviceFindings(o.device, probe));
    const deviceOk = probe.kind === "facts" && decideDevice(probe.facts).ok;
    let daemon: { probe: DaemonProbe; client: PrHelperClient | null } = {
      probe: { kind: "skipped", why: "give --socket PATH to check a running daemon" },
      client: null,
    };
    if (o.socket !== null) daemon = probeDaemon(o.socket, o.timeoutMs);
    try {
      let caps: CapabilitiesProbe;
      if (!deviceOk || fd === null) {
        caps = { kind: "skipped", why: "the device is not one the helper accepts" };
      } else if (o.socket !== null && daemon.client === null) {
        caps = { kind: "skipped", why: "the helper cannot be reached" };
      } else {
        caps = probeCapabilities(fd, daemon.client, o.timeoutMs);
      }
      findings.push(...capabilityFindings(caps));
      const kind = fd === null ? undefined : fstatFd(fd).kind;
      const pid = daemon.probe.kind === "found" ? daemon.probe.pid : null;
      findings.push(...selinuxFindings(probeSelinux(fd, kind, pid, o.as)));
      findings.push(...daemonFindings(daemon.probe));
      findings.push(...multipathdFindings(probeMultipathd(probe, daemon.probe, o.timeoutMs)));
      findings.push(
        ...socketFindings(
          o.socket === null ? { kind: "skipped", why: "no --socket given" } : probeSocket(o.socket),
        ),
      );
    } finally {
      daemon.client?.close();
    }
  } finally {
    if (fd !== null) closeFd(fd);
  }
  return findings;
}
