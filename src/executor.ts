/**
 * A pool of Workers that run SG_IO, so that the event loop never blocks on a
 * device. Workers are started on demand up to a maximum; a job waits only
 * when all of them are busy (a slow device holds one Worker, not the daemon).
 *
 * @module
 */

import type { SgIoOutcome } from "./sense.ts";

/** One SG_IO to run. */
export interface SgIoJob {
  id: number;
  fd: number;
  /** CDB exactly as the device receives it. */
  cdb: Uint8Array;
  direction: "none" | "in" | "out";
  /** dxfer_len for "in". */
  transferLength: number;
  /** Parameter data for "out". */
  payload: Uint8Array;
  timeoutMs: number;
}

/** What a Worker answers. */
export type SgIoJobResult =
  | { id: number; outcome: SgIoOutcome; data?: Uint8Array; durationMs?: number }
  | { id: number; error: string };

/** The result of {@linkcode SgIoExecutor.run}. */
export interface SgIoRun {
  outcome: SgIoOutcome;
  /** Data-in buffer (length = transferLength) for "in". */
  data: Uint8Array;
}

/**
 * The Worker module: next to this file when run from source; `sgio_worker.js`
 * next to the bundle when run from `deno bundle` output (see tools/build_deb.ts).
 */
const SGIO_WORKER_URL = new URL(
  import.meta.url.endsWith(".ts") ? "./sgio_worker.ts" : "./sgio_worker.js",
  import.meta.url,
);

interface Slot {
  worker: Worker;
  busy: boolean;
  resolve?: (r: SgIoJobResult) => void;
}

/** Options for {@linkcode SgIoExecutor}. */
export interface SgIoExecutorOptions {
  /** Most Workers at once (each costs ~8 MB). */
  maxWorkers: number;
}

/** The SG_IO Worker pool. */
export class SgIoExecutor {
  readonly #maxWorkers: number;
  readonly #slots: Slot[] = [];
  readonly #queue: { job: SgIoJob; resolve: (r: SgIoJobResult) => void }[] = [];
  #nextId = 1;
  #closed = false;

  constructor(options: SgIoExecutorOptions) {
    if (!Number.isInteger(options.maxWorkers) || options.maxWorkers < 1) {
      throw new RangeError(`maxWorkers ${options.maxWorkers} must be a positive integer`);
    }
    this.#maxWorkers = options.maxWorkers;
  }

  /** Start one Worker now, so the first request does not pay for it. */
  warmUp(): void {
    if (this.#slots.length === 0) this.#spawn();
  }

  /** Number of Workers started. */
  get workers(): number {
    return this.#slots.length;
  }

  /** Number of jobs running or waiting. */
  get pending(): number {
    return this.#slots.filter((s) => s.busy).length + this.#queue.length;
  }

  /** Run one SG_IO; the fd must stay open until this settles. */
  async run(job: Omit<SgIoJob, "id">): Promise<SgIoRun> {
    if (this.#closed) throw new Error("SG_IO executor is closed");
    const full: SgIoJob = { ...job, id: this.#nextId++ };
    const result = await new Promise<SgIoJobResult>((resolve) => {
      const slot = this.#idleSlot();
      if (slot) this.#dispatch(slot, full, resolve);
      else this.#queue.push({ job: full, resolve });
    });
    if ("error" in result) throw new Error(`SG_IO worker failed: ${result.error}`);
    return {
      outcome: result.outcome,
      data: result.data ?? new Uint8Array(0),
    };
  }

  /** Stop every Worker (in-flight jobs must have settled). */
  close(): void {
    this.#closed = true;
    for (const s of this.#slots) s.worker.terminate();
    this.#slots.length = 0;
  }

  #idleSlot(): Slot | null {
    const idle = this.#slots.find((s) => !s.busy);
    if (idle) return idle;
    if (this.#slots.length < this.#maxWorkers) return this.#spawn();
    return null;
  }

  #spawn(): Slot {
    const worker = new Worker(SGIO_WORKER_URL, { type: "module" });
    const slot: Slot = { worker, busy: false };
    worker.onmessage = (e: MessageEvent<SgIoJobResult>) => this.#settle(slot, e.data);
    worker.onerror = (e: ErrorEvent) => {
      e.preventDefault();
      this.#settle(slot, { id: 0, error: e.message });
    };
    this.#slots.push(slot);
    return slot;
  }

  #dispatch(slot: Slot, job: SgIoJob, resolve: (r: SgIoJobResult) => void): void {
    slot.busy = true;
    slot.resolve = resolve;
    slot.worker.postMessage(job);
  }

  #settle(slot: Slot, result: SgIoJobResult): void {
    const resolve = slot.resolve;
    slot.busy = false;
    slot.resolve = undefined;
    resolve?.(result);
    const next = this.#queue.shift();
    if (next) this.#dispatch(slot, next.job, next.resolve);
  }
}
