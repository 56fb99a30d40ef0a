/**
 * poll(2) through libc, on this thread or on Deno's blocking thread pool.
 * Rules as in ffi/libc.ts.
 *
 * @module
 */

import { Errno, SysError } from "./errno.ts";
import { lastErrno, libc } from "./libc.ts";

/** `poll(2)` event bits. */
export const POLLIN = 0x1;
export const POLLOUT = 0x4;
export const POLLERR = 0x8;
export const POLLHUP = 0x10;
export const POLLNVAL = 0x20;

// ---------------------------------------------------------------- poll

/**
 * A set of pollfd entries in one native buffer. Entries are assigned by index;
 * `revents(i)` reads the result of the last poll.
 */
export class PollSet {
  #buf: Uint8Array;
  #view: DataView;
  #count = 0;

  constructor(capacity = 64) {
    this.#buf = new Uint8Array(8 * capacity);
    this.#view = new DataView(this.#buf.buffer);
  }

  /** Forget every entry. */
  clear(): void {
    this.#count = 0;
  }

  /** Number of entries. */
  get size(): number {
    return this.#count;
  }

  /** Append an entry; returns its index. */
  add(fd: number, events: number): number {
    if (8 * (this.#count + 1) > this.#buf.length) {
      const bigger = new Uint8Array(this.#buf.length * 2);
      bigger.set(this.#buf);
      this.#buf = bigger;
      this.#view = new DataView(bigger.buffer);
    }
    const i = this.#count++;
    this.#view.setInt32(8 * i, fd, true);
    this.#view.setInt16(8 * i + 4, events, true);
    this.#view.setInt16(8 * i + 6, 0, true);
    return i;
  }

  /** fd of entry i. */
  fd(i: number): number {
    return this.#view.getInt32(8 * i, true);
  }

  /** revents of entry i after a poll. */
  revents(i: number): number {
    return this.#view.getInt16(8 * i + 6, true) & 0xffff;
  }

  /** poll(2) on this thread; returns the number of ready entries (0 on timeout or EINTR). */
  pollSync(timeoutMs: number): number {
    const rc = libc.poll(this.#buf, BigInt(this.#count), timeoutMs);
    if (rc < 0) {
      const e = lastErrno();
      if (e === Errno.EINTR) return 0;
      throw new SysError("poll", e);
    }
    return rc;
  }

  /**
   * poll(2) on Deno's blocking thread pool, so the event loop stays free.
   * errno is not recoverable there: a negative result is reported as EINTR-like 0
   * after clearing revents, and the caller simply polls again.
   */
  async pollAsync(timeoutMs: number): Promise<number> {
    const buf = this.#buf;
    const rc = await libc.poll_async(buf, BigInt(this.#count), timeoutMs);
    if (rc < 0) {
      for (let i = 0; i < this.#count; i++) this.#view.setInt16(8 * i + 6, 0, true);
      return 0;
    }
    return rc;
  }
}
