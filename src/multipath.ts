/**
 * Persistent reservations on dm-multipath devices, through the kernel's
 * block-layer PR ioctls (`<linux/pr.h>`), which dm-multipath fans out to its
 * paths itself; PR IN goes by SG_IO to an active path. Everything that
 * touches a device runs on the SG_IO executor's Workers: the event loop only
 * parses, reads sysfs and maps results. See docs/DESIGN.md, "Multipath".
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

import { listDirectory } from "../ffi/dirent.ts";
import { Errno, errnoName } from "../ffi/errno.ts";
import { readSmallFile } from "../ffi/files.ts";
import {
  PR_FL_IGNORE_KEY,
  prClear,
  PrIoctl,
  type PrIoctlResult,
  PrIoctlType,
  prPreempt,
  prRegistration,
  prReservation,
} from "../ffi/pr_ioctl.ts";
import { type PrCommand, PrOutAction, PrOutFlags, PrType } from "./cdb.ts";
import type { DeviceFacts } from "./device_check.ts";
import type { SgIoExecutor, SgIoRun } from "./executor.ts";
import { logger } from "./log.ts";
import {
  checkCondition,
  mapSgIoOutcome,
  parseSense,
  Sense,
  type SenseCode,
  SenseKey,
  type Verdict,
  verdictForErrno,
  verdictForHostStatus,
} from "./sense.ts";
import { MAX_DATA_LEN, type Reply, ScsiStatus, SENSE_LEN } from "./wire.ts";

const log = logger("multipath");

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

/** What a PR OUT becomes: one PR ioctl. */
export interface PrIoctlPlan {
  /** Service action it carries (for logs). */
  serviceAction: number;
  /** The ioctl request (ffi/pr_ioctl.ts, PrIoctl). */
  request: number;
  /** The encoded struct. */
  arg: Uint8Array;
}

/** Outcome of {@linkcode planPrOut}. */
export type PrOutPlan =
  | { ok: true; plan: PrIoctlPlan }
  | { ok: false; sense: SenseCode; reason: string };

/** SCSI reservation type (CDB byte 2, bits 3-0) -> `enum pr_type`. */
const IOCTL_TYPE: ReadonlyMap<number, number> = new Map([
  [PrType.WRITE_EXCLUSIVE, PrIoctlType.WRITE_EXCLUSIVE],
  [PrType.EXCLUSIVE_ACCESS, PrIoctlType.EXCLUSIVE_ACCESS],
  [PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY, PrIoctlType.WRITE_EXCLUSIVE_REG_ONLY],
  [PrType.EXCLUSIVE_ACCESS_REGISTRANTS_ONLY, PrIoctlType.EXCLUSIVE_ACCESS_REG_ONLY],
  [PrType.WRITE_EXCLUSIVE_ALL_REGISTRANTS, PrIoctlType.WRITE_EXCLUSIVE_ALL_REGS],
  [PrType.EXCLUSIVE_ACCESS_ALL_REGISTRANTS, PrIoctlType.EXCLUSIVE_ACCESS_ALL_REGS],
]);

/** The `enum pr_type` value for a SCSI reservation type, or null if it has none. */
export function ioctlTypeOf(scsiType: number): number | null {
  return IOCTL_TYPE.get(scsiType) ?? null;
}

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
  const typed = () => {
    if (command.scope !== 0) return refuse(Sense.INVALID_FIELD, `scope ${command.scope}`);
    const type = ioctlTypeOf(command.type);
    if (type === null) return refuse(Sense.INVALID_FIELD, `reservation type ${command.type}`);
    return type;
  };
  const plan = (request: number, arg: Uint8Array): PrOutPlan => ({
    ok: true,
    plan: { serviceAction: sa, request, arg },
  });
  switch (sa) {
    case PrOutAction.REGISTER:
      return plan(PrIoctl.REGISTER, prRegistration(key, saKey, 0));
    case PrOutAction.REGISTER_AND_IGNORE_EXISTING_KEY:
      return plan(PrIoctl.REGISTER, prRegistration(key, saKey, PR_FL_IGNORE_KEY));
    case PrOutAction.CLEAR:
      return plan(PrIoctl.CLEAR, prClear(key));
    case PrOutAction.RESERVE:
    case PrOutAction.RELEASE: {
      const type = typed();
      if (typeof type !== "number") return type;
      return plan(
        sa === PrOutAction.RESERVE ? PrIoctl.RESERVE : PrIoctl.RELEASE,
        prReservation(key, type),
      );
    }
    default: { // PREEMPT, PREEMPT AND ABORT
      const type = typed();
      if (typeof type !== "number") return type;
      return plan(
        sa === PrOutAction.PREEMPT ? PrIoctl.PREEMPT : PrIoctl.PREEMPT_ABORT,
        prPreempt(key, saKey, type),
      );
    }
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

// ---------------------------------------------------------------- paths (sysfs)

/** One path of a dm-multipath device. */
export interface MpathPath {
  /** Kernel name, e.g. `sda`. */
  name: string;
  major: number;
  minor: number;
  /** SCSI device state from sysfs (`running`, `offline`, ...), "" if unknown. */
  state: string;
}

/** The paths of dm device `major:minor` from /sys/dev/block/M:m/slaves; [] if unreadable. */
export function listPaths(major: number, minor: number): MpathPath[] {
  const base = `/sys/dev/block/${major}:${minor}/slaves`;
  let names: string[];
  try {
    names = listDirectory(base);
  } catch {
    return [];
  }
  const paths: MpathPath[] = [];
  for (const name of names.sort()) {
    if (!/^[A-Za-z0-9_.-]+$/.test(name)) continue;
    const dev = (readSmallFile(`${base}/${name}/dev`, 32) ?? "").trim().match(/^(\d+):(\d+)$/);
    if (!dev) continue;
    const state = (readSmallFile(`${base}/${name}/device/state`, 64) ?? "").trim();
    paths.push({ name, major: Number(dev[1]), minor: Number(dev[2]), state });
  }
  return paths;
}

// ---------------------------------------------------------------- the handler

/** Options of {@linkcode createMultipathHandler}. */
export interface MultipathHandlerOptions {
  executor: SgIoExecutor;
  /** SG_IO timeout in milliseconds. */
  sgioTimeoutMs: number;
  /**
   * Most multipath requests on Workers at once (default: the executor's
   * Worker count minus one, at least 1), so that requests for plain disks
   * always find a Worker even when multipath devices hang (queue_if_no_path).
   */
  maxInFlight?: number;
  /** Path lister (tests); default {@linkcode listPaths}. */
  paths?: (major: number, minor: number) => MpathPath[];
}

/** The input of a multipath request (HandlerContext.multipath). */
export interface MultipathInput {
  fd: number;
  command: PrCommand;
  payload: Uint8Array;
  facts: DeviceFacts;
}

/** The function HandlerContext.multipath expects. */
export type MultipathHandler = (input: MultipathInput, done: (reply: Reply) => void) => void;

const TEST_UNIT_READY = new Uint8Array(6);
/** Tries of a PR IN or TEST UNIT READY that keeps meeting UNIT ATTENTION. */
const UA_TRIES = 4;
/** Tries of a PR ioctl that fails with an unexplained CHECK CONDITION. */
const IOCTL_TRIES = 2;

function isUnitAttention(run: SgIoRun | Error): boolean {
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
function pathFailed(run: SgIoRun | Error): boolean {
  return run instanceof Error || run.outcome.kind === "errno" || run.outcome.hostStatus !== 0;
}

/** The reply for one SG_IO PR OUT outcome. */
function outReply(run: SgIoRun | Error): Reply {
  if (run instanceof Error) return checkCondition(Sense.LUN_COMM_FAILURE);
  const mapped = mapSgIoOutcome(run.outcome, 0);
  return { status: mapped.status, sense: mapped.sense };
}

/** Where an SG_IO goes: `fd`, or the path's device node when `path` is given. */
interface SgIoTarget {
  fd: number;
  path?: MpathPath;
}

/** The state of {@linkcode createMultipathHandler}'s hook: admission, and what the kernel refused. */
class MultipathRunner {
  readonly #executor: SgIoExecutor;
  readonly #sgioTimeoutMs: number;
  readonly #maxInFlight: number;
  readonly #paths: (major: number, minor: number) => MpathPath[];
  #inFlight = 0;
  readonly #waiting: (() => void)[] = [];
  #ioctlsRefused = false;

  constructor(options: MultipathHandlerOptions) {
    this.#executor = options.executor;
    this.#sgioTimeoutMs = options.sgioTimeoutMs;
    this.#maxInFlight = options.maxInFlight ?? Math.max(1, options.executor.maxWorkers - 1);
    this.#paths = options.paths ?? listPaths;
  }

  /** One request: admitted (or queued), then answered exactly once. */
  handle(input: MultipathInput, done: (reply: Reply) => void): void {
    let answered = false;
    const once = (reply: Reply) => {
      if (answered) return;
      answered = true;
      this.#release();
      done(reply);
    };
    this.#admit(() => {
      try {
        if (input.command.direction === "in") this.#prIn(input, once);
        else this.#prOut(input, once);
      } catch (e) {
        log.error("multipath request failed: {error}", { error: String(e) });
        once(checkCondition(Sense.LUN_COMM_FAILURE));
      }
    });
  }

  #admit(start: () => void): void {
    if (this.#inFlight < this.#maxInFlight) {
      this.#inFlight++;
      start();
    } else this.#waiting.push(start);
  }

  #release(): void {
    const next = this.#waiting.shift();
    if (next) next();
    else this.#inFlight--;
  }

  /** SG_IO on `fd` (or on `path`), retried while the path reports UNIT ATTENTION. */
  #sgio(
    target: SgIoTarget,
    cdb: Uint8Array,
    transferLength: number,
    done: (run: SgIoRun | Error) => void,
    tries = UA_TRIES,
    payload: Uint8Array = new Uint8Array(0),
  ): void {
    try {
      this.#executor.submit({
        fd: target.fd,
        cdb,
        direction: payload.length > 0 ? "out" : transferLength === 0 ? "none" : "in",
        transferLength,
        payload,
        timeoutMs: this.#sgioTimeoutMs,
        ...(target.path
          ? {
            path: {
              name: `/dev/${target.path.name}`,
              major: target.path.major,
              minor: target.path.minor,
            },
          }
          : {}),
      }, (run) => {
        if (tries > 1 && isUnitAttention(run)) {
          return this.#sgio(target, cdb, transferLength, done, tries - 1, payload);
        }
        done(run);
      });
    } catch (e) {
      done(e instanceof Error ? e : new Error(String(e)));
    }
  }

  #prIn(input: MultipathInput, done: (reply: Reply) => void): void {
    const { command, facts } = input;
    const length = command.length;
    const finish = (run: SgIoRun | Error) => {
      if (run instanceof Error) return done(checkCondition(Sense.LUN_COMM_FAILURE));
      const mapped = mapSgIoOutcome(run.outcome, length);
      done({
        status: mapped.status,
        sense: mapped.sense,
        data: run.data.subarray(0, mapped.dataLength),
      });
    };
    this.#sgio({ fd: input.fd }, command.deviceCdb, length, (first) => {
      if (!isTransportFailure(first)) return finish(first);
      // dm's chosen path failed at transport level: try each path, running ones first
      const candidates = this.#paths(facts.major, facts.minor)
        .sort((a, b) => Number(b.state === "running") - Number(a.state === "running"));
      log.debug("PR IN through dm failed; trying {n} path(s)", {
        n: candidates.length,
        dev: `${facts.major}:${facts.minor}`,
      });
      const next = (i: number, last: SgIoRun | Error) => {
        if (i >= candidates.length) return finish(last);
        this.#sgio({ fd: input.fd, path: candidates[i] }, command.deviceCdb, length, (run) => {
          if (pathFailed(run)) return next(i + 1, last);
          finish(run);
        });
      };
      next(0, first);
    });
  }

  /** TEST UNIT READY on every running path, one after another, to consume unit attentions. */
  #clearUnitAttentions(facts: DeviceFacts, done: () => void): void {
    const list = this.#paths(facts.major, facts.minor).filter((p) => p.state === "running");
    const next = (i: number) => {
      if (i >= list.length) return done();
      this.#sgio({ fd: -1, path: list[i] }, TEST_UNIT_READY, 0, () => next(i + 1));
    };
    next(0);
  }

  /** A PR OUT CDB and parameter list by SG_IO to one path. */
  #send(p: MpathPath, body: Uint8Array, cdb: Uint8Array, cb: (r: SgIoRun | Error) => void): void {
    this.#sgio({ fd: -1, path: p }, cdb, 0, cb, UA_TRIES, body);
  }

  /**
   * PR OUT by SG_IO to each path (when the kernel refuses the PR ioctls): what
   * dm-multipath's pr_ops do, from here, with the client's own CDB and list.
   * REGISTER*: every running path, rolled back (unregistered) if one fails;
   * RELEASE: every running path; RESERVE, PREEMPT*, CLEAR: SG_IO on the dm
   * device (dm picks an active path), else the first running path that
   * answers at SCSI level.
   */
  #fanOut(input: MultipathInput, done: (reply: Reply) => void): void {
    const { command, facts } = input;
    const all = this.#paths(facts.major, facts.minor);
    const running = all.filter((p) => p.state === "running");
    const list = running.length > 0 ? running : all;
    if (list.length === 0) return done(checkCondition(Sense.LUN_COMM_FAILURE));
    const sa = command.serviceAction;
    if (sa === PrOutAction.REGISTER || sa === PrOutAction.REGISTER_AND_IGNORE_EXISTING_KEY) {
      return this.#fanOutRegister(input, list, done);
    }
    if (sa === PrOutAction.RELEASE) return this.#fanOutRelease(input, list, done);
    this.#fanOutOnePath(input, list, done);
  }

  /** REGISTER* on every path in `list`; where one fails, unregistered again where it took. */
  #fanOutRegister(input: MultipathInput, list: MpathPath[], done: (reply: Reply) => void): void {
    const { payload } = input;
    const cdb = input.command.deviceCdb;
    const newKey = new DataView(payload.buffer, payload.byteOffset).getBigUint64(8, false);
    const rollback = (upTo: number, reply: Reply) => {
      if (newKey === 0n || upTo === 0) return done(reply);
      // unregister where it succeeded: REGISTER AND IGNORE EXISTING KEY, SA key 0
      const undoCdb = cdb.slice();
      undoCdb[1] = PrOutAction.REGISTER_AND_IGNORE_EXISTING_KEY;
      const undo = new Uint8Array(24);
      const step = (i: number) => {
        if (i >= upTo) return done(reply);
        this.#send(list[i], undo, undoCdb, () => step(i + 1));
      };
      step(0);
    };
    const step = (i: number) => {
      if (i >= list.length) return done({ status: ScsiStatus.GOOD });
      this.#send(list[i], payload, cdb, (run) => {
        const reply = outReply(run);
        if (reply.status !== ScsiStatus.GOOD) return rollback(i, reply);
        step(i + 1);
      });
    };
    step(0);
  }

  /** RELEASE on every path in `list`; the first failure is the answer. */
  #fanOutRelease(input: MultipathInput, list: MpathPath[], done: (reply: Reply) => void): void {
    const { payload } = input;
    const cdb = input.command.deviceCdb;
    let first: Reply | null = null;
    const step = (i: number) => {
      if (i >= list.length) return done(first ?? { status: ScsiStatus.GOOD });
      this.#send(list[i], payload, cdb, (run) => {
        const reply = outReply(run);
        if (reply.status !== ScsiStatus.GOOD && first === null) first = reply;
        step(i + 1);
      });
    };
    step(0);
  }

  /**
   * One path: the one dm picks (SG_IO on the dm device honours dm's path
   * states and queue_if_no_path), then each path in turn if that fails.
   */
  #fanOutOnePath(input: MultipathInput, list: MpathPath[], done: (reply: Reply) => void): void {
    const { payload } = input;
    const cdb = input.command.deviceCdb;
    const step = (i: number, last: SgIoRun | Error) => {
      if (i >= list.length) return done(outReply(last));
      this.#send(list[i], payload, cdb, (run) => {
        if (pathFailed(run)) return step(i + 1, run);
        done(outReply(run));
      });
    };
    this.#sgio(
      { fd: input.fd },
      cdb,
      0,
      (run) => {
        if (isTransportFailure(run)) return step(0, run);
        done(outReply(run));
      },
      UA_TRIES,
      payload,
    );
  }

  #prOut(input: MultipathInput, done: (reply: Reply) => void): void {
    const { command, payload, facts } = input;
    const planned = planPrOut(command, payload);
    if (!planned.ok) {
      log.debug("refused multipath {sa}: {why}", {
        sa: command.serviceActionName,
        why: planned.reason,
        dev: `${facts.major}:${facts.minor}`,
      });
      return done(checkCondition(planned.sense));
    }
    if (this.#ioctlsRefused) return this.#fanOut(input, done);
    const attempt = (tries: number) => {
      this.#clearUnitAttentions(facts, () => {
        try {
          this.#executor.submitIoctl(
            { fd: input.fd, request: planned.plan.request, arg: planned.plan.arg },
            (run) => this.#ioctlDone(input, run, { done, retry: () => attempt(tries - 1), tries }),
          );
        } catch (e) {
          log.error("multipath PR OUT could not run: {error}", { error: String(e) });
          done(checkCondition(Sense.LUN_COMM_FAILURE));
        }
      });
    };
    attempt(IOCTL_TRIES);
  }

  /** The answer to a PR OUT ioctl: retried, handed to the SG_IO fan-out, or the reply. */
  #ioctlDone(
    input: MultipathInput,
    run: PrIoctlResult | Error,
    next: { done: (reply: Reply) => void; retry: () => void; tries: number },
  ): void {
    const { command, facts } = input;
    const { done } = next;
    if (run instanceof Error) return done(checkCondition(Sense.LUN_COMM_FAILURE));
    const verdict = verdictForPrIoctl(run);
    if (verdict.retry && next.tries > 1) return next.retry();
    if (run.kind === "errno" && (run.errno === Errno.EPERM || run.errno === Errno.EACCES)) {
      this.#ioctlsRefused = true;
      log.info(
        "the kernel refuses the block-layer PR ioctls ({errno}: before Linux 6.5 they " +
          "need CAP_SYS_ADMIN); multipath PR OUT now goes by SG_IO to each path",
        { errno: errnoName(run.errno), dev: `${facts.major}:${facts.minor}` },
      );
      return this.#fanOut(input, done);
    } else if (verdict.status !== ScsiStatus.GOOD) {
      log.debug("multipath {sa}: ioctl result {result}", {
        sa: command.serviceActionName,
        result: run.kind === "errno" ? errnoName(run.errno) : `0x${run.value.toString(16)}`,
        dev: `${facts.major}:${facts.minor}`,
      });
    }
    done({ status: verdict.status, sense: verdict.sense });
  }
}

/**
 * The multipath hook of the request handler: PR IN by SG_IO on the dm device
 * (dm sends it to an active path; if that fails at transport level, each path
 * in turn), PR OUT as one PR ioctl on the dm device after clearing pending
 * unit attentions on every path. `done` is called once, from the executor's
 * drain (or right away for a refusal).
 */
export function createMultipathHandler(options: MultipathHandlerOptions): MultipathHandler {
  const runner = new MultipathRunner(options);
  return (input, done) => runner.handle(input, done);
}
