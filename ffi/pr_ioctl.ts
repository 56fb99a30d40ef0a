/**
 * The block layer's persistent-reservation ioctls (`<linux/pr.h>`),
 * synchronous, on the calling thread (a Worker: on a dm-multipath device the
 * kernel sends one PR OUT per path and may wait for a path to come back).
 *
 * | request                | nr  | struct (bytes)            | fields (LE, x86_64/aarch64)               |
 * |------------------------|----:|---------------------------|-------------------------------------------|
 * | `IOC_PR_REGISTER`      | 200 | `pr_registration` (24)    | u64 old_key, u64 new_key, u32 flags, pad  |
 * | `IOC_PR_RESERVE`       | 201 | `pr_reservation` (16)     | u64 key, u32 type, u32 flags              |
 * | `IOC_PR_RELEASE`       | 202 | `pr_reservation` (16)     | u64 key, u32 type, u32 flags              |
 * | `IOC_PR_PREEMPT`       | 203 | `pr_preempt` (24)         | u64 old_key, u64 new_key, u32 type, flags |
 * | `IOC_PR_PREEMPT_ABORT` | 204 | `pr_preempt` (24)         | u64 old_key, u64 new_key, u32 type, flags |
 * | `IOC_PR_CLEAR`         | 205 | `pr_clear` (16)           | u64 key, u32 flags, pad                   |
 *
 * Each is `_IOW('p', nr, struct)`. `flags` may only hold `PR_FL_IGNORE_KEY`.
 * The ioctl's return value is the result: 0 success, a negative errno
 * (`-1` + errno from libc), or a **positive** SCSI result the kernel passes
 * up unchanged (status byte in bits 0-7, host byte in bits 16-23; newer
 * kernels name these `PR_STS_*` with the same values).
 *
 * @module
 */

import type { ErrnoResult } from "./errno.ts";
import { PR_CLEAR, PR_PREEMPT, PR_REGISTRATION, PR_RESERVATION } from "./layouts.ts";
import { lastErrno, libc } from "./libc.ts";

function iow(nr: number, size: number): number {
  return ((1 << 30) | (size << 16) | (0x70 << 8) | nr) >>> 0;
}

/** The PR ioctl request numbers. */
export const PrIoctl = {
  REGISTER: iow(200, PR_REGISTRATION.size),
  RESERVE: iow(201, PR_RESERVATION.size),
  RELEASE: iow(202, PR_RESERVATION.size),
  PREEMPT: iow(203, PR_PREEMPT.size),
  PREEMPT_ABORT: iow(204, PR_PREEMPT.size),
  CLEAR: iow(205, PR_CLEAR.size),
} as const;

/** `PR_FL_IGNORE_KEY`: REGISTER AND IGNORE EXISTING KEY. */
export const PR_FL_IGNORE_KEY = 1;

/** `enum pr_type` of `<linux/pr.h>` (not the SCSI type codes). */
export const PrIoctlType = {
  WRITE_EXCLUSIVE: 1,
  EXCLUSIVE_ACCESS: 2,
  WRITE_EXCLUSIVE_REG_ONLY: 3,
  EXCLUSIVE_ACCESS_REG_ONLY: 4,
  WRITE_EXCLUSIVE_ALL_REGS: 5,
  EXCLUSIVE_ACCESS_ALL_REGS: 6,
} as const;

const SIZES: ReadonlyMap<number, number> = new Map([
  [PrIoctl.REGISTER, PR_REGISTRATION.size],
  [PrIoctl.RESERVE, PR_RESERVATION.size],
  [PrIoctl.RELEASE, PR_RESERVATION.size],
  [PrIoctl.PREEMPT, PR_PREEMPT.size],
  [PrIoctl.PREEMPT_ABORT, PR_PREEMPT.size],
  [PrIoctl.CLEAR, PR_CLEAR.size],
]);

/** The size of the struct a PR ioctl request takes, or null if `request` is not one. */
export function prIoctlArgSize(request: number): number | null {
  return SIZES.get(request >>> 0) ?? null;
}

/**
 * SPC's reservation type codes (PR OUT CDB byte 2, bits 3-0) -> `enum pr_type`:
 * 1 write exclusive, 3 exclusive access, 5/6 the registrants-only forms, 7/8
 * the all-registrants forms. Other codes have no ioctl value.
 */
const PR_TYPE_OF_SCSI: ReadonlyMap<number, number> = new Map([
  [0x1, PrIoctlType.WRITE_EXCLUSIVE],
  [0x3, PrIoctlType.EXCLUSIVE_ACCESS],
  [0x5, PrIoctlType.WRITE_EXCLUSIVE_REG_ONLY],
  [0x6, PrIoctlType.EXCLUSIVE_ACCESS_REG_ONLY],
  [0x7, PrIoctlType.WRITE_EXCLUSIVE_ALL_REGS],
  [0x8, PrIoctlType.EXCLUSIVE_ACCESS_ALL_REGS],
]);

/** The `enum pr_type` value for a SCSI reservation type code, or null if it has none. */
export function prTypeOf(scsiType: number): number | null {
  return PR_TYPE_OF_SCSI.get(scsiType) ?? null;
}

/**
 * One PR ioctl, described by its fields (keys as SCSI carries them, types as
 * SCSI codes); {@linkcode encodePrIoctl} turns it into the request number and
 * struct bytes.
 */
export type PrIoctlCall =
  | { op: "register"; oldKey: bigint; newKey: bigint; ignoreKey: boolean }
  | { op: "reserve" | "release"; key: bigint; scsiType: number }
  | { op: "preempt" | "preempt-abort"; oldKey: bigint; newKey: bigint; scsiType: number }
  | { op: "clear"; key: bigint };

/** A PR ioctl ready to issue: request number and its encoded struct. */
export interface EncodedPrIoctl {
  request: number;
  arg: Uint8Array;
}

function ioctlType(scsiType: number): number {
  const type = prTypeOf(scsiType);
  if (type === null) throw new RangeError(`reservation type ${scsiType} has no PR ioctl type`);
  return type;
}

/**
 * Encode `call` as `<linux/pr.h>` lays it out (offsets from ffi/layouts.ts,
 * native little-endian). Throws RangeError for a reservation type with no
 * `enum pr_type` value.
 */
export function encodePrIoctl(call: PrIoctlCall): EncodedPrIoctl {
  switch (call.op) {
    case "register": {
      const arg = new Uint8Array(PR_REGISTRATION.size);
      const v = new DataView(arg.buffer);
      v.setBigUint64(PR_REGISTRATION.old_key, call.oldKey, true);
      v.setBigUint64(PR_REGISTRATION.new_key, call.newKey, true);
      v.setUint32(PR_REGISTRATION.flags, call.ignoreKey ? PR_FL_IGNORE_KEY : 0, true);
      return { request: PrIoctl.REGISTER, arg };
    }
    case "reserve":
    case "release": {
      const arg = new Uint8Array(PR_RESERVATION.size);
      const v = new DataView(arg.buffer);
      v.setBigUint64(PR_RESERVATION.key, call.key, true);
      v.setUint32(PR_RESERVATION.type, ioctlType(call.scsiType), true);
      return { request: call.op === "reserve" ? PrIoctl.RESERVE : PrIoctl.RELEASE, arg };
    }
    case "preempt":
    case "preempt-abort": {
      const arg = new Uint8Array(PR_PREEMPT.size);
      const v = new DataView(arg.buffer);
      v.setBigUint64(PR_PREEMPT.old_key, call.oldKey, true);
      v.setBigUint64(PR_PREEMPT.new_key, call.newKey, true);
      v.setUint32(PR_PREEMPT.type, ioctlType(call.scsiType), true);
      return { request: call.op === "preempt" ? PrIoctl.PREEMPT : PrIoctl.PREEMPT_ABORT, arg };
    }
    case "clear": {
      const arg = new Uint8Array(PR_CLEAR.size);
      new DataView(arg.buffer).setBigUint64(PR_CLEAR.key, call.key, true);
      return { request: PrIoctl.CLEAR, arg };
    }
  }
}

/** The outcome of a PR ioctl: the errno, or the (non-negative) return value. */
export type PrIoctlResult = ErrnoResult | { kind: "done"; value: number };

/**
 * Issue one PR ioctl on `fd` with the encoded struct `arg`. Throws RangeError
 * for a request that is not a PR ioctl or an argument of the wrong size;
 * never throws for an ioctl failure.
 */
export function prIoctl(fd: number, request: number, arg: Uint8Array): PrIoctlResult {
  const size = prIoctlArgSize(request);
  if (size === null) {
    throw new RangeError(`ioctl request 0x${request.toString(16)} is not a PR ioctl`);
  }
  if (arg.length !== size) {
    throw new RangeError(`PR ioctl argument of ${arg.length} bytes, wanted ${size}`);
  }
  const buf = arg.slice();
  const rc = libc.ioctl(fd, BigInt(request >>> 0), buf);
  if (rc < 0) return { kind: "errno", errno: lastErrno() };
  return { kind: "done", value: rc };
}
