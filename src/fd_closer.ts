/**
 * Closing client fds off the event loop (issue 14, finding 3).
 *
 * close(2) can block for as long as someone else likes: closing a file on a
 * FUSE mount sends the server a FLUSH and waits for its answer, which a
 * hostile server never gives (any user with fusermount or a user namespace
 * can run one); a TCP socket with SO_LINGER waits for its peer. One such fd
 * closed on the loop thread would stall every client. So every fd a client
 * passed, and every connection socket (closing it releases the fds still in
 * flight in it), is handed to one dedicated Worker, src/fd_closer_worker.ts,
 * that closes them in order; a close that blocks stalls only that Worker.
 *
 * Hand-off without messages: a ring of fds in shared memory
 * (src/fd_closer_ring.ts).
 *
 * The ring is bounded. When it is full (the Worker is stuck in a close), fds
 * wait in a list on the loop's side, moved into the ring as it empties; a
 * close that has not returned for {@linkcode STUCK_AFTER_MS} is logged once,
 * with the count of fds waiting, and its end once more. The loop never waits
 * for the Worker. While the Worker is stuck, the fds it has not closed yet
 * stay open (they count against RLIMIT_NOFILE) until the blocked close
 * returns.
 *
 * The Worker is started by the constructor (it costs about 9 MB of resident
 * memory); {@linkcode FdCloser.ready} tells when it serves.
 *
 * @module
 */

import { closeFd } from "../ffi/files.ts";
import {
  createRing,
  ringLength,
  ringPush,
  ringStop,
  ringTake,
  RingWord,
} from "./fd_closer_ring.ts";
import { logger } from "./log.ts";

/** Default ring size (fds). */
export const DEFAULT_CLOSER_CAPACITY = 256;
/** A close that has not returned for this long is reported (once). */
export const STUCK_AFTER_MS = 1000;
/** How often fds waiting outside a full ring are moved in. */
const PUMP_MS = 100;

/**
 * The Worker module: next to this file when run from source;
 * `fd_closer_worker.js` next to the bundle in the Debian package
 * (tools/build_deb.ts bundles it as a file of its own, because a Worker is
 * loaded by URL, not imported).
 */
const CLOSER_WORKER_URL = new URL(
  import.meta.url.endsWith(".ts") ? "./fd_closer_worker.ts" : "./fd_closer_worker.js",
  import.meta.url,
);

const log = logger("closer");

/** Options of {@linkcode FdCloser}. */
export interface FdCloserOptions {
  /** Ring size in fds, a power of two (default {@linkcode DEFAULT_CLOSER_CAPACITY}). */
  capacity?: number;
}

/** Counters of an {@linkcode FdCloser}. */
export interface FdCloserStats {
  /** fds handed over in all. */
  handed: number;
  /** fds the Worker has closed (or is closing: taken from the ring). */
  taken: number;
  /** fds in the ring, not yet taken. */
  queued: number;
  /** fds waiting outside the full ring. */
  waiting: number;
  /** Times the ring was full and fds had to wait. */
  overflows: number;
}

/** Hands fds to a closer Worker; {@linkcode FdCloser.close} never blocks. */
export class FdCloser {
  readonly #words: Int32Array;
  readonly #started: Promise<void>;
  /** fds waiting for room in the ring (the Worker is stuck). */
  readonly #waiting: number[] = [];
  #pumpTimer: ReturnType<typeof setTimeout> | null = null;
  #handed = 0;
  #overflows = 0;
  /** The head last seen, and when it last moved (for the stuck report). */
  #seenHead = 0;
  #seenAt = 0;
  #stuckReported = false;
  /** The Worker has started serving (before that a full ring is not "stuck"). */
  #ready = false;
  #onStarted: () => void = () => {};
  /** The Worker could not run: close on this thread (logged as an error). */
  #failed = false;
  #stopped = false;

  constructor(options: FdCloserOptions = {}) {
    this.#words = createRing(options.capacity ?? DEFAULT_CLOSER_CAPACITY);
    this.#started = new Promise((resolve) => this.#onStarted = resolve);
    this.#spawn();
  }

  /**
   * Resolves to true once the Worker serves, or false if it failed or did not
   * start within `timeoutMs` (fds handed over meanwhile wait in the ring).
   */
  async ready(options: { timeoutMs?: number } = {}): Promise<boolean> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, options.timeoutMs ?? 5000);
    });
    try {
      await Promise.race([this.#started, timeout]);
    } finally {
      clearTimeout(timer);
    }
    return this.#ready && !this.#failed;
  }

  /** Current counters. */
  get stats(): FdCloserStats {
    return {
      handed: this.#handed,
      taken: Atomics.load(this.#words, RingWord.HEAD) >>> 0,
      queued: ringLength(this.#words),
      waiting: this.#waiting.length,
      overflows: this.#overflows,
    };
  }

  /** fds handed over and not yet taken by the Worker. */
  get pending(): number {
    const s = this.stats;
    return s.queued + s.waiting;
  }

  /**
   * Close `fd` on the closer Worker. The caller gives up the fd: it must not
   * use it again. Never blocks and never throws.
   */
  close(fd: number): void {
    this.#handed++;
    if (this.#failed || this.#stopped) {
      // no Worker (it failed to start, or we are past stop()): this thread
      return closeHere(fd);
    }
    this.#watch(Date.now());
    this.#pump();
    if (this.#waiting.length > 0 || !ringPush(this.#words, fd)) {
      if (this.#waiting.length === 0) this.#overflows++;
      this.#waiting.push(fd);
      this.#schedulePump();
    }
  }

  /**
   * No more hand-overs: the Worker closes what is in the ring and exits.
   * fds still waiting outside the ring are moved in if there is room, else
   * left open for the process exit (the Worker is stuck; closing them here
   * could block this thread the same way), and counted in the log.
   */
  stop(): void {
    if (this.#stopped) return;
    this.#pump();
    this.#stopped = true;
    if (this.#pumpTimer !== null) clearTimeout(this.#pumpTimer);
    this.#pumpTimer = null;
    if (this.#waiting.length > 0) {
      log.warning("{n} client fd(s) left open at stop: the fd closer is stuck in close(2)", {
        n: this.#waiting.length,
      });
      this.#waiting.length = 0;
    }
    ringStop(this.#words);
  }

  /** Move waiting fds into the ring while there is room. */
  #pump(): void {
    while (this.#waiting.length > 0 && ringPush(this.#words, this.#waiting[0])) {
      this.#waiting.shift();
    }
  }

  #schedulePump(): void {
    if (this.#pumpTimer !== null) return;
    this.#pumpTimer = setTimeout(() => {
      this.#pumpTimer = null;
      if (this.#stopped) return;
      this.#pump();
      this.#watch(Date.now());
      if (this.#waiting.length > 0) this.#schedulePump();
    }, PUMP_MS);
    Deno.unrefTimer(this.#pumpTimer);
  }

  /**
   * Report once when fds have been waiting and the Worker has not taken one
   * for STUCK_AFTER_MS (it is inside a close(2) that does not return), and
   * once when it goes on.
   */
  #watch(now: number): void {
    const head = Atomics.load(this.#words, RingWord.HEAD);
    const backlog = ringLength(this.#words) + this.#waiting.length;
    if (!this.#ready || head !== this.#seenHead || backlog === 0) {
      if (this.#stuckReported) {
        log.info("fd closer: the blocked close(2) returned after {s} s; {n} fd(s) still to close", {
          s: Math.round((now - this.#seenAt) / 1000),
          n: backlog,
        });
        this.#stuckReported = false;
      }
      this.#seenHead = head;
      this.#seenAt = now;
      return;
    }
    if (!this.#stuckReported && now - this.#seenAt >= STUCK_AFTER_MS) {
      this.#stuckReported = true;
      log.warning(
        "fd closer: a close(2) of a client fd has not returned for {s} s (a file on a stalled " +
          "FUSE or network file system?); {n} fd(s) queued behind it, the clients are still served",
        {
          s: Math.round((now - this.#seenAt) / 1000),
          n: backlog,
        },
      );
    }
  }

  #spawn(): void {
    const worker = new Worker(CLOSER_WORKER_URL, { type: "module" });
    worker.onerror = (e: ErrorEvent) => {
      e.preventDefault();
      this.#fail(e.message);
    };
    worker.onmessage = () => {
      this.#ready = true;
      this.#onStarted();
    };
    worker.postMessage(this.#words.buffer);
  }

  /** The Worker died (e.g. its module is missing): close what it left, here, from now on. */
  #fail(why: string): void {
    if (this.#failed) return;
    this.#failed = true;
    this.#onStarted();
    log.error("fd closer Worker failed ({why}); client fds are now closed on the event loop", {
      why,
    });
    // the Worker counts an fd as taken before closing it: what is left is ours
    for (let next = ringTake(this.#words); next.fd !== null; next = ringTake(this.#words)) {
      closeHere(next.fd);
    }
    for (const fd of this.#waiting.splice(0)) closeHere(fd);
  }
}

function closeHere(fd: number): void {
  try {
    closeFd(fd);
  } catch {
    // EBADF would be a bug elsewhere; nothing to do here
  }
}
