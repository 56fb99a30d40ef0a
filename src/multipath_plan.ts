/**
 * The pure half of multipath support: how a PR OUT becomes one of the
 * kernel's block-layer PR ioctls (or the refusal a device would give for what
 * they cannot carry), the TransportID parser that decides that refusal's
 * sense, and how an ioctl's or a path's outcome maps to a reply or to "try
 * another path". No I/O: src/multipath.ts runs the plans; ffi/pr_ioctl.ts
 * encodes the structs.
 *
 * PR OUT, how each service action is carried:
 *
 * | SA | name                             | ioctl                                   |
 * |---:|----------------------------------|-----------------------------------------|
 * |  0 | REGISTER                         | IOC_PR_REGISTER (old=key, new=sa key)   |
 * |  1 | RESERVE                          | IOC_PR_RESERVE (key, type)              |
 * |  2 | RELEASE                          | IOC_PR_RELEASE (key, type)              |
 * |  3 | CLEAR                            | IOC_PR_CLEAR (key)                      |
 * |  4 | PREEMPT                          | IOC_PR_PREEMPT (old=key, new=sa key)    |
 * |  5 | PREEMPT AND ABORT                | IOC_PR_PREEMPT_ABORT                    |
 * |  6 | REGISTER AND IGNORE EXISTING KEY | IOC_PR_REGISTER + PR_FL_IGNORE_KEY      |
 * |  7 | REGISTER AND MOVE                | refused 05/24/00 (no ioctl carries it)  |
 * |  8 | REPLACE LOST RESERVATION         | refused 05/24/00                        |
 * | 9+ | reserved                         | refused 05/24/00                        |
 *
 * Refused in the parameter list (the ioctls have no field for them):
 * SPEC_I_PT with TransportIDs (05/26/00 once the list parses; a malformed
 * list gets the sense a device would give), ALL_TG_PT on REGISTER (05/26/00).
 *
 * @module
 */

import { Errno } from "../ffi/errno.ts";
import type { PrIoctlCall, PrIoctlResult } from "../ffi/pr_ioctl.ts";
import { type PrCommand, PrOutAction, PrOutFlags, PrType } from "./cdb.ts";
import type { SgIoRun } from "./executor.ts";
import {
  checkCondition,
  parseSense,
  Sense,
  type SenseCode,
  SenseKey,
  type Verdict,
  verdictForErrno,
  verdictForHostStatus,
} from "./sense.ts";
import { MAX_DATA_LEN, ScsiStatus, SENSE_LEN } from "./wire.ts";

/** Largest PR OUT parameter list the protocol carries. */
export const MAX_PARAMETER_LIST = MAX_DATA_LEN;

// ---------------------------------------------------------------- TransportIDs

/** One TransportID of a SPEC_I_PT parameter list (SPC-4 7.6.4). */
export interface TransportId {
  /** PROTOCOL IDENTIFIER (byte 0, bits 3-0): 0 FC, 5 iSCSI, 6 SAS, ... */
  protocol: number;
  /** FORMAT CODE (byte 0, bits 7-6). */
  format: number;
  /** The TransportID's bytes. */
  bytes: Uint8Array;
}

/** Protocols whose TransportID is 24 bytes, format 0: FC, SPI, SBP, SRP, SAS, SOP. */
const FIXED_TID_PROTOCOLS: ReadonlySet<number> = new Set([0x0, 0x1, 0x3, 0x4, 0x6, 0xa]);
const ISCSI = 0x5;

/** Outcome of {@linkcode parseTransportIds}. */
export type TransportIdParse =
  | { ok: true; ids: TransportId[] }
  | { ok: false; sense: SenseCode; reason: string };

/**
 * Split a TransportID list (the bytes after the TRANSPORTID PARAMETER DATA
 * LENGTH field) into TransportIDs. Any number fits, as long as the list does.
 * A TransportID cut off by the end of the list is a PARAMETER LIST LENGTH
 * ERROR (05/1A/00); an unknown protocol or format, or an iSCSI name that is
 * not NUL-terminated or whose length is not a multiple of 4 (at least 20), is
 * INVALID FIELD IN PARAMETER LIST (05/26/00).
 */
export function parseTransportIds(list: Uint8Array): TransportIdParse {
  const ids: TransportId[] = [];
  let at = 0;
  while (at < list.length) {
    const left = list.length - at;
    if (left < 4) {
      return { ok: false, sense: Sense.INVALID_PARAM_LEN, reason: `TransportID at ${at} is cut` };
    }
    const protocol = list[at] & 0x0f;
    const format = list[at] >> 6;
    let size: number;
    if (protocol === ISCSI) {
      if (format > 1) {
        return { ok: false, sense: Sense.INVALID_PARAM, reason: `iSCSI format ${format}` };
      }
      const additional = (list[at + 2] << 8) | list[at + 3];
      if (additional < 20 || additional % 4 !== 0) {
        return {
          ok: false,
          sense: Sense.INVALID_PARAM,
          reason: `iSCSI TransportID at ${at} has additional length ${additional}`,
        };
      }
      size = 4 + additional;
      if (size > left) {
        return { ok: false, sense: Sense.INVALID_PARAM_LEN, reason: `TransportID at ${at} is cut` };
      }
      if (list.subarray(at + 4, at + size).indexOf(0) < 0) {
        return {
          ok: false,
          sense: Sense.INVALID_PARAM,
          reason: `iSCSI name at ${at} is not NUL-terminated`,
        };
      }
    } else if (FIXED_TID_PROTOCOLS.has(protocol) && format === 0) {
      size = 24;
      if (size > left) {
        return { ok: false, sense: Sense.INVALID_PARAM_LEN, reason: `TransportID at ${at} is cut` };
      }
    } else {
      return {
        ok: false,
        sense: Sense.INVALID_PARAM,
        reason: `TransportID at ${at}: protocol ${protocol} format ${format} is not supported`,
      };
    }
    ids.push({ protocol, format, bytes: list.slice(at, at + size) });
    at += size;
  }
  return { ok: true, ids };
}

// ---------------------------------------------------------------- PR OUT plan

/** What a PR OUT becomes: one PR ioctl (encoded by ffi/pr_ioctl.ts). */
export interface PrIoctlPlan {
  /** Service action it carries (for logs). */
  serviceAction: number;
  /** The ioctl, by its fields. */
  call: PrIoctlCall;
}

/** Outcome of {@linkcode planPrOut}. */
export type PrOutPlan =
  | { ok: true; plan: PrIoctlPlan }
  | { ok: false; sense: SenseCode; reason: string };

/** The reservation types the PR ioctls carry (all six of SPC). */
const IOCTL_TYPES: ReadonlySet<number> = new Set(Object.values(PrType));

function refuse(sense: SenseCode, reason: string): PrOutPlan {
  return { ok: false, sense, reason };
}
/**
 * Turn a PR OUT (parsed CDB + parameter list) into the PR ioctl that carries
 * it, or the CHECK CONDITION a device would give / the refusal for what the
 * ioctls cannot express. Checks, in order: service action (05/24/00 for 7,
 * 8 and reserved), parameter list length (05/1A/00 below 24), SPEC_I_PT on
 * another service action than REGISTER (05/26/00), a basic list longer than
 * 24 bytes (05/1A/00), the TransportID list (05/1A/00 or 05/26/00, then
 * 05/26/00 because the ioctls cannot carry it), ALL_TG_PT on a registration
 * (05/26/00), scope and type where they matter (05/24/00).
 */
export function planPrOut(command: PrCommand, payload: Uint8Array): PrOutPlan {
  const sa = command.serviceAction;
  const name = command.serviceActionName;
  if (command.direction !== "out") return refuse(Sense.INVALID_FIELD, "not a PR OUT command");
  if (sa === PrOutAction.REGISTER_AND_MOVE || sa === PrOutAction.REPLACE_LOST_RESERVATION) {
    return refuse(Sense.INVALID_FIELD, `${name} cannot be carried by the kernel's PR ioctls`);
  }
  if (sa > PrOutAction.REPLACE_LOST_RESERVATION) {
    return refuse(Sense.INVALID_FIELD, `PR OUT ${name} is reserved`);
  }
  if (payload.length > MAX_PARAMETER_LIST) {
    return refuse(Sense.INVALID_PARAM_LEN, `parameter list of ${payload.length} bytes`);
  }
  if (payload.length < 24) {
    return refuse(Sense.INVALID_PARAM_LEN, `parameter list of ${payload.length} bytes (< 24)`);
  }
  const view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  const key = view.getBigUint64(0, false);
  const saKey = view.getBigUint64(8, false);
  const flags = payload[20];
  const specIPt = (flags & PrOutFlags.SPEC_I_PT) !== 0;
  const allTgPt = (flags & PrOutFlags.ALL_TG_PT) !== 0;
  const registering = sa === PrOutAction.REGISTER ||
    sa === PrOutAction.REGISTER_AND_IGNORE_EXISTING_KEY;
  if (specIPt && sa !== PrOutAction.REGISTER) {
    return refuse(Sense.INVALID_PARAM, `SPEC_I_PT set on ${name}`);
  }
  if (specIPt) {
    if (payload.length < 28) {
      return refuse(Sense.INVALID_PARAM_LEN, `SPEC_I_PT list of ${payload.length} bytes (< 28)`);
    }
    const tidLength = view.getUint32(24, false);
    if (28 + tidLength > payload.length) {
      return refuse(
        Sense.INVALID_PARAM_LEN,
        `TransportID data length ${tidLength} exceeds the ${payload.length}-byte list`,
      );
    }
    const parsed = parseTransportIds(payload.subarray(28, 28 + tidLength));
    if (!parsed.ok) return refuse(parsed.sense, parsed.reason);
    return refuse(
      Sense.INVALID_PARAM,
      `SPEC_I_PT with ${parsed.ids.length} TransportID(s) cannot be carried by the kernel's PR ioctls`,
    );
  }
  if (payload.length !== 24) {
    return refuse(Sense.INVALID_PARAM_LEN, `parameter list of ${payload.length} bytes (not 24)`);
  }
  if (registering && allTgPt) {
    return refuse(Sense.INVALID_PARAM, `ALL_TG_PT cannot be carried by the kernel's PR ioctls`);
  }
  const plan = (call: PrIoctlCall): PrOutPlan => ({ ok: true, plan: { serviceAction: sa, call } });
  switch (sa) {
    case PrOutAction.REGISTER:
    case PrOutAction.REGISTER_AND_IGNORE_EXISTING_KEY:
      return plan({
        op: "register",
        oldKey: key,
        newKey: saKey,
        ignoreKey: sa === PrOutAction.REGISTER_AND_IGNORE_EXISTING_KEY,
      });
    case PrOutAction.CLEAR:
      return plan({ op: "clear", key });
  }
  // RESERVE, RELEASE, PREEMPT, PREEMPT AND ABORT: scope and type matter
  if (command.scope !== 0) return refuse(Sense.INVALID_FIELD, `scope ${command.scope}`);
  const scsiType = command.type;
  if (!IOCTL_TYPES.has(scsiType)) {
    return refuse(Sense.INVALID_FIELD, `reservation type ${scsiType}`);
  }
  switch (sa) {
    case PrOutAction.RESERVE:
      return plan({ op: "reserve", key, scsiType });
    case PrOutAction.RELEASE:
      return plan({ op: "release", key, scsiType });
    case PrOutAction.PREEMPT:
      return plan({ op: "preempt", oldKey: key, newKey: saKey, scsiType });
    default:
      return plan({ op: "preempt-abort", oldKey: key, newKey: saKey, scsiType });
  }
}

// ---------------------------------------------------------------- ioctl results

/** The Linux SCSI midlayer byte (bits 8-15 of a SCSI result, kernel 6.0+). */
export const MlStatus = { RESV_CONFLICT: 0x01, NOSPC: 0x02, MED_ERROR: 0x03, TGT_FAILURE: 0x04 };

/** How a PR ioctl's outcome maps to a reply. */
export interface PrIoctlVerdict extends Verdict {
  /** The device may not have run the command (a CHECK CONDITION whose sense the kernel kept): try again. */
  retry: boolean;
}

function statusOnly(status: number, retry = false): PrIoctlVerdict {
  return { status, sense: new Uint8Array(SENSE_LEN), retry };
}

/**
 * Map a PR ioctl's outcome to status and sense. The kernel returns 0, a
 * negative errno, or a positive SCSI result: status byte in bits 0-7, the
 * midlayer byte in 8-15, the host byte in 16-23; the sense itself is not
 * returned. Host byte first (as SG_IO's host_status), then the midlayer
 * byte (RESERVATION CONFLICT; 07/27/07; 03/11/00; ILLEGAL REQUEST with ASC
 * 20h-27h or HARDWARE ERROR, answered as 05/26/00), then the status:
 * RESERVATION CONFLICT as is, CHECK CONDITION otherwise unexplained (a unit
 * attention the command consumed, NOT READY, ...) as 0B/00/06 with `retry`,
 * any other status as is.
 */
export function verdictForPrIoctl(run: PrIoctlResult): PrIoctlVerdict {
  if (run.kind === "errno") {
    if (run.errno === Errno.ENOTTY || run.errno === Errno.EOPNOTSUPP) {
      return { ...checkCondition(Sense.INVALID_OPCODE), retry: false };
    }
    return { ...verdictForErrno(run.errno), retry: false };
  }
  const value = run.value;
  if (value === 0) return statusOnly(ScsiStatus.GOOD);
  const host = (value >>> 16) & 0xff;
  const ml = (value >>> 8) & 0xff;
  const status = value & 0xff;
  if (host !== 0) return { ...verdictForHostStatus(host), retry: false };
  switch (ml) {
    case MlStatus.RESV_CONFLICT:
      return statusOnly(ScsiStatus.RESERVATION_CONFLICT);
    case MlStatus.NOSPC:
      return { ...checkCondition(Sense.SPACE_ALLOC_FAILED), retry: false };
    case MlStatus.MED_ERROR:
      return { ...checkCondition(Sense.READ_ERROR), retry: false };
    case MlStatus.TGT_FAILURE:
      return { ...checkCondition(Sense.INVALID_PARAM), retry: false };
  }
  if (status === ScsiStatus.RESERVATION_CONFLICT) return statusOnly(status);
  if (status === ScsiStatus.CHECK_CONDITION || status === ScsiStatus.GOOD) {
    return { ...checkCondition(Sense.IO_ERROR), retry: status === ScsiStatus.CHECK_CONDITION };
  }
  return statusOnly(status);
}

// ---------------------------------------------------------------- paths

/** A CHECK CONDITION with sense key UNIT ATTENTION: the same command may simply be sent again. */
export function isUnitAttention(run: SgIoRun | Error): boolean {
  if (run instanceof Error || run.outcome.kind !== "done") return false;
  if (run.outcome.status !== ScsiStatus.CHECK_CONDITION) return false;
  return parseSense(run.outcome.sense)?.key === SenseKey.UNIT_ATTENTION;
}

/**
 * errnos of SG_IO on the dm device that mean the path (or every path) failed,
 * not the request: dm found no usable path (EIO, ENOTCONN), the path device
 * is offline or gone (ENODEV, ENXIO), the transport failed (ENOLINK,
 * EREMOTEIO, ETIMEDOUT).
 */
const TRANSPORT_ERRNOS: ReadonlySet<number> = new Set([
  Errno.EIO,
  Errno.ENXIO,
  Errno.ENODEV,
  Errno.ENOTCONN,
  Errno.ETIMEDOUT,
  Errno.ENOLINK,
  Errno.EREMOTEIO,
]);

/**
 * Whether SG_IO on the client's dm fd failed at transport level, so that the
 * same command may go to each path (opened by the daemon itself): a host
 * status, or an errno in {@linkcode TRANSPORT_ERRNOS}. Never for an errno the
 * client's fd causes (finding 14.2: EBADF of an O_PATH fd, EPERM, EACCES,
 * EINVAL, ENOTTY, EFAULT...), and never for a Worker failure: the paths are
 * a way around a failed path, not around what the client's fd may not do.
 */
export function isTransportFailure(run: SgIoRun | Error): boolean {
  if (run instanceof Error) return false;
  if (run.outcome.kind === "errno") return TRANSPORT_ERRNOS.has(run.outcome.errno);
  return run.outcome.hostStatus !== 0;
}

/** A path the daemon opened itself did not answer at SCSI level: try the next one. */
export function pathFailed(run: SgIoRun | Error): boolean {
  return run instanceof Error || run.outcome.kind === "errno" || run.outcome.hostStatus !== 0;
}
