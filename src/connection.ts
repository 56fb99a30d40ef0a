/**
 * One client connection: its non-blocking socket, the protocol framer, the
 * reply being written, and every fd it holds. The server's loop drives it.
 * Every fd the client passed, and the socket itself (closing it releases the
 * fds still in flight in it), is given up through the connection's `release`
 * (the server's fd closer, src/fd_closer.ts), never closed here: a close can
 * block (finding 14.3).
 *
 * @module
 */

import { closeFd } from "../ffi/files.ts";
import { recvWithFds, sendWithFds, shutdownSocket } from "../ffi/sockets.ts";
import type { SysError } from "../ffi/errno.ts";
import type { Peer } from "./request_handler.ts";
import {
  CDB_LEN,
  discardedFds,
  encodeFeatures,
  MAX_DATA_LEN,
  ProtocolError,
  type Request,
  RequestFramer,
  SUPPORTED_FEATURES,
} from "./wire.ts";

/** What reading from a connection produced. */
export type ReadOutcome =
  | { kind: "wait" }
  | { kind: "request"; request: Request }
  | { kind: "eof" }
  | { kind: "close"; reason: string };

/** Options of {@linkcode Connection}. */
export interface ConnectionOptions {
  /**
   * Takes an fd this connection gives up and closes it without blocking the
   * caller (default: {@linkcode safeClose}, on this thread).
   */
  release?: (fd: number) => void;
}

/** A client connection. */
export class Connection {
  readonly fd: number;
  readonly peer: Peer;
  readonly framer: RequestFramer = new RequestFramer();
  /** A request is being answered; no more bytes are read until its reply is written. */
  busy = false;
  /** When the current frame or reply started waiting on the peer (ms since epoch), or 0. */
  waitingSince = 0;
  /** Requests answered on this connection. */
  requests = 0;
  #out: Uint8Array | null = null;
  #outOffset = 0;
  #closed = false;
  readonly #scratch = new Uint8Array(CDB_LEN + MAX_DATA_LEN);
  readonly #release: (fd: number) => void;

  constructor(fd: number, peer: Peer, options: ConnectionOptions = {}) {
    this.fd = fd;
    this.peer = peer;
    this.#release = options.release ?? safeClose;
    this.queue(encodeFeatures(SUPPORTED_FEATURES));
  }

  /** The connection was closed by {@linkcode Connection.close}. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Bytes are waiting to be written. */
  get writing(): boolean {
    return this.#out !== null;
  }

  /** Queue bytes to send (one reply at a time). */
  queue(bytes: Uint8Array): void {
    if (this.#out !== null) {
      throw new Error(`connection ${this.peer.connection} already has output queued`);
    }
    this.#out = bytes;
    this.#outOffset = 0;
    this.waitingSince = 0;
  }

  /**
   * Write as much queued output as the socket takes. Returns true when all of
   * it is written. Throws SysError (EPIPE, ECONNRESET...) if the peer is gone.
   */
  flush(now: number): boolean {
    while (this.#out !== null) {
      const rest = this.#out.subarray(this.#outOffset);
      const n = sendWithFds(this.fd, rest, { dontWait: true });
      if (n === null) {
        if (this.waitingSince === 0) this.waitingSince = now;
        return false;
      }
      this.#outOffset += n;
      if (this.#outOffset >= this.#out.length) {
        this.#out = null;
        this.waitingSince = 0;
      }
    }
    return true;
  }

  /**
   * Read what the framer needs, until a request is complete, the socket has no
   * more data, or the peer closed. Never reads past the current frame.
   */
  read(now: number): ReadOutcome {
    for (;;) {
      const need = this.framer.need;
      let got;
      try {
        got = recvWithFds(this.fd, this.#scratch, { length: need, dontWait: true });
      } catch (e) {
        return { kind: "close", reason: `recvmsg: ${(e as SysError).code ?? e}` };
      }
      if (got === null) {
        if (this.framer.midFrame && this.waitingSince === 0) this.waitingSince = now;
        return { kind: "wait" };
      }
      if (got.truncated) {
        for (const f of got.fds) this.#release(f);
        for (const f of this.framer.takePendingFds()) this.#release(f);
        return { kind: "close", reason: "too-many-fds" };
      }
      if (got.bytes === 0) {
        for (const f of got.fds) this.#release(f);
        const end = this.framer.endOfStream();
        for (const f of end.discard) this.#release(f);
        return end.reason === null ? { kind: "eof" } : { kind: "close", reason: end.reason };
      }
      try {
        const r = this.framer.push(this.#scratch.subarray(0, got.bytes), got.fds);
        for (const f of r.discard) this.#release(f);
        if (r.request) {
          this.waitingSince = 0;
          return { kind: "request", request: r.request };
        }
        // only a frame that has started can stall: the end of the greeting is a frame
        // boundary, where an idle client (QEMU between commands) waits without limit
        if (!this.framer.midFrame) this.waitingSince = 0;
        else if (this.waitingSince === 0) this.waitingSince = now;
      } catch (e) {
        for (const f of discardedFds(e)) this.#release(f);
        if (e instanceof ProtocolError) return { kind: "close", reason: e.reason };
        throw e;
      }
    }
  }

  /**
   * Close the socket and every fd the framer still holds (through `release`;
   * the peer sees the end of the stream at once, by shutdown). Idempotent.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const f of this.framer.takePendingFds()) this.#release(f);
    shutdownSocket(this.fd);
    this.#release(this.fd);
  }
}

/** close(2) that never throws (the fd is ours; a failure is not actionable). */
export function safeClose(fd: number): void {
  try {
    closeFd(fd);
  } catch {
    // EBADF would be a bug elsewhere; nothing to do here
  }
}
