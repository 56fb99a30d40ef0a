/**
 * Persistent reservations on dm-multipath devices: the I/O half. PR IN goes
 * by SG_IO to the dm device (dm picks an active path); PR OUT becomes one of
 * the kernel's block-layer PR ioctls (`<linux/pr.h>`), which dm-multipath
 * fans out to its paths itself, planned by src/multipath_plan.ts. Where the
 * kernel refuses those ioctls (before Linux 6.5 they need CAP_SYS_ADMIN), PR
 * OUT goes by SG_IO to each path the way dm's pr_ops would. Everything that
 * touches a device runs on the SG_IO executor's Workers: the event loop only
 * reads sysfs and maps results. See docs/DESIGN.md, "Multipath".
 *
 * @module
 */

import { listDirectory } from "../ffi/dirent.ts";
import { Errno, errnoName } from "../ffi/errno.ts";
import { readSmallFile } from "../ffi/files.ts";
import { encodePrIoctl } from "../ffi/pr_ioctl.ts";
import { type PrCommand, PrOutAction } from "./cdb.ts";
import type { DeviceFacts } from "./device_check.ts";
import type { SgIoExecutor, SgIoRun } from "./executor.ts";
import { logger } from "./log.ts";
import {
  isTransportFailure,
  isUnitAttention,
  pathFailed,
  planPrOut,
  type PrIoctlPlan,
  verdictForPrIoctl,
} from "./multipath_plan.ts";
import type { MultipathdNotifier } from "./multipathd.ts";
import { multipathdPlan } from "./multipathd_plan.ts";
import { checkCondition, mapSgIoOutcome, Sense } from "./sense.ts";
import { type Reply, ScsiStatus } from "./wire.ts";

const log = logger("multipath");

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

/** The dm name (alias) of dm device `major:minor`, from /sys/dev/block/M:m/dm/name; null if unreadable. */
export function mapName(major: number, minor: number): string | null {
  const name = (readSmallFile(`/sys/dev/block/${major}:${minor}/dm/name`, 256) ?? "").trim();
  return name === "" ? null : name;
}

// ---------------------------------------------------------------- the handler

/** Options of {@linkcode MultipathHandler}. */
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
  /**
   * Tells multipathd about registrations (src/multipathd_plan.ts says
   * which commands); absent: multipathd is not told.
   */
  multipathd?: MultipathdNotifier;
  /** dm name of a map (tests); default {@linkcode mapName}. */
  mapName?: (major: number, minor: number) => string | null;
}

/** The input of a multipath request (HandlerContext.multipath). */
export interface MultipathInput {
  fd: number;
  command: PrCommand;
  payload: Uint8Array;
  facts: DeviceFacts;
}

/** A reply callback. */
type Done = (reply: Reply) => void;
/** An SG_IO outcome callback. */
type RunDone = (run: SgIoRun | Error) => void;
/** Where an SG_IO goes: the client's dm fd, or a path the daemon opens itself. */
type Target = { fd: number; path?: MpathPath };

const TEST_UNIT_READY = new Uint8Array(6);
/** Tries of a PR IN or TEST UNIT READY that keeps meeting UNIT ATTENTION. */
const UA_TRIES = 4;
/** Tries of a PR ioctl that fails with an unexplained CHECK CONDITION. */
const IOCTL_TRIES = 2;
const NO_PAYLOAD = new Uint8Array(0);

function devName(facts: DeviceFacts): string {
  return `${facts.major}:${facts.minor}`;
}

/** The reply for one PR OUT sent by SG_IO. */
function outReply(run: SgIoRun | Error): Reply {
  if (run instanceof Error) return checkCondition(Sense.LUN_COMM_FAILURE);
  const mapped = mapSgIoOutcome(run.outcome, 0);
  return { status: mapped.status, sense: mapped.sense };
}

/**
 * The multipath hook of the request handler ({@linkcode handle}). PR IN by
 * SG_IO on the dm device (if that fails at transport level, each path in
 * turn); PR OUT as one PR ioctl on the dm device after clearing pending unit
 * attentions on every path, or, once the kernel has refused the ioctls, by
 * SG_IO to the paths: registrations on every running path with rollback,
 * RELEASE on every running path, the rest on the first path that answers.
 * Each request's `done` is called exactly once, from the executor's drain
 * (or right away for a refusal).
 */
export class MultipathHandler {
  readonly #executor: SgIoExecutor;
  readonly #sgioTimeoutMs: number;
  readonly #maxInFlight: number;
  readonly #paths: (major: number, minor: number) => MpathPath[];
  readonly #multipathd: MultipathdNotifier | null;
  readonly #mapName: (major: number, minor: number) => string | null;
  #inFlight = 0;
  readonly #waiting: (() => void)[] = [];
  /** The kernel refused the PR ioctls once (EPERM/EACCES): PR OUT goes by SG_IO to each path. */
  #ioctlsRefused = false;

  /** A handler on `options.executor`'s Workers. */
  constructor(options: MultipathHandlerOptions) {
    this.#executor = options.executor;
    this.#sgioTimeoutMs = options.sgioTimeoutMs;
    this.#maxInFlight = options.maxInFlight ?? Math.max(1, options.executor.maxWorkers - 1);
    this.#paths = options.paths ?? listPaths;
    this.#multipathd = options.multipathd ?? null;
    this.#mapName = options.mapName ?? mapName;
  }

  /** Run one request; `done` gets its reply exactly once. */
  handle(input: MultipathInput, done: Done): void {
    let answered = false;
    const once = (reply: Reply) => {
      if (answered) return;
      answered = true;
      this.#leave();
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

  #leave(): void {
    const next = this.#waiting.shift();
    if (next) next();
    else this.#inFlight--;
  }

  /** SG_IO on `target`, sent again while the path reports UNIT ATTENTION. */
  #sgio(
    target: Target,
    cdb: Uint8Array,
    io: { transferLength: number; payload?: Uint8Array },
    done: RunDone,
    tries = UA_TRIES,
  ): void {
    const payload = io.payload ?? NO_PAYLOAD;
    const path = target.path;
    try {
      this.#executor.submit({
        fd: target.fd,
        cdb,
        direction: payload.length > 0 ? "out" : io.transferLength === 0 ? "none" : "in",
        transferLength: io.transferLength,
        payload,
        timeoutMs: this.#sgioTimeoutMs,
        ...(path
          ? { path: { name: `/dev/${path.name}`, major: path.major, minor: path.minor } }
          : {}),
      }, (run) => {
        if (tries > 1 && isUnitAttention(run)) return this.#sgio(target, cdb, io, done, tries - 1);
        done(run);
      });
    } catch (e) {
      done(e instanceof Error ? e : new Error(String(e)));
    }
  }

  /** PR OUT by SG_IO to `path` (opened by the daemon), with the client's CDB and list. */
  #sendToPath(path: MpathPath, cdb: Uint8Array, payload: Uint8Array, done: RunDone): void {
    this.#sgio({ fd: -1, path }, cdb, { transferLength: 0, payload }, done);
  }

  #prIn(input: MultipathInput, done: Done): void {
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
    this.#sgio({ fd: input.fd }, command.deviceCdb, { transferLength: length }, (first) => {
      if (!isTransportFailure(first)) return finish(first);
      // dm's chosen path failed at transport level: try each path, running ones first
      const candidates = this.#paths(facts.major, facts.minor)
        .sort((a, b) => Number(b.state === "running") - Number(a.state === "running"));
      log.debug("PR IN through dm failed; trying {n} path(s)", {
        n: candidates.length,
        dev: devName(facts),
      });
      const next = (i: number, last: SgIoRun | Error) => {
        if (i >= candidates.length) return finish(last);
        const target = { fd: input.fd, path: candidates[i] };
        this.#sgio(target, command.deviceCdb, { transferLength: length }, (run) => {
          if (pathFailed(run)) return next(i + 1, last);
          finish(run);
        });
      };
      next(0, first);
    });
  }

  #prOut(input: MultipathInput, done: Done): void {
    const { command, payload, facts } = input;
    const planned = planPrOut(command, payload);
    if (!planned.ok) {
      log.debug("refused multipath {sa}: {why}", {
        sa: command.serviceActionName,
        why: planned.reason,
        dev: devName(facts),
      });
      return done(checkCondition(planned.sense));
    }
    const run = (finished: Done) => {
      if (this.#ioctlsRefused) return this.#fanOut(input, finished);
      this.#ioctl(input, planned.plan, IOCTL_TRIES, finished);
    };
    const notifier = this.#multipathd;
    const alias = notifier === null ? null : this.#mapName(facts.major, facts.minor);
    if (notifier === null || alias === null) return run(done);
    const told = multipathdPlan(command, payload, { alias });
    // after a success: reply first, then tell multipathd (nobody waits for it)
    const thenTell: Done = (reply) => {
      done(reply);
      if (reply.status === ScsiStatus.GOOD) void notifier.tell(alias, told.after);
    };
    if (told.before.length === 0) return run(thenTell);
    // setprkey before REGISTER, as libmpathpersist; waited for at most the
    // exchange's deadline, and whatever multipathd says, the REGISTER runs
    let started = false;
    const start = () => {
      if (started) return;
      started = true;
      clearTimeout(bound);
      try {
        run(thenTell);
      } catch (e) {
        log.error("multipath PR OUT could not run: {error}", { error: String(e) });
        done(checkCondition(Sense.LUN_COMM_FAILURE));
      }
    };
    const bound = setTimeout(start, notifier.timeoutMs + 100);
    void notifier.tell(alias, told.before).then(start);
  }

  /** The planned PR ioctl on the dm device, after TEST UNIT READY on every running path. */
  #ioctl(input: MultipathInput, plan: PrIoctlPlan, tries: number, done: Done): void {
    const { command, facts } = input;
    this.#clearUnitAttentions(facts, () => {
      try {
        const { request, arg } = encodePrIoctl(plan.call);
        this.#executor.submitIoctl({ fd: input.fd, request, arg }, (run) => {
          if (run instanceof Error) return done(checkCondition(Sense.LUN_COMM_FAILURE));
          const verdict = verdictForPrIoctl(run);
          if (verdict.retry && tries > 1) return this.#ioctl(input, plan, tries - 1, done);
          if (run.kind === "errno" && (run.errno === Errno.EPERM || run.errno === Errno.EACCES)) {
            this.#ioctlsRefused = true;
            log.info(
              "the kernel refuses the block-layer PR ioctls ({errno}: before Linux 6.5 they " +
                "need CAP_SYS_ADMIN); multipath PR OUT now goes by SG_IO to each path",
              { errno: errnoName(run.errno), dev: devName(facts) },
            );
            return this.#fanOut(input, done);
          }
          if (verdict.status !== ScsiStatus.GOOD) {
            log.debug("multipath {sa}: ioctl result {result}", {
              sa: command.serviceActionName,
              result: run.kind === "errno" ? errnoName(run.errno) : `0x${run.value.toString(16)}`,
              dev: devName(facts),
            });
          }
          done({ status: verdict.status, sense: verdict.sense });
        });
      } catch (e) {
        log.error("multipath PR OUT could not run: {error}", { error: String(e) });
        done(checkCondition(Sense.LUN_COMM_FAILURE));
      }
    });
  }

  /** TEST UNIT READY on every running path, one after another, to consume unit attentions. */
  #clearUnitAttentions(facts: DeviceFacts, done: () => void): void {
    const list = this.#paths(facts.major, facts.minor).filter((p) => p.state === "running");
    const next = (i: number) => {
      if (i >= list.length) return done();
      this.#sgio(
        { fd: -1, path: list[i] },
        TEST_UNIT_READY,
        { transferLength: 0 },
        () => next(i + 1),
      );
    };
    next(0);
  }

  /**
   * PR OUT by SG_IO to the paths (when the kernel refuses the PR ioctls): what
   * dm-multipath's pr_ops do, from here, with the client's own CDB and list.
   */
  #fanOut(input: MultipathInput, done: Done): void {
    const { facts } = input;
    const all = this.#paths(facts.major, facts.minor);
    const running = all.filter((p) => p.state === "running");
    const list = running.length > 0 ? running : all;
    if (list.length === 0) return done(checkCondition(Sense.LUN_COMM_FAILURE));
    const sa = input.command.serviceAction;
    if (sa === PrOutAction.REGISTER || sa === PrOutAction.REGISTER_AND_IGNORE_EXISTING_KEY) {
      return this.#registerWithRollback(input, list, done);
    }
    if (sa === PrOutAction.RELEASE) return this.#releaseOnEveryPath(input, list, done);
    this.#firstPathThatAnswers(input, list, done);
  }

  /**
   * REGISTER* on every path in turn; if one fails, the paths registered so
   * far are unregistered again (REGISTER AND IGNORE EXISTING KEY with service
   * action key 0) and the failure is the reply.
   */
  #registerWithRollback(input: MultipathInput, list: MpathPath[], done: Done): void {
    const { command, payload } = input;
    const cdb = command.deviceCdb;
    const newKey = new DataView(payload.buffer, payload.byteOffset).getBigUint64(8, false);
    const rollback = (upTo: number, reply: Reply) => {
      if (newKey === 0n || upTo === 0) return done(reply);
      const undoCdb = cdb.slice();
      undoCdb[1] = PrOutAction.REGISTER_AND_IGNORE_EXISTING_KEY;
      const undo = new Uint8Array(24);
      const next = (i: number) => {
        if (i >= upTo) return done(reply);
        this.#sendToPath(list[i], undoCdb, undo, () => next(i + 1));
      };
      next(0);
    };
    const next = (i: number) => {
      if (i >= list.length) return done({ status: ScsiStatus.GOOD });
      this.#sendToPath(list[i], cdb, payload, (run) => {
        const reply = outReply(run);
        if (reply.status !== ScsiStatus.GOOD) return rollback(i, reply);
        next(i + 1);
      });
    };
    next(0);
  }

  /** RELEASE on every path (the reservation holder may be any of them); the first failure is the reply. */
  #releaseOnEveryPath(input: MultipathInput, list: MpathPath[], done: Done): void {
    const cdb = input.command.deviceCdb;
    let first: Reply | null = null;
    const next = (i: number) => {
      if (i >= list.length) return done(first ?? { status: ScsiStatus.GOOD });
      this.#sendToPath(list[i], cdb, input.payload, (run) => {
        const reply = outReply(run);
        if (reply.status !== ScsiStatus.GOOD && first === null) first = reply;
        next(i + 1);
      });
    };
    next(0);
  }

  /**
   * RESERVE, PREEMPT*, CLEAR: SG_IO on the dm device (dm honours its path
   * states and queue_if_no_path); if that fails at transport level, each path
   * in turn until one answers at SCSI level.
   */
  #firstPathThatAnswers(input: MultipathInput, list: MpathPath[], done: Done): void {
    const { command, payload } = input;
    const cdb = command.deviceCdb;
    const next = (i: number, last: SgIoRun | Error) => {
      if (i >= list.length) return done(outReply(last));
      this.#sendToPath(list[i], cdb, payload, (run) => {
        if (pathFailed(run)) return next(i + 1, run);
        done(outReply(run));
      });
    };
    this.#sgio({ fd: input.fd }, cdb, { transferLength: 0, payload }, (run) => {
      if (isTransportFailure(run)) return next(0, run);
      done(outReply(run));
    });
  }
}
