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
import { PR_CLEAR, PR_PREEMPT, PR_REGISTRATION, PR_RESERVATION, PR_STRUCTS } from "./layouts.ts";
import { lastErrno, libc } from "./libc.ts";

function iow(nr: number, size: number): number {
  return ((1 << 30) | (size << 16) | (0x70 << 8) | nr) >>> 0;
}

/** The PR ioctl request numbers. */
export const PrIoctl = {
  REGISTER: iow(200, PR_STRUCTS.pr_registration),
  RESERVE: iow(201, PR_STRUCTS.pr_reservation),
  RELEASE: iow(202, PR_STRUCTS.pr_reservation),
  PREEMPT: iow(203, PR_STRUCTS.pr_preempt),
  PREEMPT_ABORT: iow(204, PR_STRUCTS.pr_preempt),
  CLEAR: iow(205, PR_STRUCTS.pr_clear),
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
  [PrIoctl.REGISTER, PR_STRUCTS.pr_registration],
  [PrIoctl.RESERVE, PR_STRUCTS.pr_reservation],
  [PrIoctl.RELEASE, PR_STRUCTS.pr_reservation],
  [PrIoctl.PREEMPT, PR_STRUCTS.pr_preempt],
  [PrIoctl.PREEMPT_ABORT, PR_STRUCTS.pr_preempt],
  [PrIoctl.CLEAR, PR_STRUCTS.pr_clear],
]);

/** The size of the struct a PR ioctl request takes, or null if `request` is not one. */
export function prIoctlArgSize(request: number): number | null {
  return SIZES.get(request >>> 0) ?? null;
}

/** IOC_PR_REGISTER's `struct pr_registration`. */
export function prRegistration(oldKey: bigint, newKey: bigint, flags: number): Uint8Array {
  const arg = new Uint8Array(PR_REGISTRATION.size);
  const v = new DataView(arg.buffer);
  v.setBigUint64(PR_REGISTRATION.old_key, oldKey, true);
  v.setBigUint64(PR_REGISTRATION.new_key, newKey, true);
  v.setUint32(PR_REGISTRATION.flags, flags, true);
  return arg;
}

/** IOC_PR_RESERVE's and IOC_PR_RELEASE's `struct pr_reservation` (no flags). */
export function prReservation(key: bigint, type: number): Uint8Array {
  const arg = new Uint8Array(PR_RESERVATION.size);
  const v = new DataView(arg.buffer);
  v.setBigUint64(PR_RESERVATION.key, key, true);
  v.setUint32(PR_RESERVATION.type, type, true);
  return arg;
}

/** IOC_PR_PREEMPT's and IOC_PR_PREEMPT_ABORT's `struct pr_preempt` (no flags). */
export function prPreempt(oldKey: bigint, newKey: bigint, type: number): Uint8Array {
  const arg = new Uint8Array(PR_PREEMPT.size);
  const v = new DataView(arg.buffer);
  v.setBigUint64(PR_PREEMPT.old_key, oldKey, true);
  v.setBigUint64(PR_PREEMPT.new_key, newKey, true);
  v.setUint32(PR_PREEMPT.type, type, true);
  return arg;
}

/** IOC_PR_CLEAR's `struct pr_clear` (no flags). */
export function prClear(key: bigint): Uint8Array {
  const arg = new Uint8Array(PR_CLEAR.size);
  new DataView(arg.buffer).setBigUint64(PR_CLEAR.key, key, true);
  return arg;
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
