/**
 * The SG_IO ioctl (`<scsi/sg.h>`), synchronous, on the calling thread.
 *
 * `struct sg_io_hdr` on 64-bit Linux (88 bytes):
 *
 * | offset | size | field            |
 * |-------:|-----:|------------------|
 * |      0 |    4 | interface_id 'S' |
 * |      4 |    4 | dxfer_direction  |
 * |      8 |    1 | cmd_len          |
 * |      9 |    1 | mx_sb_len        |
 * |     10 |    2 | iovec_count      |
 * |     12 |    4 | dxfer_len        |
 * |     16 |    8 | dxferp           |
 * |     24 |    8 | cmdp             |
 * |     32 |    8 | sbp              |
 * |     40 |    4 | timeout (ms)     |
 * |     44 |    4 | flags            |
 * |     48 |    4 | pack_id          |
 * |     56 |    8 | usr_ptr          |
 * |     64 |    1 | status           |
 * |     65 |    1 | masked_status    |
 * |     66 |    1 | msg_status       |
 * |     67 |    1 | sb_len_wr        |
 * |     68 |    2 | host_status      |
 * |     70 |    2 | driver_status    |
 * |     72 |    4 | resid            |
 * |     76 |    4 | duration (ms)    |
 * |     80 |    4 | info             |
 *
 * @module
 */

import { MAX_DATA_LEN, SENSE_LEN } from "../src/wire.ts";
import type { ErrnoResult } from "./errno.ts";
import { SG_IO_HDR as H } from "./layouts.ts";
import { addressOf, lastErrno, libc } from "./libc.ts";

const SG_IO = 0x2285n;
const SG_DXFER_NONE = -1;
const SG_DXFER_TO_DEV = -2;
const SG_DXFER_FROM_DEV = -3;

/**
 * Size of every data-in buffer handed to the kernel, whatever the allocation
 * length: the protocol's 8192 bytes plus 4096 bytes of slack.
 *
 * Why (issue 13, the heap corruption on LIO): the block layer maps a user
 * buffer straight into the command's scatterlist when its address and length
 * are 4-byte aligned (SCSI's DMA alignment), so the target writes into the
 * daemon's own heap pages. Debian 12's LIO (target_core_pr.c, READ FULL
 * STATUS) checks the room for a descriptor against the TransportID length
 * only, not the 8-byte header and the 24 fixed bytes of the descriptor, and
 * writes up to 32 bytes past the allocation length. With a buffer exactly as
 * long as a small allocation length (24, 28, ...: a fast-bin malloc block),
 * those bytes overwrote the next block's header, and glibc aborted at a later
 * free() ("free(): invalid next size (fast)", "corrupted size vs. prev_size").
 * qemu-pr-helper never met it: it always passes its whole 8192-byte buffer.
 * A target still only sends what the CDB's allocation length allows, so the
 * reply is unchanged; a target that overruns it lands in this buffer's slack.
 */
export const DATA_IN_BUFFER_LEN = MAX_DATA_LEN + 4096;

/**
 * The residual count of a data-in SG_IO through a {@linkcode DATA_IN_BUFFER_LEN}
 * buffer (`bufferLength`, the kernel's `resid`), told against the allocation
 * length the caller asked for: what the target sent is `bufferLength - resid`.
 */
export function residAgainst(length: number, bufferLength: number, resid: number): number {
  const sent = Math.max(0, bufferLength - Math.max(0, resid));
  return Math.max(0, length - sent);
}

/** One SG_IO request. */
export interface SgIoRequest {
  /** The CDB, exactly the bytes to send (its length is cmd_len). */
  cdb: Uint8Array;
  /** Data direction. */
  direction: "none" | "in" | "out";
  /** Data buffer: filled for "in", sent for "out". */
  data: Uint8Array;
  /** Command timeout in milliseconds. */
  timeoutMs: number;
}

/** What the kernel filled in for a completed SG_IO: what a reply is built from. */
export interface SgIoDone {
  kind: "done";
  status: number;
  hostStatus: number;
  driverStatus: number;
  /** Sense bytes the kernel wrote (`senseLen` of them, where known, are meaningful). */
  sense: Uint8Array;
  /** Bytes of data-in the device did not fill. */
  resid: number;
}

/** The outcome of the ioctl: either an errno, or what the kernel filled in. */
export type SgIoResult =
  | ErrnoResult
  | (SgIoDone & {
    /** sb_len_wr: sense bytes written. */
    senseLen: number;
    /** The kernel's duration of the command, in ms. */
    durationMs: number;
  });

/** Issue SG_IO on `fd`; never throws for an ioctl failure (the errno is the result). */
export function sgIo(fd: number, req: SgIoRequest): SgIoResult {
  if (req.cdb.length < 6 || req.cdb.length > 16) {
    throw new RangeError(`CDB length ${req.cdb.length} is not 6..16`);
  }
  const hdr = new Uint8Array(H.size);
  const v = new DataView(hdr.buffer);
  const cdb = req.cdb.slice();
  // the sense buffer handed to the kernel: the reply's size, as QEMU's helper
  const sense = new Uint8Array(SENSE_LEN);
  const data = req.data;
  const direction = req.direction === "in"
    ? SG_DXFER_FROM_DEV
    : req.direction === "out"
    ? SG_DXFER_TO_DEV
    : SG_DXFER_NONE;
  v.setInt32(H.interface_id, 0x53, true); // 'S'
  v.setInt32(H.dxfer_direction, direction, true);
  v.setUint8(H.cmd_len, cdb.length);
  v.setUint8(H.mx_sb_len, sense.length);
  v.setUint16(H.iovec_count, 0, true);
  v.setUint32(H.dxfer_len, req.direction === "none" ? 0 : data.length, true);
  v.setBigUint64(
    H.dxferp,
    req.direction === "none" || data.length === 0 ? 0n : addressOf(data),
    true,
  );
  v.setBigUint64(H.cmdp, addressOf(cdb), true);
  v.setBigUint64(H.sbp, addressOf(sense), true);
  v.setUint32(H.timeout, Math.max(1, Math.min(req.timeoutMs, 0xffffffff)), true);
  const rc = libc.ioctl(fd, SG_IO, hdr);
  if (rc < 0) return { kind: "errno", errno: lastErrno() };
  // cdb, sense and data were referenced by address only; keep them reachable here.
  void cdb.length;
  void data.length;
  return {
    kind: "done",
    status: v.getUint8(H.status),
    hostStatus: v.getUint16(H.host_status, true),
    driverStatus: v.getUint16(H.driver_status, true),
    sense,
    senseLen: v.getUint8(H.sb_len_wr),
    resid: v.getInt32(H.resid, true),
    durationMs: v.getUint32(H.duration, true),
  };
}
