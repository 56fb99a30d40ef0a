/**
 * Sense data the helper makes itself, and the mapping from an SG_IO outcome
 * (errno, host_status, driver_status, device status) to the reply's status and
 * sense. Pure: no I/O.
 *
 * The mapping follows qemu-pr-helper's table (errno first, then host_status,
 * then driver_status, then the device's own status and sense unchanged), with
 * one deliberate difference: a host_status the table does not list is an
 * error (CHECK CONDITION, ABORTED COMMAND / LOGICAL UNIT COMMUNICATION
 * FAILURE), never GOOD as upstream returns it.
 *
 * @module
 */

import { Errno, type ErrnoResult } from "../ffi/errno.ts";
import type { SgIoDone } from "../ffi/sgio.ts";
import { ScsiStatus, SENSE_LEN } from "./wire.ts";

/** A sense key with its additional sense code and qualifier. */
export interface SenseCode {
  /** Sense key, e.g. {@linkcode SenseKey.ILLEGAL_REQUEST}. */
  key: number;
  /** Additional sense code. */
  asc: number;
  /** Additional sense code qualifier. */
  ascq: number;
}

function code(key: number, asc: number, ascq: number): SenseCode {
  return { key, asc, ascq };
}

/** Sense keys (SPC) the daemon and its tools test for, by name. */
export const SenseKey = {
  NOT_READY: 0x02,
  MEDIUM_ERROR: 0x03,
  HARDWARE_ERROR: 0x04,
  ILLEGAL_REQUEST: 0x05,
  UNIT_ATTENTION: 0x06,
  DATA_PROTECT: 0x07,
  ABORTED_COMMAND: 0x0b,
} as const;

const SENSE_CODES: Record<SenseName, SenseCode> = {
  /**
   * 05/20/00 ILLEGAL REQUEST, INVALID COMMAND OPERATION CODE: PR OUT on a
   * read-only fd; a device the helper will not pass PR to.
   */
  INVALID_OPCODE: code(0x05, 0x20, 0x00),
  /** 05/20/02 ILLEGAL REQUEST, ACCESS DENIED - NO ACCESS RIGHTS: the access policy refused. */
  ACCESS_DENIED: code(0x05, 0x20, 0x02),
  /** 05/24/00 ILLEGAL REQUEST, INVALID FIELD IN CDB. */
  INVALID_FIELD: code(0x05, 0x24, 0x00),
  /** 05/26/00 ILLEGAL REQUEST, INVALID FIELD IN PARAMETER LIST. */
  INVALID_PARAM: code(0x05, 0x26, 0x00),
  /** 05/1A/00 ILLEGAL REQUEST, PARAMETER LIST LENGTH ERROR. */
  INVALID_PARAM_LEN: code(0x05, 0x1a, 0x00),
  /** 0B/00/06 ABORTED COMMAND, I/O PROCESS TERMINATED. */
  IO_ERROR: code(0x0b, 0x00, 0x06),
  /** 0B/08/00 ABORTED COMMAND, LOGICAL UNIT COMMUNICATION FAILURE. */
  LUN_COMM_FAILURE: code(0x0b, 0x08, 0x00),
  /** 0B/05/00 ABORTED COMMAND, LOGICAL UNIT DOES NOT RESPOND TO SELECTION. */
  NO_LUN: code(0x0b, 0x05, 0x00),
  /** 0B/2E/02 ABORTED COMMAND, COMMAND TIMEOUT. */
  COMMAND_TIMEOUT: code(0x0b, 0x2e, 0x02),
  /** 0B/2F/02 ABORTED COMMAND, COMMANDS CLEARED BY DEVICE SERVER. */
  COMMAND_ABORTED: code(0x0b, 0x2f, 0x02),
  /** 0B/29/07 ABORTED COMMAND, I_T NEXUS LOSS OCCURRED. */
  NEXUS_LOSS: code(0x0b, 0x29, 0x07),
  /** 04/44/00 HARDWARE ERROR, INTERNAL TARGET FAILURE. */
  TARGET_FAILURE: code(0x04, 0x44, 0x00),
  /** 03/11/00 MEDIUM ERROR, UNRECOVERED READ ERROR. */
  READ_ERROR: code(0x03, 0x11, 0x00),
  /** 02/3A/00 NOT READY, MEDIUM NOT PRESENT. */
  NO_MEDIUM: code(0x02, 0x3a, 0x00),
  /** 02/04/00 NOT READY, CAUSE NOT REPORTABLE. */
  NOT_READY: code(0x02, 0x04, 0x00),
  /** 07/27/07 DATA PROTECT, SPACE ALLOCATION FAILED. */
  SPACE_ALLOC_FAILED: code(0x07, 0x27, 0x07),
  /** 06/29/00 UNIT ATTENTION, POWER ON, RESET, OR BUS DEVICE RESET OCCURRED. */
  DEVICE_RESET: code(0x06, 0x29, 0x00),
};

/** The names of {@linkcode Sense}. */
export type SenseName =
  | "INVALID_OPCODE"
  | "ACCESS_DENIED"
  | "INVALID_FIELD"
  | "INVALID_PARAM"
  | "INVALID_PARAM_LEN"
  | "IO_ERROR"
  | "LUN_COMM_FAILURE"
  | "NO_LUN"
  | "COMMAND_TIMEOUT"
  | "COMMAND_ABORTED"
  | "NEXUS_LOSS"
  | "TARGET_FAILURE"
  | "READ_ERROR"
  | "NO_MEDIUM"
  | "NOT_READY"
  | "SPACE_ALLOC_FAILED"
  | "DEVICE_RESET";

/** Every sense code this helper produces, by meaning. */
export const Sense: Readonly<Record<SenseName, SenseCode>> = SENSE_CODES;

/** 96 bytes of fixed-format sense (response code 0x70, additional length 10). */
export function fixedSense(sense: SenseCode): Uint8Array {
  const out = new Uint8Array(SENSE_LEN);
  out[0] = 0x70;
  out[2] = sense.key & 0x0f;
  out[7] = 0x0a;
  out[12] = sense.asc;
  out[13] = sense.ascq;
  return out;
}

/** Key/ASC/ASCQ of fixed (0x70/0x71) or descriptor (0x72/0x73) sense; null if neither. */
export function parseSense(sense: Uint8Array): SenseCode | null {
  const rc = sense[0] & 0x7f;
  if (rc === 0x70 || rc === 0x71) {
    return code(sense[2] & 0x0f, sense[12] ?? 0, sense[13] ?? 0);
  }
  if (rc === 0x72 || rc === 0x73) return code(sense[1] & 0x0f, sense[2], sense[3]);
  return null;
}

/** `KK/AA/QQ` in hex, as sense is written in logs and docs. */
export function formatSense(sense: SenseCode): string {
  const h = (n: number) => n.toString(16).toUpperCase().padStart(2, "0");
  return `${h(sense.key)}/${h(sense.asc)}/${h(sense.ascq)}`;
}

/** Status and sense of a reply the helper builds. */
export interface Verdict {
  /** SCSI status byte, e.g. {@linkcode ScsiStatus.CHECK_CONDITION}. */
  status: number;
  /** Fixed-format sense ({@linkcode SENSE_LEN} bytes; zeros without CHECK CONDITION). */
  sense: Uint8Array;
}

/** CHECK CONDITION with the given fixed-format sense. */
export function checkCondition(sense: SenseCode): Verdict {
  return { status: ScsiStatus.CHECK_CONDITION, sense: fixedSense(sense) };
}

function statusOnly(status: number): Verdict {
  return { status, sense: new Uint8Array(SENSE_LEN) };
}

/** The reply for an SG_IO ioctl that failed with `errno` (qemu-pr-helper's table). */
export function verdictForErrno(errno: number): Verdict {
  switch (errno) {
    case Errno.EDOM:
      return statusOnly(ScsiStatus.TASK_SET_FULL);
    case Errno.EREMOTEIO:
    case Errno.ENODEV:
    case Errno.ENOMEM:
      return checkCondition(Sense.TARGET_FAILURE);
    case Errno.EBADE:
      return statusOnly(ScsiStatus.RESERVATION_CONFLICT);
    case Errno.ENODATA:
      return checkCondition(Sense.READ_ERROR);
    case Errno.ENOMEDIUM:
      return checkCondition(Sense.NO_MEDIUM);
    case Errno.EINVAL:
      return checkCondition(Sense.INVALID_FIELD);
    case Errno.ENOSPC:
      return checkCondition(Sense.SPACE_ALLOC_FAILED);
    default:
      return checkCondition(Sense.IO_ERROR);
  }
}

/** Linux SCSI host byte values (DID_*) that have a mapping. */
export const HostStatus = {
  OK: 0x00,
  NO_CONNECT: 0x01,
  BUS_BUSY: 0x02,
  TIME_OUT: 0x03,
  BAD_TARGET: 0x04,
  ABORT: 0x05,
  PARITY: 0x06,
  ERROR: 0x07,
  RESET: 0x08,
  TRANSPORT_DISRUPTED: 0x0e,
  TARGET_FAILURE: 0x10,
  NEXUS_FAILURE: 0x11,
  ALLOC_FAILURE: 0x12,
  MEDIUM_ERROR: 0x13,
} as const;

/** The reply for a non-zero host_status. Unlisted values are errors, never GOOD. */
export function verdictForHostStatus(host: number): Verdict {
  switch (host) {
    case HostStatus.NO_CONNECT:
      return checkCondition(Sense.NO_LUN);
    case HostStatus.BUS_BUSY:
      return statusOnly(ScsiStatus.BUSY);
    case HostStatus.TIME_OUT:
      return checkCondition(Sense.COMMAND_TIMEOUT);
    case HostStatus.BAD_TARGET:
      return checkCondition(Sense.LUN_COMM_FAILURE);
    case HostStatus.ABORT:
      return checkCondition(Sense.COMMAND_ABORTED);
    case HostStatus.RESET:
      return checkCondition(Sense.DEVICE_RESET);
    case HostStatus.TRANSPORT_DISRUPTED:
      return checkCondition(Sense.NEXUS_LOSS);
    case HostStatus.TARGET_FAILURE:
      return checkCondition(Sense.TARGET_FAILURE);
    case HostStatus.NEXUS_FAILURE:
      return statusOnly(ScsiStatus.RESERVATION_CONFLICT);
    case HostStatus.ALLOC_FAILURE:
      return checkCondition(Sense.SPACE_ALLOC_FAILED);
    case HostStatus.MEDIUM_ERROR:
      return checkCondition(Sense.READ_ERROR);
    default:
      // upstream answers GOOD here (e.g. DID_ERROR); that would hide a failed command
      return checkCondition(Sense.LUN_COMM_FAILURE);
  }
}

/** driver_status value meaning the driver timed the command out (low nibble). */
export const DRIVER_TIMEOUT = 0x06;

/** What SG_IO returned, in the shape the mapping needs (ffi/sgio.ts's result without its extras). */
export type SgIoOutcome = ErrnoResult | SgIoDone;

/** The reply's status, sense and data length for an SG_IO outcome. */
export interface MappedOutcome extends Verdict {
  /** Valid data-in bytes (only meaningful with GOOD). */
  dataLength: number;
}

/**
 * Map an SG_IO outcome to status/sense, in qemu-pr-helper's order: errno,
 * host_status, driver timeout, then the device's status and sense unchanged.
 * `transferLength` is the dxfer_len the ioctl was issued with.
 */
export function mapSgIoOutcome(outcome: SgIoOutcome, transferLength: number): MappedOutcome {
  if (outcome.kind === "errno") return { ...verdictForErrno(outcome.errno), dataLength: 0 };
  if (outcome.hostStatus !== HostStatus.OK) {
    return { ...verdictForHostStatus(outcome.hostStatus), dataLength: 0 };
  }
  if ((outcome.driverStatus & 0x0f) === DRIVER_TIMEOUT) {
    return { ...statusOnly(ScsiStatus.BUSY), dataLength: 0 };
  }
  const sense = new Uint8Array(SENSE_LEN);
  sense.set(outcome.sense.subarray(0, SENSE_LEN));
  const resid = Math.max(0, Math.min(outcome.resid, transferLength));
  return {
    status: outcome.status & 0xff,
    sense,
    dataLength: outcome.status === ScsiStatus.GOOD ? transferLength - resid : 0,
  };
}
