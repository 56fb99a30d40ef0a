/**
 * A pool of Workers that run SG_IO, so that the event loop never blocks on a
 * device. Workers are started on demand up to a maximum; a job waits only
 * when all of them are busy (a slow device holds one Worker, not the daemon).
 *
 * Hand-off without messages: each Worker owns a slot in shared memory. The
 * loop writes a job into an idle slot and wakes the Worker with
 * `Atomics.notify`; the Worker runs the ioctl, writes the result into the
 * slot, and writes one byte to the completion pipe, which the loop polls
 * with its sockets. One thread switch each way, as a C thread pool.
 *
 * Slot layout (Int32 words, then bytes):
 *
 * | word | field                                          |
 * |-----:|------------------------------------------------|
 * |    0 | state: 0 idle, 1 job posted, 2 done, 3 stop     |
 * |    1 | fd                                             |
 * |    2 | direction: 0 none, 1 in, 2 out                 |
 * |    3 | CDB length                                     |
 * |    4 | transfer length (in) / payload length (out)    |
 * |    5 | timeout in ms                                  |
 * |    6 | result: 0 done, 1 errno, 2 exception           |
 * |    7 | errno                                          |
 * |    8 | SCSI status                                    |
 * |    9 | host_status                                    |
 * |   10 | driver_status                                  |
 * |   11 | resid                                          |
 * |   12 | duration in ms                                 |
 * |   13 | completion pipe fd (write end)                 |
 * |   14 | job kind: 0 SG_IO on fd, 1 SG_IO on a device   |
 * |      | opened by path, 2 PR ioctl (`<linux/pr.h>`)     |
 * |   15 | kind 1: expected st_rdev (major << 20 | minor); |
 * |      | kind 2: ioctl request in, return value out     |
 *
 * Bytes: CDB at 64 (16), sense at 80 (96), data at 176 (8192; kind 2: the
 * ioctl's struct), device path at 8368 (256, NUL-terminated; kind 1).
 *
 * @module
 */

import { closeFd, makePipe, readFd } from "../ffi/files.ts";
import { POLLIN, PollSet } from "../ffi/poll.ts";
import type { PrIoctlResult } from "../ffi/pr_ioctl.ts";
import type { SgIoOutcome } from "./sense.ts";
import { logger } from "./log.ts";
import { CDB_LEN, MAX_DATA_LEN, SENSE_LEN } from "./wire.ts";

const log = logger("executor");

/** One SG_IO to run. */
export interface SgIoJob {
  fd: number;
  /** CDB exactly as the device receives it (6..16 bytes). */
  cdb: Uint8Array;
  direction: "none" | "in" | "out";
  /** dxfer_len for "in". */
  transferLength: number;
  /** Parameter data for "out". */
  payload: Uint8Array;
  timeoutMs: number;
  /**
   * Run on this device node instead of `fd`: the Worker opens it read-only
   * (O_NONBLOCK), checks its device number, runs SG_IO and closes it. An
   * open failure or another device number is an errno result.
   */
  path?: { name: string; major: number; minor: number };
}

/** One block-layer PR ioctl (`IOC_PR_*`, see ffi/pr_ioctl.ts) to run on a Worker. */
export interface PrIoctlJob {
  fd: number;
  /** The ioctl request number. */
  request: number;
  /** The encoded struct. */
  arg: Uint8Array;
}

/** The result of a job. */
export interface SgIoRun {
  outcome: SgIoOutcome;
  /** Data-in buffer (length = transferLength) for "in". */
  data: Uint8Array;
}

/** Words and byte offsets of a slot (shared with src/sgio_worker.ts). */
export const Slot = {
  STATE: 0,
  FD: 1,
  DIRECTION: 2,
  CDB_LEN: 3,
  LENGTH: 4,
  TIMEOUT: 5,
  RESULT: 6,
  ERRNO: 7,
  STATUS: 8,
  HOST: 9,
  DRIVER: 10,
  RESID: 11,
  DURATION: 12,
  PIPE: 13,
  KIND: 14,
  AUX: 15,
  CDB_AT: 64,
  SENSE_AT: 64 + CDB_LEN,
  DATA_AT: 64 + CDB_LEN + SENSE_LEN,
  PATH_AT: 64 + CDB_LEN + SENSE_LEN + MAX_DATA_LEN,
  PATH_LEN: 256,
  BYTES: 64 + CDB_LEN + SENSE_LEN + MAX_DATA_LEN + 256,
} as const;

/** Job kinds in a slot. */
export const SlotKind = { SGIO: 0, PATH_SGIO: 1, PR_IOCTL: 2 } as const;

/** Slot states. */
export const SlotState = { IDLE: 0, POSTED: 1, DONE: 2, STOP: 3 } as const;

/** Result codes in a slot. */
export const SlotResult = { DONE: 0, ERRNO: 1, EXCEPTION: 2 } as const;

interface Worker_ {
  worker: Worker;
  words: Int32Array;
  bytes: Uint8Array;
  /** The job the Worker runs now, with its callback; null when idle. */
  current: PendingJob | null;
}

/** A job and the callback its result goes to. */
type PendingJob =
  | { kind: "sgio"; job: SgIoJob; done: (r: SgIoRun | Error) => void }
  | { kind: "ioctl"; job: PrIoctlJob; done: (r: PrIoctlResult | Error) => void };

/** Options for {@linkcode SgIoExecutor}. */
export interface SgIoExecutorOptions {
  /** Most Workers at once (each costs ~8 MB). */
  maxWorkers: number;
  /** The Worker module (default: src/sgio_worker.ts, or sgio_worker.js beside the bundle). */
  workerUrl?: URL;
}

/** The SG_IO Worker pool. */
/**
 * The Worker module: next to this file when run from source; `sgio_worker.js`
 * next to the bundle in the Debian package (tools/build_deb.ts bundles it as a
 * second file, because a Worker is loaded by URL, not imported).
 */
const SGIO_WORKER_URL = new URL(
  import.meta.url.endsWith(".ts") ? "./sgio_worker.ts" : "./sgio_worker.js",
  import.meta.url,
);

export class SgIoExecutor {
  readonly #maxWorkers: number;
  readonly #workerUrl: URL;
  readonly #workers: Worker_[] = [];
  readonly #queue: PendingJob[] = [];
  readonly #pipe: [number, number];
  #closed = false;
  #pumping = false;
  /** An event loop polls {@linkcode SgIoExecutor.completionFd} and calls drain(). */
  driven = false;

  constructor(options: SgIoExecutorOptions) {
    if (!Number.isInteger(options.maxWorkers) || options.maxWorkers < 1) {
      throw new RangeError(`maxWorkers ${options.maxWorkers} must be a positive integer`);
    }
    this.#maxWorkers = options.maxWorkers;
    this.#workerUrl = options.workerUrl ?? SGIO_WORKER_URL;
    this.#pipe = makePipe(true);
  }

  /** Readable when a job has finished: poll it, then call {@linkcode SgIoExecutor.drain}. */
  get completionFd(): number {
    return this.#pipe[0];
  }

  /** Most Workers at once. */
  get maxWorkers(): number {
    return this.#maxWorkers;
  }

  /** Number of Workers started. */
  get workers(): number {
    return this.#workers.length;
  }

  /** Number of jobs running or waiting. */
  get pending(): number {
    return this.#workers.filter((w) => w.current !== null).length + this.#queue.length;
  }

  /** Start one Worker now, so the first request does not pay for it. */
  warmUp(): void {
    if (this.#workers.length === 0 && !this.#closed) this.#spawn();
  }

  /**
   * Queue a job; `done` is called from {@linkcode SgIoExecutor.drain} with the
   * result, or with an Error if the Worker failed. The fd must stay open until then.
   */
  submit(job: SgIoJob, done: (r: SgIoRun | Error) => void): void {
    if (this.#closed) throw new Error("SG_IO executor is closed");
    if (job.cdb.length < 6 || job.cdb.length > 16) {
      throw new RangeError(`CDB length ${job.cdb.length} is not 6..16`);
    }
    if (job.path && new TextEncoder().encode(job.path.name).length >= Slot.PATH_LEN) {
      throw new RangeError(`device path ${job.path.name} is too long`);
    }
    this.#enqueue({ kind: "sgio", job, done });
  }

  /**
   * Queue a PR ioctl; `done` is called from {@linkcode SgIoExecutor.drain}
   * with its result, or with an Error if the Worker failed.
   */
  submitIoctl(job: PrIoctlJob, done: (r: PrIoctlResult | Error) => void): void {
    if (this.#closed) throw new Error("SG_IO executor is closed");
    if (job.arg.length > MAX_DATA_LEN) {
      throw new RangeError(`ioctl argument of ${job.arg.length} bytes`);
    }
    this.#enqueue({ kind: "ioctl", job, done });
  }

  #enqueue(pending: PendingJob): void {
    const w = this.#workers.find((x) => x.current === null) ??
      (this.#workers.length < this.#maxWorkers ? this.#spawn() : null);
    if (w === null) this.#queue.push(pending);
    else this.#post(w, pending);
  }

  /** Run one job and wait for it (for callers without an event loop of their own). */
  run(job: SgIoJob): Promise<SgIoRun> {
    return new Promise((resolve, reject) => {
      this.submit(job, (r) => r instanceof Error ? reject(r) : resolve(r));
      if (!this.driven) void this.#pump();
    });
  }

  /** Collect finished jobs and call their callbacks; start queued jobs. */
  drain(): void {
    const sink = new Uint8Array(64);
    while ((readFd(this.#pipe[0], sink) ?? 0) > 0) { /* empty the pipe */ }
    for (const w of this.#workers) {
      const current = w.current;
      if (current === null || Atomics.load(w.words, Slot.STATE) !== SlotState.DONE) continue;
      const settle = this.#collect(w, current);
      w.current = null;
      Atomics.store(w.words, Slot.STATE, SlotState.IDLE);
      const next = this.#queue.shift();
      if (next) this.#post(w, next);
      settle();
    }
  }

  /** Stop every Worker (in-flight jobs must have settled). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const w of this.#workers) {
      Atomics.store(w.words, Slot.STATE, SlotState.STOP);
      Atomics.notify(w.words, Slot.STATE);
      w.worker.terminate();
    }
    this.#workers.length = 0;
    closeFd(this.#pipe[0]);
    closeFd(this.#pipe[1]);
  }

  async #pump(): Promise<void> {
    if (this.#pumping) return;
    this.#pumping = true;
    try {
      const ps = new PollSet(1);
      ps.add(this.#pipe[0], POLLIN);
      while (this.pending > 0 && !this.#closed) {
        await ps.pollAsync(100);
        if (!this.#closed) this.drain();
      }
    } finally {
      this.#pumping = false;
    }
  }

  #spawn(): Worker_ {
    const sab = new SharedArrayBuffer(Slot.BYTES);
    const words = new Int32Array(sab, 0, 16);
    words[Slot.PIPE] = this.#pipe[1];
    const worker = new Worker(this.#workerUrl, { type: "module" });
    const w: Worker_ = { worker, words, bytes: new Uint8Array(sab), current: null };
    worker.onerror = (e: ErrorEvent) => {
      e.preventDefault();
      // A Worker that fails (its module does not load, or it throws) leaves
      // the pool, so no later job is posted to it and hangs; its own job
      // fails (an error reply), and the next job starts a new Worker.
      log.error("SG_IO Worker failed: {error}; it is replaced on the next request", {
        error: e.message,
      });
      const at = this.#workers.indexOf(w);
      if (at >= 0) this.#workers.splice(at, 1);
      worker.terminate();
      const current = w.current;
      w.current = null;
      if (current !== null) current.done(new Error(`the SG_IO Worker failed: ${e.message}`));
      const next = this.#queue.shift();
      if (next && !this.#closed) this.#enqueue(next);
    };
    worker.postMessage(sab);
    this.#workers.push(w);
    return w;
  }

  #post(w: Worker_, pending: PendingJob): void {
    const words = w.words;
    if (pending.kind === "ioctl") {
      words[Slot.KIND] = SlotKind.PR_IOCTL;
      words[Slot.FD] = pending.job.fd;
      words[Slot.AUX] = pending.job.request | 0;
      words[Slot.LENGTH] = pending.job.arg.length;
      w.bytes.set(pending.job.arg, Slot.DATA_AT);
      w.current = pending;
      Atomics.store(words, Slot.STATE, SlotState.POSTED);
      Atomics.notify(words, Slot.STATE);
      return;
    }
    const job = pending.job;
    words[Slot.KIND] = job.path ? SlotKind.PATH_SGIO : SlotKind.SGIO;
    if (job.path) {
      words[Slot.AUX] = (job.path.major << 20) | job.path.minor;
      const name = new TextEncoder().encode(job.path.name);
      w.bytes.fill(0, Slot.PATH_AT, Slot.PATH_AT + Slot.PATH_LEN);
      w.bytes.set(name, Slot.PATH_AT);
    }
    words[Slot.FD] = job.fd;
    words[Slot.DIRECTION] = job.direction === "in" ? 1 : job.direction === "out" ? 2 : 0;
    words[Slot.CDB_LEN] = job.cdb.length;
    const length = job.direction === "in"
      ? job.transferLength
      : job.direction === "out"
      ? job.payload.length
      : 0;
    if (length > MAX_DATA_LEN) {
      throw new RangeError(`transfer length ${length} exceeds ${MAX_DATA_LEN}`);
    }
    words[Slot.LENGTH] = length;
    words[Slot.TIMEOUT] = job.timeoutMs;
    w.bytes.set(job.cdb, Slot.CDB_AT);
    if (job.direction === "out") w.bytes.set(job.payload, Slot.DATA_AT);
    w.current = pending;
    Atomics.store(words, Slot.STATE, SlotState.POSTED);
    Atomics.notify(words, Slot.STATE);
  }

  /**
   * Read the finished job's result out of its slot now (the slot is reused
   * next); the returned function hands it to the job's callback.
   */
  #collect(w: Worker_, job: PendingJob): () => void {
    if (job.kind === "ioctl") {
      const r = this.#collectIoctl(w);
      return () => job.done(r);
    }
    const r = this.#collectSgIo(w);
    return () => job.done(r);
  }

  #collectIoctl(w: Worker_): PrIoctlResult | Error {
    const words = w.words;
    switch (words[Slot.RESULT]) {
      case SlotResult.ERRNO:
        return { kind: "errno", errno: words[Slot.ERRNO] };
      case SlotResult.DONE:
        return { kind: "done", value: words[Slot.AUX] };
      default:
        return new Error("the PR ioctl worker failed");
    }
  }

  #collectSgIo(w: Worker_): SgIoRun | Error {
    const words = w.words;
    switch (words[Slot.RESULT]) {
      case SlotResult.ERRNO:
        return { outcome: { kind: "errno", errno: words[Slot.ERRNO] }, data: new Uint8Array(0) };
      case SlotResult.DONE: {
        const length = words[Slot.DIRECTION] === 1 ? words[Slot.LENGTH] : 0;
        return {
          outcome: {
            kind: "done",
            status: words[Slot.STATUS],
            hostStatus: words[Slot.HOST],
            driverStatus: words[Slot.DRIVER],
            sense: w.bytes.slice(Slot.SENSE_AT, Slot.SENSE_AT + SENSE_LEN),
            resid: words[Slot.RESID],
          },
          data: w.bytes.slice(Slot.DATA_AT, Slot.DATA_AT + length),
        };
      }
      default:
        return new Error("the SG_IO worker failed");
    }
  }
}
