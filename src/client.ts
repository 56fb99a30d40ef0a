/**
 * A client of the qemu-pr-helper protocol, doing what QEMU's
 * pr-manager-helper does: connect, read the helper's feature word, answer 0,
 * then per command send the 16-byte CDB with the disk's fd (SCM_RIGHTS), the
 * PR OUT parameter list, and read the reply. Synchronous (blocking sockets,
 * with an optional timeout per wait), so tools and tests stay simple.
 *
 * @module
 */

import { closeFd, O_RDONLY, O_RDWR, openPath } from "../ffi/files.ts";
import { POLLIN, POLLOUT, PollSet } from "../ffi/poll.ts";
import { connectUnix, recvWithFds, sendWithFds, unixSocket } from "../ffi/sockets.ts";
import {
  CDB_LEN,
  cdbDataLength,
  decodeFeatures,
  decodeReplyHeader,
  encodeFeatures,
  FEATURES_LEN,
  MAX_DATA_LEN,
  PR_OUT,
  REPLY_HEADER_LEN,
} from "./wire.ts";

/** A reply as the client sees it. */
export interface PrReply {
  /** SCSI status. */
  status: number;
  /** 96 bytes of sense. */
  sense: Uint8Array;
  /** PR IN data (sz bytes). */
  data: Uint8Array;
}

/** The helper closed the connection or did not answer in time. */
export class HelperConnectionError extends Error {
  /** An error whose message says what was wrong, naming the helper or the wait. */
  constructor(message: string) {
    super(message);
    this.name = "HelperConnectionError";
  }
}

/** Options of {@linkcode PrHelperClient.connect}. */
export interface ConnectOptions {
  /** Longest wait for any read or write, in ms (default: wait forever, as QEMU). */
  timeoutMs?: number;
  /** Feature bits to request (QEMU sends 0). */
  requestFeatures?: number;
}

/**
 * A raw connection to a helper: bytes and fds in, bytes out. The building
 * block of {@linkcode PrHelperClient}, and of tests that send malformed frames.
 */
export class RawConnection {
  /** The connected socket. */
  readonly fd: number;
  /** Longest wait for a read or write, in ms (undefined: wait forever). */
  readonly timeoutMs: number | undefined;
  #closed = false;

  private constructor(fd: number, timeoutMs: number | undefined) {
    this.fd = fd;
    this.timeoutMs = timeoutMs;
  }

  /** Connect to the helper's socket. */
  static connect(path: string, options: { timeoutMs?: number } = {}): RawConnection {
    const fd = unixSocket();
    try {
      connectUnix(fd, path);
    } catch (e) {
      closeFd(fd);
      throw e;
    }
    return new RawConnection(fd, options.timeoutMs);
  }

  #wait(events: number, what: string): void {
    if (this.timeoutMs === undefined) return;
    const ps = new PollSet(1);
    ps.add(this.fd, events);
    if (ps.pollSync(this.timeoutMs) === 0) {
      throw new HelperConnectionError(`no ${what} from the helper within ${this.timeoutMs} ms`);
    }
  }

  /** Send bytes, with fds attached to the first chunk. */
  send(bytes: Uint8Array, fds: readonly number[] = []): void {
    let off = 0;
    let first = true;
    while (off < bytes.length || (first && fds.length > 0)) {
      this.#wait(POLLOUT, "room to write");
      const n = sendWithFds(this.fd, bytes.subarray(off), { fds: first ? fds : [] });
      if (n === null) continue;
      first = false;
      off += n;
    }
  }

  /** Read exactly `n` bytes; throws HelperConnectionError on EOF. */
  receive(n: number): Uint8Array {
    const out = new Uint8Array(n);
    let have = 0;
    while (have < n) {
      this.#wait(POLLIN, `${n - have} more bytes`);
      const r = recvWithFds(this.fd, out, { offset: have, length: n - have });
      if (r === null) continue;
      for (const f of r.fds) closeFd(f); // a helper never sends fds
      if (r.bytes === 0) {
        throw new HelperConnectionError(`helper closed the connection after ${have} of ${n} bytes`);
      }
      have += r.bytes;
    }
    return out;
  }

  /** true if the helper has closed its end (reads EOF without blocking). */
  peerClosed(waitMs = 0): boolean {
    const ps = new PollSet(1);
    ps.add(this.fd, POLLIN);
    if (ps.pollSync(waitMs) === 0) return false;
    const probe = new Uint8Array(1);
    const r = recvWithFds(this.fd, probe, { dontWait: true });
    if (r === null) return false;
    for (const f of r.fds) closeFd(f);
    return r.bytes === 0;
  }

  /** Close the socket. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    closeFd(this.fd);
  }
}

/** A QEMU-like client of a PR helper. */
export class PrHelperClient {
  /** The connection underneath. */
  readonly raw: RawConnection;
  /** The feature word the helper sent. */
  readonly helperFeatures: number;

  private constructor(raw: RawConnection, helperFeatures: number) {
    this.raw = raw;
    this.helperFeatures = helperFeatures;
  }

  /** Connect and do the greeting. */
  static connect(path: string, options: ConnectOptions = {}): PrHelperClient {
    const raw = RawConnection.connect(path, options);
    try {
      const features = decodeFeatures(raw.receive(FEATURES_LEN));
      raw.send(encodeFeatures(options.requestFeatures ?? 0));
      return new PrHelperClient(raw, features);
    } catch (e) {
      raw.close();
      throw e;
    }
  }

  /**
   * Send one command: `cdb` (at most 16 bytes, zero-padded), the device `fd`,
   * and for PR OUT the parameter list (its length must equal CDB bytes 7–8).
   * The reply is checked as QEMU checks it.
   */
  request(cdb: Uint8Array, fd: number, payload: Uint8Array = new Uint8Array(0)): PrReply {
    if (cdb.length === 0 || cdb.length > CDB_LEN) {
      throw new RangeError(`CDB length ${cdb.length} is not 1..16`);
    }
    const wire = new Uint8Array(CDB_LEN);
    wire.set(cdb);
    const n = cdbDataLength(wire);
    if (n > MAX_DATA_LEN) throw new RangeError(`data length ${n} exceeds ${MAX_DATA_LEN}`);
    if (wire[0] === PR_OUT && payload.length !== n) {
      throw new RangeError(`payload of ${payload.length} bytes, but CDB bytes 7-8 say ${n}`);
    }
    this.raw.send(wire, [fd]);
    if (wire[0] === PR_OUT && n > 0) this.raw.send(payload);
    const header = decodeReplyHeader(this.raw.receive(REPLY_HEADER_LEN), {
      opcode: wire[0],
      dataLength: n,
    });
    const data = header.dataLength > 0 ? this.raw.receive(header.dataLength) : new Uint8Array(0);
    return { status: header.status, sense: header.sense, data };
  }

  /** Close the connection. */
  close(): void {
    this.raw.close();
  }
}

/** Options of {@linkcode openDevice}. */
export interface OpenDeviceOptions {
  /** Open read-write (needed for PR OUT); default read-only. */
  write?: boolean;
}

/** Open a device node (or any file) to pass to the helper. */
export function openDevice(path: string, options: OpenDeviceOptions = {}): number {
  return openPath(path, options.write ? O_RDWR : O_RDONLY);
}

export { closeFd };
