/**
 * The audit trail: one record for every PERSISTENT RESERVE OUT that reaches a
 * device (i.e. passed every check and was handed to SG_IO, or failed in it).
 *
 * A record names the peer (pid, uid, gid, security context), the device
 * (major:minor, its unit serial number from VPD page 80h and its NAA
 * identifier from VPD page 83h / `wwid`, read from sysfs), the service action,
 * scope and type, and the result (SCSI status and sense, or the SG_IO error).
 *
 * {@linkcode auditProperties} gives the record as flat structured properties
 * for the logger (journald fields under the journal sink);
 * {@linkcode formatAudit} gives one `key=value` line that grep and journald
 * message matching can parse.
 *
 * @module
 */

import { readSmallBytes } from "../../ffi/files.ts";
import { parsePrCdb } from "../cdb.ts";
import { ScsiStatus } from "../wire.ts";

// ---------------------------------------------------------------- key=value

/** A value of a `key=value` field; null and undefined fields are left out. */
export type FieldValue = string | number | bigint | boolean | null | undefined;

/**
 * `k1=v1 k2=v2 …`: values with spaces, quotes, `=` or control characters (or
 * empty ones) are double-quoted with `\"`, `\\` and `\xNN` escapes, so every
 * line splits back into its fields.
 */
export function formatFields(fields: Record<string, FieldValue>): string {
  const parts: string[] = [];
  for (const [key, value] of Object.entries(fields)) {
    if (value === null || value === undefined) continue;
    parts.push(`${key}=${quoteValue(String(value))}`);
  }
  return parts.join(" ");
}

function quoteValue(v: string): string {
  let plain = v !== "";
  let esc = "";
  for (const ch of v) {
    const c = ch.codePointAt(0)!;
    if (c < 0x20 || c === 0x7f) {
      plain = false;
      esc += `\\x${c.toString(16).padStart(2, "0")}`;
    } else if (ch === '"' || ch === "\\") {
      plain = false;
      esc += `\\${ch}`;
    } else {
      if (ch === " " || ch === "=" || /\s/.test(ch)) plain = false;
      esc += ch;
    }
  }
  return plain ? v : `"${esc}"`;
}

// ---------------------------------------------------------------- PR OUT names

const TYPES: Record<number, string> = {
  0: "none",
  1: "Write Exclusive",
  3: "Exclusive Access",
  5: "Write Exclusive, Registrants Only",
  6: "Exclusive Access, Registrants Only",
  7: "Write Exclusive, All Registrants",
  8: "Exclusive Access, All Registrants",
};

/** The name of a persistent reservation type, e.g. 5 → "Write Exclusive, Registrants Only". */
export function prTypeName(type: number): string {
  return TYPES[type] ?? `reserved (${type})`;
}

// ---------------------------------------------------------------- device identity

/** What sysfs says about a device's identity; null fields were not available. */
export interface DeviceIdentity {
  /** Unit serial number (VPD page 80h). */
  serial: string | null;
  /** NAA designator of the logical unit (VPD page 83h), as `naa.<hex>`. */
  naa: string | null;
  /** The kernel's `wwid` attribute (its preferred LU designator, e.g. `naa.6001405…`). */
  wwid: string | null;
}

/** The unit serial number of a VPD page 80h, trimmed; null if the page is malformed. */
export function parseVpdPg80(page: Uint8Array): string | null {
  if (page.length < 4 || page[1] !== 0x80) return null;
  const len = (page[2] << 8) | page[3];
  const bytes = page.subarray(4, Math.min(page.length, 4 + len));
  let text = "";
  for (const b of bytes) {
    if (b === 0) break;
    text += b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : "?";
  }
  text = text.trim();
  return text === "" ? null : text;
}

/**
 * The first NAA designator (type 3) associated with the logical unit
 * (association 0) in a VPD page 83h, as `naa.` + lowercase hex; null if none.
 */
export function parseVpdPg83Naa(page: Uint8Array): string | null {
  if (page.length < 4 || page[1] !== 0x83) return null;
  const end = Math.min(page.length, 4 + ((page[2] << 8) | page[3]));
  let off = 4;
  while (off + 4 <= end) {
    const assoc = (page[off + 1] >> 4) & 0x3;
    const type = page[off + 1] & 0xf;
    const len = page[off + 3];
    const body = page.subarray(off + 4, Math.min(end, off + 4 + len));
    if (type === 3 && assoc === 0 && body.length === len && len > 0) {
      return "naa." + [...body].map((b) => b.toString(16).padStart(2, "0")).join("");
    }
    off += 4 + len;
  }
  return null;
}

function readSysfsBytes(path: string): Uint8Array | null {
  try {
    return readSmallBytes(path, 4096);
  } catch {
    return null; // unreadable: the record goes without it
  }
}

/**
 * Read a device's serial and NAA id from sysfs:
 * `/sys/dev/{block|char}/M:m/device/{vpd_pg80,vpd_pg83,wwid}`. For an sg node
 * (char) `device` is the same SCSI device as for its disk. Never throws.
 */
export function readDeviceIdentity(
  kind: "block" | "char",
  device: { major: number; minor: number },
): DeviceIdentity {
  const dir = `/sys/dev/${kind}/${device.major}:${device.minor}/device`;
  const pg80 = readSysfsBytes(`${dir}/vpd_pg80`);
  const pg83 = readSysfsBytes(`${dir}/vpd_pg83`);
  const wwidBytes = readSysfsBytes(`${dir}/wwid`);
  const wwid = wwidBytes === null ? null : new TextDecoder().decode(wwidBytes).replace(/\0/g, "")
    .trim() || null;
  const naa = (pg83 && parseVpdPg83Naa(pg83)) ??
    (wwid?.startsWith("naa.") ? wwid : null);
  return { serial: pg80 && parseVpdPg80(pg80), naa, wwid };
}

// ---------------------------------------------------------------- the record

/** How a PR OUT that reached the device ended. */
export type AuditResult =
  /** SG_IO completed: the SCSI status and, for CHECK CONDITION, the sense. */
  | { status: number; sense?: { key: number; asc: number; ascq: number } }
  /** SG_IO itself failed (errno name) or the transport reported an error. */
  | { error: string };

/** One audit record. */
export interface AuditRecord {
  peer: { pid: number; uid: number; gid: number; context: string | null };
  device: {
    kind: "block" | "char";
    major: number;
    minor: number;
    serial: string | null;
    naa: string | null;
  };
  /** Service action code and name. */
  serviceAction: number;
  serviceActionName: string;
  /** Scope (CDB byte 2 bits 7-4) and type (bits 3-0). */
  scope: number;
  type: number;
  typeName: string;
  result: AuditResult;
}

/** Inputs of {@linkcode buildAuditRecord}. */
export interface AuditInputs {
  peer: { pid: number; uid: number; gid: number; context: string | null };
  device: { kind: "block" | "char"; major: number; minor: number };
  /** The PR OUT CDB (0x5f). */
  cdb: Uint8Array;
  result: AuditResult;
  /** Identity of the device; read from sysfs when absent. */
  identity?: DeviceIdentity;
}

/** Build the record for one PR OUT (reads sysfs unless `identity` is given). */
export function buildAuditRecord(inputs: AuditInputs): AuditRecord {
  const { cdb, device } = inputs;
  const command = cdb[0] === 0x5f && cdb.length >= 10 ? parsePrCdb(cdb) : null;
  if (command === null) {
    throw new RangeError(
      `audit: CDB ${[...cdb.subarray(0, 2)].map((b) => b.toString(16)).join(" ")}… is not PR OUT`,
    );
  }
  const identity = inputs.identity ?? readDeviceIdentity(device.kind, device);
  return {
    peer: { ...inputs.peer },
    device: { ...device, serial: identity.serial, naa: identity.naa ?? identity.wwid },
    serviceAction: command.serviceAction,
    serviceActionName: command.serviceActionName,
    scope: command.scope,
    type: command.type,
    typeName: prTypeName(command.type),
    result: inputs.result,
  };
}

const STATUS_TOKENS: Record<number, string> = Object.fromEntries(
  Object.entries(ScsiStatus).map(([name, value]) => [value, name]),
);

const TYPE_TOKENS: Record<number, string> = {
  0: "none",
  1: "WE",
  3: "EA",
  5: "WE_RO",
  6: "EA_RO",
  7: "WE_AR",
  8: "EA_AR",
};

const hex2 = (n: number) => n.toString(16).padStart(2, "0");

/** The result as one token: `GOOD`, `RESERVATION_CONFLICT`, `CHECK_CONDITION`, `error:EIO`. */
export function describeResult(result: AuditResult): string {
  if ("error" in result) return `error:${result.error.replace(/\s+/g, "_")}`;
  return STATUS_TOKENS[result.status] ?? `status_0x${hex2(result.status)}`;
}

/** A value as it appears in a `key=value` line: unchanged, or double-quoted if it must be. */
export function quoteFieldValue(v: string): string {
  return quoteValue(v);
}

/**
 * The record as flat structured properties, every name-like value a token
 * without spaces (so a line made of `k=v` pairs stays parseable): `event`,
 * `peer_pid`, `peer_uid`, `peer_gid`, `peer_context`, `dev`, `dev_kind`,
 * `dev_serial`, `dev_naa`, `sa`, `sa_name` (e.g. `REGISTER_AND_MOVE`),
 * `scope`, `type`, `type_name` (`WE`, `EA`, `WE_RO`, `EA_RO`, `WE_AR`,
 * `EA_AR`), `status`, `sense` (`KK/AA/QQ`), `result`.
 * `peer_context`, `dev_serial`, `dev_naa` are free text (absent if unknown).
 */
export function auditProperties(record: AuditRecord): Record<string, string | number> {
  const out: Record<string, string | number> = {
    event: "pr-out",
    peer_pid: record.peer.pid,
    peer_uid: record.peer.uid,
    peer_gid: record.peer.gid,
  };
  if (record.peer.context !== null) out.peer_context = record.peer.context;
  out.dev = `${record.device.major}:${record.device.minor}`;
  out.dev_kind = record.device.kind;
  if (record.device.serial !== null) out.dev_serial = record.device.serial;
  if (record.device.naa !== null) out.dev_naa = record.device.naa;
  out.sa = record.serviceAction;
  out.sa_name = record.serviceActionName.replace(/\s+/g, "_");
  out.scope = record.scope;
  out.type = record.type;
  out.type_name = TYPE_TOKENS[record.type] ?? `reserved_${record.type}`;
  const r = record.result;
  if ("status" in r) {
    out.status = r.status;
    if (r.sense) out.sense = `${hex2(r.sense.key)}/${hex2(r.sense.asc)}/${hex2(r.sense.ascq)}`;
  }
  out.result = describeResult(r);
  return out;
}

/**
 * One greppable line:
 * `prhelperd audit: event=pr-out peer_pid=812 peer_uid=107 … sa_name=REGISTER … result=GOOD`.
 */
export function formatAudit(record: AuditRecord): string {
  return "prhelperd audit: " + formatFields(auditProperties(record));
}
