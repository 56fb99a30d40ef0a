/**
 * The qemu-pr-helper wire protocol: the one place that knows its byte layout.
 *
 * All integers are big-endian. One connection carries one command at a time.
 *
 * Greeting (once per connection, helper speaks first):
 *
 * | dir | offset | size | field                                   |
 * |-----|-------:|-----:|-----------------------------------------|
 * | H→C |      0 |    4 | supported features, u32 (we send 0)     |
 * | C→H |      0 |    4 | requested features, u32 (QEMU sends 0)  |
 *
 * Request (client → helper):
 *
 * | offset | size | field                                                       |
 * |-------:|-----:|-------------------------------------------------------------|
 * |      0 |   16 | CDB; exactly one fd as SCM_RIGHTS on some chunk of it        |
 * |  CDB 0 |    1 | opcode: 0x5E PERSISTENT RESERVE IN / 0x5F ... OUT            |
 * | CDB 7  |    2 | N: allocation length (IN) / parameter list length low 16 bits (OUT) |
 * |     16 |    N | PR OUT parameter list (opcode 0x5F only), N ≤ 8192           |
 *
 * Reply (helper → client):
 *
 * | offset | size | field                                                       |
 * |-------:|-----:|-------------------------------------------------------------|
 * |      0 |    4 | result: SCSI status, i32                                     |
 * |      4 |    4 | sz: data length, i32; 0 unless PR IN with GOOD; ≤ N ≤ 8192   |
 * |      8 |   96 | sense (fixed or descriptor format; meaningful for CHECK CONDITION) |
 * |    104 |   sz | PR IN parameter data                                         |
 *
 * QEMU's client asserts `sz <= N` for PR IN and `sz == 0` for PR OUT: a helper
 * that breaks that crashes QEMU. {@linkcode encodeReply} is the only writer and
 * enforces both.
 *
 * @module
 */

/** PERSISTENT RESERVE IN. */
export const PR_IN = 0x5e;
/** PERSISTENT RESERVE OUT. */
export const PR_OUT = 0x5f;
/** Size of the feature words of the greeting. */
export const FEATURES_LEN = 4;
/** Size of the CDB field of a request. */
export const CDB_LEN = 16;
/** Size of the sense field of a reply. */
export const SENSE_LEN = 96;
/** Size of a reply without its data. */
export const REPLY_HEADER_LEN = 104;
/** Largest data transfer in either direction (QEMU's PR_HELPER_DATA_SIZE). */
export const MAX_DATA_LEN = 8192;
/** The feature bits this helper implements: none. */
export const SUPPORTED_FEATURES = 0;

/** SCSI status values (SAM) a reply may carry, by name. */
export const ScsiStatus = {
  GOOD: 0x00,
  CHECK_CONDITION: 0x02,
  BUSY: 0x08,
  RESERVATION_CONFLICT: 0x18,
  TASK_SET_FULL: 0x28,
  ACA_ACTIVE: 0x30,
  TASK_ABORTED: 0x40,
} as const;

/** Why a peer's frame ends the connection (the cases where qemu-pr-helper closes too). */
export type CloseReason =
  | "unsupported-features"
  | "no-fd"
  | "too-many-fds"
  | "bad-opcode"
  | "length-too-large"
  | "truncated-cdb"
  | "short-payload";

/** Options for {@linkcode ProtocolError}. */
export interface ProtocolErrorOptions {
  /** fds the framer held when the frame was refused, for the caller to close. */
  discard?: readonly number[];
}

/** A frame the helper cannot answer: the connection is closed without a reply. */
export class ProtocolError extends Error {
  /** Machine-readable reason. */
  readonly reason: CloseReason | "bad-reply";
  /** fds to close: set by {@linkcode RequestFramer.push}, empty elsewhere. */
  readonly discard: readonly number[];

  /**
   * A refused frame: `reason` says why the connection ends, `message` what
   * the peer sent; `options.discard` the fds the framer held.
   */
  constructor(
    reason: CloseReason | "bad-reply",
    message: string,
    options: ProtocolErrorOptions = {},
  ) {
    super(message);
    this.name = "ProtocolError";
    this.reason = reason;
    this.discard = options.discard ?? [];
  }
}

/** Encode a feature word (greeting, either direction). */
export function encodeFeatures(features: number): Uint8Array {
  const out = new Uint8Array(FEATURES_LEN);
  new DataView(out.buffer).setUint32(0, features >>> 0);
  return out;
}

/** Decode a 4-byte feature word. */
export function decodeFeatures(bytes: Uint8Array): number {
  if (bytes.length !== FEATURES_LEN) {
    throw new RangeError(`a feature word is 4 bytes, got ${bytes.length}`);
  }
  return new DataView(bytes.buffer, bytes.byteOffset, 4).getUint32(0);
}

/**
 * Check the client's requested features: every bit must be one we support.
 * Throws ProtocolError("unsupported-features") otherwise.
 */
export function checkRequestedFeatures(requested: number): void {
  const unsupported = ((requested >>> 0) & ~SUPPORTED_FEATURES) >>> 0;
  if (unsupported !== 0) {
    throw new ProtocolError(
      "unsupported-features",
      `client requested unsupported feature bits 0x${unsupported.toString(16)}`,
    );
  }
}

/** The length field N of a CDB: BE16 at bytes 7–8 (QEMU's rule for group-2 opcodes). */
export function cdbDataLength(cdb: Uint8Array): number {
  return (cdb[7] << 8) | cdb[8];
}

/** What a received CDB tells the framer. */
export interface CdbFrame {
  /** PR IN or PR OUT. */
  opcode: typeof PR_IN | typeof PR_OUT;
  /** N: allocation length for IN, payload length for OUT. */
  dataLength: number;
  /** Bytes of payload that follow the CDB (N for OUT, 0 for IN). */
  payloadLength: number;
}

/**
 * Validate a complete 16-byte CDB and the fds that came with it.
 * Throws ProtocolError for the frames qemu-pr-helper closes the connection on.
 */
export function checkCdbFrame(cdb: Uint8Array, fdCount: number): CdbFrame {
  if (cdb.length !== CDB_LEN) {
    throw new ProtocolError("truncated-cdb", `CDB of ${cdb.length} bytes, expected 16`);
  }
  if (fdCount === 0) throw new ProtocolError("no-fd", "no file descriptor with the CDB");
  if (fdCount > 1) {
    throw new ProtocolError("too-many-fds", `${fdCount} file descriptors with one CDB`);
  }
  const opcode = cdb[0];
  if (opcode !== PR_IN && opcode !== PR_OUT) {
    throw new ProtocolError(
      "bad-opcode",
      `opcode 0x${opcode.toString(16).padStart(2, "0")} is not PERSISTENT RESERVE IN/OUT`,
    );
  }
  const dataLength = cdbDataLength(cdb);
  if (dataLength > MAX_DATA_LEN) {
    throw new ProtocolError(
      "length-too-large",
      `data length ${dataLength} exceeds ${MAX_DATA_LEN}`,
    );
  }
  return { opcode, dataLength, payloadLength: opcode === PR_OUT ? dataLength : 0 };
}

/** A reply before encoding. */
export interface Reply {
  /** SCSI status (low byte is what QEMU uses). */
  status: number;
  /** Sense bytes; shorter is zero-padded to 96, longer is cut. */
  sense?: Uint8Array;
  /** PR IN data; sent only for PR IN with GOOD status, cut to the allocation length. */
  data?: Uint8Array;
}

/** The request a reply answers: what bounds its data. */
export interface ReplyBounds {
  /** PR IN or PR OUT: only a PR IN reply carries data. */
  opcode: number;
  /** N of the request's CDB. */
  dataLength: number;
}

/**
 * Encode a reply so that QEMU's asserts hold, whatever the caller passes:
 * sz is 0 unless the request was PR IN and the status GOOD, and never exceeds
 * the request's allocation length (nor 8192).
 */
export function encodeReply(reply: Reply, bounds: ReplyBounds): Uint8Array {
  const status = reply.status & 0xff;
  let sz = 0;
  if (bounds.opcode === PR_IN && status === ScsiStatus.GOOD && reply.data) {
    sz = Math.min(reply.data.length, bounds.dataLength, MAX_DATA_LEN);
  }
  const out = new Uint8Array(REPLY_HEADER_LEN + sz);
  const v = new DataView(out.buffer);
  v.setInt32(0, status);
  v.setInt32(4, sz);
  if (reply.sense) out.set(reply.sense.subarray(0, SENSE_LEN), 8);
  if (sz > 0) out.set(reply.data!.subarray(0, sz), REPLY_HEADER_LEN);
  return out;
}

/** A decoded reply header. */
export interface ReplyHeader {
  /** SCSI status byte. */
  status: number;
  /** Length of the data that follows. */
  dataLength: number;
  /** The sense field ({@linkcode SENSE_LEN} bytes). */
  sense: Uint8Array;
}

/**
 * Decode the 104-byte reply header, checking it against the request as QEMU
 * does (a helper breaking these would crash QEMU). Throws ProtocolError("bad-reply").
 */
export function decodeReplyHeader(header: Uint8Array, bounds: ReplyBounds): ReplyHeader {
  if (header.length !== REPLY_HEADER_LEN) {
    throw new ProtocolError("bad-reply", `reply header of ${header.length} bytes, expected 104`);
  }
  const v = new DataView(header.buffer, header.byteOffset, REPLY_HEADER_LEN);
  const status = v.getInt32(0);
  const sz = v.getInt32(4);
  if (sz < 0 || sz > MAX_DATA_LEN) {
    throw new ProtocolError("bad-reply", `reply sz ${sz} outside 0..${MAX_DATA_LEN}`);
  }
  if (bounds.opcode === PR_OUT && sz !== 0) {
    throw new ProtocolError("bad-reply", `reply sz ${sz} for PR OUT (must be 0)`);
  }
  if (sz > bounds.dataLength) {
    throw new ProtocolError(
      "bad-reply",
      `reply sz ${sz} exceeds the allocation length ${bounds.dataLength}`,
    );
  }
  if (sz !== 0 && (status & 0xff) !== ScsiStatus.GOOD) {
    throw new ProtocolError(
      "bad-reply",
      `reply sz ${sz} with non-GOOD status 0x${status.toString(16)}`,
    );
  }
  return { status, dataLength: sz, sense: header.slice(8, 8 + SENSE_LEN) };
}

/** A complete request as the framer delivers it. */
export interface Request {
  /** The CDB, {@linkcode CDB_LEN} bytes. */
  cdb: Uint8Array;
  /** The one fd that came with the CDB (the receiver owns it). */
  fd: number;
  /** The CDB's framing facts. */
  frame: CdbFrame;
  /** PR OUT parameter list (empty for PR IN). */
  payload: Uint8Array;
}

/** What the framer wants next. */
export type FramerPhase = "features" | "cdb" | "payload";

/**
 * The helper side of the protocol as a pure state machine: it says how many
 * bytes it needs next, and is fed exactly those bytes (plus any fds that came
 * with them). Reading no more than `need` bytes keeps a later request's fd out
 * of the current one.
 *
 * Every fd pushed is either handed out in a Request or returned by
 * {@linkcode RequestFramer.push} in `discard`, for the caller to close.
 */
export class RequestFramer {
  #phase: FramerPhase = "features";
  #buf = new Uint8Array(CDB_LEN + MAX_DATA_LEN);
  #have = 0;
  #fds: number[] = [];
  #frame: CdbFrame | null = null;

  /** The current phase. */
  get phase(): FramerPhase {
    return this.#phase;
  }

  /** true if part of a frame has been received (a stall here may be timed out). */
  get midFrame(): boolean {
    return this.#have > 0 || this.#phase === "payload";
  }

  /** How many bytes the framer needs to finish the current phase. */
  get need(): number {
    switch (this.#phase) {
      case "features":
        return FEATURES_LEN - this.#have;
      case "cdb":
        return CDB_LEN - this.#have;
      default:
        return CDB_LEN + this.#frame!.payloadLength - this.#have;
    }
  }

  /** fds held for an unfinished CDB (the caller closes them if it drops the connection). */
  takePendingFds(): number[] {
    const fds = this.#fds;
    this.#fds = [];
    return fds;
  }

  /**
   * Feed bytes (at most `need`) and the fds that arrived with them. Returns a
   * completed Request, if any, and fds to close. Throws ProtocolError when the
   * connection must be closed; fds pushed so far are then in `error.discard`.
   */
  push(
    bytes: Uint8Array,
    fds: readonly number[] = [],
  ): { request: Request | null; discard: number[] } {
    if (bytes.length > this.need) {
      throw new RangeError(`pushed ${bytes.length} bytes, framer needs ${this.need}`);
    }
    const discard: number[] = [];
    if (this.#phase === "cdb") this.#fds.push(...fds);
    else discard.push(...fds); // an fd with the greeting or the payload is not ours to keep
    this.#buf.set(bytes, this.#have);
    this.#have += bytes.length;
    if (this.need > 0) return { request: null, discard };
    try {
      return this.#finishPhase(discard);
    } catch (e) {
      this.#have = 0;
      if (!(e instanceof ProtocolError)) throw e;
      throw new ProtocolError(e.reason, e.message, {
        discard: [...discard, ...this.takePendingFds()],
      });
    }
  }

  #finishPhase(discard: number[]): { request: Request | null; discard: number[] } {
    switch (this.#phase) {
      case "features": {
        const requested = decodeFeatures(this.#buf.slice(0, FEATURES_LEN));
        this.#have = 0;
        checkRequestedFeatures(requested);
        this.#phase = "cdb";
        return { request: null, discard };
      }
      case "cdb": {
        const cdb = this.#buf.slice(0, CDB_LEN);
        const frame = checkCdbFrame(cdb, this.#fds.length);
        if (frame.payloadLength > 0) {
          this.#frame = frame;
          this.#phase = "payload";
          return { request: null, discard };
        }
        return { request: this.#complete(frame), discard };
      }
      case "payload":
        return { request: this.#complete(this.#frame!), discard };
    }
  }

  #complete(frame: CdbFrame): Request {
    const request: Request = {
      cdb: this.#buf.slice(0, CDB_LEN),
      fd: this.#fds[0],
      frame,
      payload: this.#buf.slice(CDB_LEN, CDB_LEN + frame.payloadLength),
    };
    this.#fds = [];
    this.#have = 0;
    this.#frame = null;
    this.#phase = "cdb";
    return request;
  }

  /**
   * The peer closed the stream. Returns the reason if that cut a frame
   * (the connection ends either way); fds held are in `discard`.
   */
  endOfStream(): { reason: CloseReason | null; discard: number[] } {
    const discard = this.takePendingFds();
    let reason: CloseReason | null = null;
    if (this.#phase === "payload") reason = "short-payload";
    else if (this.#have > 0) reason = "truncated-cdb";
    this.#have = 0;
    return { reason, discard };
  }
}

/** The fds to close that a {@linkcode ProtocolError} carries; none for any other error. */
export function discardedFds(e: unknown): number[] {
  return e instanceof ProtocolError ? [...e.discard] : [];
}
