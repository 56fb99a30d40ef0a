/**
 * PERSISTENT RESERVE IN data (SPC-4 §6.16) decoded two ways, both pure:
 *
 * - as text, byte for byte what sg_persist (sg3_utils 1.46, sg_persist
 *   0.67) prints on stdout for the same response, including its `--hex`
 *   forms (`-H`, `-HH`, `-HHH`), so `prhelperd client` output can be
 *   compared with `sg_persist --no-inquiry` output;
 * - as plain data for `--json` (keys as `0x…` strings).
 *
 * And the exit status sg3_utils tools give for a SCSI status and sense
 * (sg_lib's "sense categories": 24 reservation conflict, 6 unit attention,
 * 5 illegal request, 9 invalid opcode, 11 aborted command, …), with the
 * one-line texts of `sg_exit2str()`.
 *
 * The response buffer is modelled as sg_persist allocates it: zero-filled,
 * so bytes the device did not send read as 0 (the helper sends `sz` bytes,
 * often fewer than the allocation length).
 *
 * @module
 */

import { PrInAction } from "../cdb.ts";
import { ScsiStatus } from "../wire.ts";

// ---------------------------------------------------------------- exit statuses

/** sg3_utils exit statuses (sg_lib.h `SG_LIB_*`) that the tools use. */
export const SgExit = {
  OK: 0,
  SYNTAX_ERROR: 1,
  NOT_READY: 2,
  MEDIUM_HARD: 3,
  ILLEGAL_REQ: 5,
  UNIT_ATTENTION: 6,
  DATA_PROTECT: 7,
  INVALID_OP: 9,
  COPY_ABORTED: 10,
  ABORTED_COMMAND: 11,
  MISCOMPARE: 14,
  FILE_ERROR: 15,
  NO_SENSE: 20,
  RECOVERED: 21,
  LBA_OUT_OF_RANGE: 22,
  RES_CONFLICT: 24,
  CONDITION_MET: 25,
  BUSY: 26,
  TS_FULL: 27,
  ACA_ACTIVE: 28,
  TASK_ABORTED: 29,
  CONTRADICT: 31,
  PROTECTION: 40,
  OS_BASE_ERR: 50,
  MALFORMED: 97,
  SENSE: 98,
  OTHER: 99,
} as const;

const EXIT_TEXT: ReadonlyMap<number, string> = new Map([
  [0, "No errors"],
  [1, "Syntax error"],
  [2, "Device not ready"],
  [3, "Medium or hardware error"],
  [5, "Illegal request"],
  [6, "Unit attention"],
  [7, "Data protect"],
  [9, "Illegal request, Invalid opcode"],
  [10, "Copy aborted"],
  [11, "Aborted command"],
  [14, "Miscompare"],
  [15, "File error"],
  [20, "No sense key"],
  [21, "Recovered error (warning)"],
  [22, "LBA out of range"],
  [24, "Reservation conflict"],
  [25, "Condition met"],
  [26, "Busy"],
  [27, "Task set full"],
  [28, "ACA aactive"], // sic, as sg_lib spells it
  [29, "Task aborted"],
  [31, "Contradict"],
  [32, "Logic error"],
  [33, "SCSI command timeout"],
  [40, "Aborted command, protection error"],
  [50, "An OS error occurred"],
  [97, "Malformed SCSI command"],
  [98, "Some other sense error"],
  [99, "Some other error"],
]);

/**
 * `sg_exit2str()`'s short text for an exit status ("Reservation conflict");
 * for 51..96 the OS error text is not known here, so "OS error: errno N".
 */
export function exitStatusText(code: number): string {
  if (code > SgExit.OS_BASE_ERR && code < SgExit.MALFORMED) {
    return `OS error: errno ${code - SgExit.OS_BASE_ERR}`;
  }
  return EXIT_TEXT.get(code) ?? `Sense category: ${code}`;
}

/** `sg_convert_errno()`: an errno as an exit status (50 + errno, or 50). */
export function exitStatusForErrno(errno: number): number {
  if (errno <= 0) return errno < 0 ? SgExit.OS_BASE_ERR : 0;
  return errno < SgExit.MALFORMED - SgExit.OS_BASE_ERR ? SgExit.OS_BASE_ERR + errno : 50;
}

/** `sg_err_category_sense()`: the category of fixed or descriptor sense. */
export function senseCategory(sense: Uint8Array): number {
  const rc = (sense[0] ?? 0) & 0x7f;
  if (sense.length < 3 || rc < 0x70 || rc > 0x73) return SgExit.SENSE;
  let key: number, asc = 0, ascq = 0;
  if (rc >= 0x72) {
    key = sense[1] & 0x0f;
    asc = sense[2] ?? 0;
    ascq = sense[3] ?? 0;
  } else {
    key = sense[2] & 0x0f;
    const len = sense.length > 7 ? Math.min(sense.length, sense[7] + 8) : sense.length;
    if (len > 12) asc = sense[12];
    if (len > 13) ascq = sense[13];
  }
  switch (key) {
    case 0x0:
      return SgExit.NO_SENSE;
    case 0x1:
      return SgExit.RECOVERED;
    case 0x2:
      return SgExit.NOT_READY;
    case 0x3:
    case 0x4:
    case 0x8:
      return SgExit.MEDIUM_HARD;
    case 0x6:
      return SgExit.UNIT_ATTENTION;
    case 0x5:
      if (asc === 0x20 && ascq === 0x00) return SgExit.INVALID_OP;
      if (asc === 0x21 && ascq === 0x00) return SgExit.LBA_OUT_OF_RANGE;
      return SgExit.ILLEGAL_REQ;
    case 0xb:
      return asc === 0x10 ? SgExit.PROTECTION : SgExit.ABORTED_COMMAND;
    case 0xe:
      return SgExit.MISCOMPARE;
    case 0x7:
      return SgExit.DATA_PROTECT;
    case 0xa:
      return SgExit.COPY_ABORTED;
    default:
      return SgExit.SENSE;
  }
}

/**
 * The exit status sg_persist gives for a command's SCSI status and sense
 * (sg_cmds_process_resp + sg_ll_persistent_reserve_in/out): 0 for GOOD and
 * for CHECK CONDITION with NO SENSE or RECOVERED ERROR, 24 for RESERVATION
 * CONFLICT, the sense category for CHECK CONDITION / COMMAND TERMINATED.
 * A status sg_lib does not classify is 99 here (sg_persist says 0 and
 * decodes an empty buffer: a bug we do not copy).
 */
export function exitStatusFor(status: number, sense: Uint8Array): number {
  const st = status & 0x7e;
  if (st === 0) return SgExit.OK;
  if (st === ScsiStatus.CHECK_CONDITION || st === 0x22) {
    const cat = senseCategory(sense);
    return cat === SgExit.RECOVERED || cat === SgExit.NO_SENSE ? SgExit.OK : cat;
  }
  switch (st) {
    case ScsiStatus.RESERVATION_CONFLICT:
      return SgExit.RES_CONFLICT;
    case 0x04:
      return SgExit.CONDITION_MET;
    case ScsiStatus.BUSY:
      return SgExit.BUSY;
    case ScsiStatus.TASK_SET_FULL:
      return SgExit.TS_FULL;
    case 0x30:
      return SgExit.ACA_ACTIVE;
    case 0x40:
      return SgExit.TASK_ABORTED;
    default:
      return SgExit.OTHER;
  }
}

const STATUS_NAMES: ReadonlyMap<number, string> = new Map([
  [0x00, "Good"],
  [0x02, "Check Condition"],
  [0x04, "Condition Met"],
  [0x08, "Busy"],
  [0x10, "Intermediate (obsolete)"],
  [0x14, "Intermediate-Condition Met (obsolete)"],
  [0x18, "Reservation Conflict"],
  [0x22, "Command terminated (obsolete)"],
  [0x28, "Task Set Full"],
  [0x30, "ACA Active"],
  [0x40, "Task Aborted"],
]);

/** The name of a SCSI status byte, as sg_lib writes it ("Reservation Conflict"). */
export function scsiStatusName(status: number): string {
  return STATUS_NAMES.get(status & 0xfe) ??
    `Unknown status [0x${(status & 0xff).toString(16)}]`;
}

// ---------------------------------------------------------------- names

/** Service action names as sg_persist prints them (index = service action). */
export const PRIN_SA_NAMES: readonly string[] = [
  "Read keys",
  "Read reservation",
  "Report capabilities",
  "Read full status",
];

/** PR OUT service action names as sg_persist prints them. */
export const PROUT_SA_NAMES: readonly string[] = [
  "Register",
  "Reserve",
  "Release",
  "Clear",
  "Preempt",
  "Preempt and abort",
  "Register and ignore existing key",
  "Register and move",
  "Replace lost reservation",
];

/** Reservation type names (index = TYPE), as sg_persist prints them. */
export const PR_TYPE_NAMES: readonly string[] = [
  "obsolete [0]",
  "Write Exclusive",
  "obsolete [2]",
  "Exclusive Access",
  "obsolete [4]",
  "Write Exclusive, registrants only",
  "Exclusive Access, registrants only",
  "Write Exclusive, all registrants",
  "Exclusive Access, all registrants",
  "obsolete [9]",
  "obsolete [0xa]",
  "obsolete [0xb]",
  "obsolete [0xc]",
  "obsolete [0xd]",
  "obsolete [0xe]",
  "obsolete [0xf]",
];

// ---------------------------------------------------------------- hex dumps

const isPrint = (c: number) => c >= 0x20 && c < 0x7f;
const hex2 = (n: number) => n.toString(16).padStart(2, "0");

/**
 * sg_lib's `hex2stdout(bytes, len, noAscii)`: with `noAscii` 0 an address
 * column and ASCII at the right, 1 address but no ASCII, -1 bare bytes.
 * 16 bytes a line, an extra space after the 8th.
 */
export function hexDump(bytes: Uint8Array, noAscii: 0 | 1 | -1): string {
  let out = "";
  if (bytes.length === 0) return out;
  if (noAscii < 0) {
    let line = "";
    bytes.forEach((b, k) => {
      if (k % 16 === 8) line += " ";
      line += `${hex2(b)} `;
      if (k % 16 === 15) {
        out += `${line.trimEnd()}\n`;
        line = "";
      }
    });
    if (line !== "") out += `${line.trimEnd()}\n`;
    return out;
  }
  for (let a = 0; a < bytes.length; a += 16) {
    const chunk = bytes.subarray(a, a + 16);
    const buf = new Array<string>(80).fill(" ");
    const addr = hex2(a);
    for (let i = 0; i < addr.length; i++) buf[1 + i] = addr[i];
    chunk.forEach((b, i) => {
      const pos = 8 + 3 * i + (i >= 8 ? 1 : 0);
      const h = hex2(b);
      buf[pos] = h[0];
      buf[pos + 1] = h[1];
      buf[60 + i] = noAscii ? " " : (isPrint(b) ? String.fromCharCode(b) : ".");
    });
    const line = buf.slice(0, 60 + chunk.length).join("");
    out += `${noAscii ? line.trimEnd() : line}\n`;
  }
  return out;
}

/** sg_lib's `hex2str(bytes, len, leadin, format)` (format 1: no ASCII column). */
export function hexString(bytes: Uint8Array, leadin: string, format: 0 | 1): string {
  let out = "";
  for (let a = 0; a < bytes.length; a += 16) {
    const chunk = bytes.subarray(a, a + 16);
    let line = leadin;
    let ascii = "";
    chunk.forEach((b, i) => {
      if (i === 8) line += " ";
      line += `${hex2(b)} `;
      ascii += isPrint(b) ? String.fromCharCode(b) : ".";
    });
    line = line.trimEnd();
    out += format === 1
      ? `${line}\n`
      : `${line.padEnd(leadin.length + 49)}   ${ascii.padEnd(16)}\n`;
  }
  return out;
}

/**
 * The bytes of text made by {@linkcode formatPrIn}: one byte per char
 * (it holds only U+0000..U+00FF), so device bytes come out unchanged.
 */
export function latin1Bytes(text: string): Uint8Array {
  const out = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) out[i] = text.charCodeAt(i) & 0xff;
  return out;
}

// ---------------------------------------------------------------- the response buffer

/**
 * The response as sg_persist sees it: a zero-filled buffer of the
 * allocation length holding the received bytes. Reads past the end give 0
 * (sg_persist's buffer has a page of zeroed slack); loops stop at `limit`.
 */
class Buffer {
  readonly bytes: Uint8Array;
  /** How far sg_persist could read before leaving its allocation. */
  readonly limit: number;

  constructor(data: Uint8Array, allocationLength: number) {
    this.limit = Math.max(allocationLength, 8) + 4096;
    this.bytes = new Uint8Array(Math.max(allocationLength, data.length, 8));
    this.bytes.set(data);
  }

  u8(off: number): number {
    return this.bytes[off] ?? 0;
  }

  be16(off: number): number {
    return (this.u8(off) << 8) | this.u8(off + 1);
  }

  be32(off: number): number {
    return ((this.u8(off) << 24) | (this.u8(off + 1) << 16) | (this.u8(off + 2) << 8) |
      this.u8(off + 3)) >>> 0;
  }

  /** A signed 32-bit value (sg_persist keeps the additional length in an int). */
  s32(off: number): number {
    return this.be32(off) | 0;
  }

  be64(off: number): bigint {
    return (BigInt(this.be32(off)) << 32n) | BigInt(this.be32(off + 4));
  }

  slice(off: number, len: number): Uint8Array {
    const out = new Uint8Array(Math.max(0, Math.min(len, this.limit - off)));
    out.set(this.bytes.subarray(off, off + out.length));
    return out;
  }
}

const key = (v: bigint) => `0x${v.toString(16)}`;

// ---------------------------------------------------------------- structured decode

/** READ KEYS parameter data. */
export interface ReadKeysData {
  serviceAction: "read-keys";
  generation: number;
  additionalLength: number;
  /** Reservation keys, `0x…` (lower-case hex, no padding). */
  keys: string[];
}

/** READ RESERVATION parameter data. */
export interface ReadReservationData {
  serviceAction: "read-reservation";
  generation: number;
  additionalLength: number;
  reservation: null | { key: string; scope: number; type: number; typeName: string };
}

/** REPORT CAPABILITIES parameter data. */
export interface CapabilitiesData {
  serviceAction: "report-capabilities";
  length: number;
  /** Replace Lost Reservation Capable. */
  rlrC: boolean;
  /** Compatible Reservation Handling. */
  crh: boolean;
  /** Specify Initiator Ports Capable. */
  sipC: boolean;
  /** All Target Ports Capable. */
  atpC: boolean;
  /** Persist Through Power Loss Capable. */
  ptplC: boolean;
  /** Type Mask Valid. */
  tmv: boolean;
  allowCommands: number;
  /** Persist Through Power Loss Active. */
  ptplA: boolean;
  /** Supported reservation types (only meaningful when `tmv`). */
  types: {
    writeExclusive: boolean;
    exclusiveAccess: boolean;
    writeExclusiveRegistrantsOnly: boolean;
    exclusiveAccessRegistrantsOnly: boolean;
    writeExclusiveAllRegistrants: boolean;
    exclusiveAccessAllRegistrants: boolean;
  };
}

/** A decoded TransportID. */
export interface TransportIdInfo {
  /** Protocol identifier (SPC-4 table 362). */
  protocolId: number;
  format: number;
  /** e.g. "SAS", "iSCSI", "FCP". */
  protocol: string;
  /** SAS address, FC/1394 name, iSCSI name, … when the protocol defines one. */
  address?: string;
  /** The TransportID bytes in hex. */
  hex: string;
}

/** One READ FULL STATUS descriptor. */
export interface FullStatusDescriptor {
  key: string;
  allTargetPorts: boolean;
  relativeTargetPort: number;
  holder: boolean;
  scope: number;
  type: number;
  typeName: string;
  transportId: TransportIdInfo | null;
}

/** READ FULL STATUS parameter data. */
export interface FullStatusData {
  serviceAction: "read-full-status";
  generation: number;
  additionalLength: number;
  descriptors: FullStatusDescriptor[];
}

/** Any decoded PR IN data. */
export type PrInData =
  | ReadKeysData
  | ReadReservationData
  | CapabilitiesData
  | FullStatusData
  | { serviceAction: string; hex: string };

const PROTOCOLS = [
  "FCP",
  "SPI",
  "SSA",
  "IEEE 1394",
  "SRP",
  "iSCSI",
  "SAS",
  "ADT",
  "ATA",
  "UAS",
  "SOP",
  "PCIe",
];

/** Decode one TransportID (SPC-4 §7.6.4). */
export function decodeTransportId(tid: Uint8Array): TransportIdInfo {
  const b = new Buffer(tid, tid.length);
  const protocolId = b.u8(0) & 0x0f;
  const format = b.u8(0) >> 6;
  const info: TransportIdInfo = {
    protocolId,
    format,
    protocol: protocolId === 0xf ? "none" : (PROTOCOLS[protocolId] ?? `0x${protocolId}`),
    hex: Array.from(tid, hex2).join(""),
  };
  const hexOf = (off: number, len: number) => Array.from(b.slice(off, len), hex2).join("");
  switch (protocolId) {
    case 0x0:
    case 0x3:
      info.address = `0x${hexOf(8, 8)}`;
      break;
    case 0x4:
      info.address = `0x${hexOf(8, 16)}`;
      break;
    case 0x6:
      info.address = key(b.be64(4));
      break;
    case 0x5: {
      const n = b.be16(2);
      const raw = b.slice(4, n);
      const end = raw.indexOf(0);
      info.address = new TextDecoder().decode(end < 0 ? raw : raw.subarray(0, end));
      break;
    }
  }
  return info;
}

/** Decode PR IN parameter data into plain data (for `--json`). */
export function decodePrIn(
  serviceAction: number,
  data: Uint8Array,
  options: { allocationLength?: number } = {},
): PrInData {
  const b = new Buffer(data, options.allocationLength ?? data.length);
  switch (serviceAction) {
    case PrInAction.READ_KEYS: {
      const addLen = b.s32(4);
      const keys: string[] = [];
      for (let off = 8; off < 8 + Math.max(0, addLen) - 7 && off + 8 <= b.limit; off += 8) {
        keys.push(key(b.be64(off)));
      }
      return { serviceAction: "read-keys", generation: b.be32(0), additionalLength: addLen, keys };
    }
    case PrInAction.READ_RESERVATION: {
      const addLen = b.s32(4);
      const type = b.u8(21) & 0x0f;
      return {
        serviceAction: "read-reservation",
        generation: b.be32(0),
        additionalLength: addLen,
        reservation: addLen >= 16
          ? { key: key(b.be64(8)), scope: b.u8(21) >> 4, type, typeName: PR_TYPE_NAMES[type] }
          : null,
      };
    }
    case PrInAction.REPORT_CAPABILITIES: {
      const f2 = b.u8(2), f3 = b.u8(3), t4 = b.u8(4), t5 = b.u8(5);
      return {
        serviceAction: "report-capabilities",
        length: b.be16(0),
        rlrC: (f2 & 0x80) !== 0,
        crh: (f2 & 0x10) !== 0,
        sipC: (f2 & 0x08) !== 0,
        atpC: (f2 & 0x04) !== 0,
        ptplC: (f2 & 0x01) !== 0,
        tmv: (f3 & 0x80) !== 0,
        allowCommands: (f3 >> 4) & 0x7,
        ptplA: (f3 & 0x01) !== 0,
        types: {
          writeExclusive: (t4 & 0x02) !== 0,
          exclusiveAccess: (t4 & 0x08) !== 0,
          writeExclusiveRegistrantsOnly: (t4 & 0x20) !== 0,
          exclusiveAccessRegistrantsOnly: (t4 & 0x40) !== 0,
          writeExclusiveAllRegistrants: (t4 & 0x80) !== 0,
          exclusiveAccessAllRegistrants: (t5 & 0x01) !== 0,
        },
      };
    }
    case PrInAction.READ_FULL_STATUS: {
      const addLen = b.s32(4);
      const descriptors: FullStatusDescriptor[] = [];
      for (const d of fullStatusDescriptors(b, addLen)) {
        const type = b.u8(d + 13) & 0x0f;
        const tidLen = b.be32(d + 20);
        descriptors.push({
          key: key(b.be64(d)),
          allTargetPorts: (b.u8(d + 12) & 0x02) !== 0,
          relativeTargetPort: b.be16(d + 18),
          holder: (b.u8(d + 12) & 0x01) !== 0,
          scope: b.u8(d + 13) >> 4,
          type,
          typeName: PR_TYPE_NAMES[type],
          transportId: tidLen > 0 ? decodeTransportId(b.slice(d + 24, tidLen)) : null,
        });
      }
      return {
        serviceAction: "read-full-status",
        generation: b.be32(0),
        additionalLength: addLen,
        descriptors,
      };
    }
    default:
      return {
        serviceAction: `0x${serviceAction.toString(16)}`,
        hex: Array.from(data, hex2).join(""),
      };
  }
}

/** Offsets of the READ FULL STATUS descriptors, walked as sg_persist walks them. */
function* fullStatusDescriptors(b: Buffer, addLen: number): Generator<number> {
  let off = 8;
  for (let k = 0; k < addLen && off + 24 <= b.limit;) {
    yield off;
    const num = 24 + b.be32(off + 20);
    k += num;
    off += num;
  }
}

// ---------------------------------------------------------------- sg_persist text

/** What sg_persist would print for a PR IN response. */
export interface SgPersistText {
  stdout: string;
  stderr: string;
  /** 0, or 97 (malformed REPORT CAPABILITIES response). */
  exitStatus: number;
}

/** Options of {@linkcode formatPrIn}. */
export interface FormatPrInOptions {
  /** The allocation length the command was sent with (sg_persist's default 8192). */
  allocationLength: number;
  /** How many times `--hex` was given (0 = decoded text). */
  hex?: number;
}

/**
 * Format a GOOD PR IN response exactly as sg_persist 0.67 prints it on
 * stdout (the INQUIRY lines it prints first unless `--no-inquiry` are not
 * part of this).
 */
export function formatPrIn(
  serviceAction: number,
  data: Uint8Array,
  options: FormatPrInOptions,
): SgPersistText {
  const allocLen = options.allocationLength;
  const hex = options.hex ?? 0;
  const b = new Buffer(data, allocLen);
  let out = "";
  if (serviceAction === PrInAction.REPORT_CAPABILITIES) return formatCapabilities(b, hex);

  const gen = b.be32(0);
  const addLen = b.s32(4);
  if (hex) {
    if (hex > 1) {
      out += hexDump(b.slice(0, addLen + 8), hex === 2 ? 1 : -1);
    } else {
      out += `  PR generation=0x${gen.toString(16)}, `;
      if (addLen <= 0) out += `Additional length=${addLen}\n`;
      if ((addLen >>> 0) > ((allocLen - 8) >>> 0)) {
        out += `Additional length too large=${addLen}, truncate\n`;
        out += hexDump(b.slice(8, allocLen - 8), 1);
      } else {
        out += `Additional length=${addLen}\n`;
        out += hexDump(b.slice(8, addLen), 1);
      }
    }
    return { stdout: out, stderr: "", exitStatus: 0 };
  }
  switch (serviceAction) {
    case PrInAction.READ_KEYS: {
      out += `  PR generation=0x${gen.toString(16)}, `;
      const num = Math.trunc(addLen / 8);
      if (num > 0) {
        out += num === 1
          ? "1 registered reservation key follows:\n"
          : `${num} registered reservation keys follow:\n`;
        for (let k = 0, off = 8; k < num && off + 8 <= b.limit; k++, off += 8) {
          out += `    ${key(b.be64(off))}\n`;
        }
      } else {
        out += "there are NO registered reservation keys\n";
      }
      break;
    }
    case PrInAction.READ_RESERVATION: {
      out += `  PR generation=0x${gen.toString(16)}, `;
      if (Math.trunc(addLen / 16) > 0) {
        out += "Reservation follows:\n";
        out += `    Key=${key(b.be64(8))}\n`;
        const scope = b.u8(21) >> 4;
        out += scope === 0 ? "    scope: LU_SCOPE, " : `    scope: ${scope} `;
        out += ` type: ${PR_TYPE_NAMES[b.u8(21) & 0xf]}\n`;
      } else {
        out += "there is NO reservation held\n";
      }
      break;
    }
    case PrInAction.READ_FULL_STATUS:
      out += formatFullStatus(b, gen, addLen);
      break;
    default:
      // sg_persist cannot send other PR IN service actions; show the bytes.
      out += hexDump(b.slice(0, Math.max(8, data.length)), 1);
  }
  return { stdout: out, stderr: "", exitStatus: 0 };
}

/** sg_persist's REPORT CAPABILITIES output (its hex dump with `hex`). */
function formatCapabilities(b: Buffer, hex: number): SgPersistText {
  let out = "";
  if (b.u8(1) !== 8) {
    return {
      stdout: hex ? hexDump(b.slice(0, b.u8(1)), 1) : "",
      stderr: "Unexpected response for PRIN Report Capabilities\n",
      exitStatus: SgExit.MALFORMED,
    };
  }
  if (hex) return { stdout: hexDump(b.slice(0, 8), 1), stderr: "", exitStatus: 0 };
  const bit = (v: number, m: number) => ((v & m) !== 0 ? 1 : 0);
  const f2 = b.u8(2), f3 = b.u8(3), t4 = b.u8(4), t5 = b.u8(5);
  out += "Report capabilities response:\n";
  out += `  Replace Lost Reservation Capable(RLR_C): ${bit(f2, 0x80)}\n`;
  out += `  Compatible Reservation Handling(CRH): ${bit(f2, 0x10)}\n`;
  out += `  Specify Initiator Ports Capable(SIP_C): ${bit(f2, 0x08)}\n`;
  out += `  All Target Ports Capable(ATP_C): ${bit(f2, 0x04)}\n`;
  out += `  Persist Through Power Loss Capable(PTPL_C): ${bit(f2, 0x01)}\n`;
  out += `  Type Mask Valid(TMV): ${bit(f3, 0x80)}\n`;
  out += `  Allow Commands: ${(f3 >> 4) & 0x7}\n`;
  out += `  Persist Through Power Loss Active(PTPL_A): ${bit(f3, 0x01)}\n`;
  if (f3 & 0x80) {
    out += "    Support indicated in Type mask:\n";
    out += `      ${PR_TYPE_NAMES[7]}: ${bit(t4, 0x80)}\n`;
    out += `      ${PR_TYPE_NAMES[6]}: ${bit(t4, 0x40)}\n`;
    out += `      ${PR_TYPE_NAMES[5]}: ${bit(t4, 0x20)}\n`;
    out += `      ${PR_TYPE_NAMES[3]}: ${bit(t4, 0x08)}\n`;
    out += `      ${PR_TYPE_NAMES[1]}: ${bit(t4, 0x02)}\n`;
    out += `      ${PR_TYPE_NAMES[8]}: ${bit(t5, 0x01)}\n`;
  }
  return { stdout: out, stderr: "", exitStatus: 0 };
}

/** sg_persist's READ FULL STATUS output. */
function formatFullStatus(b: Buffer, gen: number, addLen: number): string {
  let out = "";
  out += `  PR generation=0x${gen.toString(16)}\n`;
  if (addLen === 0) out += "  No full status descriptors\n";
  for (const d of fullStatusDescriptors(b, addLen)) {
    const addDescLen = b.s32(d + 20);
    out += `    Key=${key(b.be64(d))}\n`;
    if (b.u8(d + 12) & 0x2) {
      out += "      All target ports bit set\n";
    } else {
      out += "      All target ports bit clear\n";
      out += `      Relative port address: 0x${b.be16(d + 18).toString(16)}\n`;
    }
    if (b.u8(d + 12) & 0x1) {
      out += "      << Reservation holder >>\n";
      const scope = b.u8(d + 13) >> 4;
      out += scope === 0 ? "      scope: LU_SCOPE, " : `      scope: ${scope} `;
      out += ` type: ${PR_TYPE_NAMES[b.u8(d + 13) & 0xf]}\n`;
    } else {
      out += "      not reservation holder\n";
    }
    if (addDescLen > 0) {
      // sg_lib reads an iSCSI name for its own length, even past the descriptor
      out += transportIdText("      ", b.slice(d + 24, b.limit), addDescLen);
    }
  }
  return out;
}

/**
 * sg_lib's `sg_decode_transportid_str(leadin, tid, len, only_one=true,
 * blen=1024)`, as sg_persist calls it for READ FULL STATUS.
 */
export function transportIdText(lip: string, tid: Uint8Array, declaredLength: number): string {
  const b = new Buffer(tid, Math.max(tid.length, 24));
  let out = declaredLength < 24 || declaredLength % 4 !== 0
    // sic: sg_lib prints its output buffer's size (1024) here, not the length
    ? `${lip}Transport Id short or not multiple of 4 [length=1024]:\n`
    : `${lip}Transport Id of initiator:\n`;
  const format = b.u8(0) >> 6;
  const proto = b.u8(0) & 0x0f;
  const normalLen = Math.min(declaredLength, 24);
  const unexpected = format !== 0 ? `${lip}  [Unexpected TPID format: ${format}]\n` : "";
  const generic = (name: string) =>
    `${lip}  ${name}:\n${lip}  TPID format: ${format}\n${hexString(b.slice(0, normalLen), lip, 1)}`;
  switch (proto) {
    case 0x0:
      out += `${lip}  FCP-2 World Wide Name:\n${unexpected}${hexString(b.slice(8, 8), lip, 1)}`;
      break;
    case 0x1:
      out += `${lip}  Parallel SCSI initiator SCSI address: 0x${b.be16(2).toString(16)}\n`;
      out += unexpected;
      out += `${lip}  relative port number (of corresponding target): 0x${
        b.be16(6).toString(16)
      }\n`;
      break;
    case 0x2:
      out += generic("SSA (transport id not defined)");
      break;
    case 0x3:
      out += `${lip}  IEEE 1394 EUI-64 name:\n${unexpected}${hexString(b.slice(8, 8), lip, 1)}`;
      break;
    case 0x4:
      out += `${lip}  RDMA initiator port identifier:\n${unexpected}${
        hexString(b.slice(8, 16), lip, 1)
      }`;
      break;
    case 0x5: {
      const num = b.be16(2);
      const raw = b.slice(4, num);
      const end = raw.indexOf(0);
      // one char per byte (U+0000..U+00FF): written out with latin1Bytes, as sg_persist's %s
      const name = String.fromCharCode(...(end < 0 ? raw : raw.subarray(0, end)));
      out += `${lip}  iSCSI `;
      if (format === 0) out += `name: ${name}\n`;
      else if (format === 1) out += `world wide unique port id: ${name}\n`;
      else {
        out += `  [Unexpected TPID format: ${format}]\n`;
        out += hexString(b.slice(0, num + 4), lip, 0);
      }
      break;
    }
    case 0x6:
      out += `${lip}  SAS address: ${key(b.be64(4))}\n${unexpected}`;
      break;
    case 0x7:
      out += generic("ADT");
      break;
    case 0x8:
      out += generic("ATAPI");
      break;
    case 0x9:
      out += generic("UAS");
      break;
    case 0xa:
      out += `${lip}  SOP `;
      if (format === 0) out += `Routing ID: 0x${b.be16(2).toString(16)}\n`;
      else {
        out += `  [Unexpected TPID format: ${format}]\n`;
        out += hexString(b.slice(0, normalLen), lip, 1);
      }
      break;
    case 0xb:
      out += generic("PCIE");
      break;
    case 0xf:
      out += `${lip}  No specified protocol\n`;
      break;
    default:
      out += `${lip}  unknown protocol id=0x${proto.toString(16)}  TPID format=${format}\n`;
      out += hexString(b.slice(0, normalLen), lip, 1);
  }
  // sg_persist decodes into char b[1024]: the text is cut at 1023 characters
  return out.slice(0, 1023);
}
