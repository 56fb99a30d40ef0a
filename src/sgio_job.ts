/**
 * What an SG_IO Worker does with one posted job (src/executor.ts has the slot
 * layout): read the job from the slot, run the ioctl, write the outcome back.
 * Synchronous; the Worker entry (src/sgio_worker.ts) calls it for each job.
 * The ioctls come in as `deps`, so tests can run a job without a device.
 *
 * @module
 */

import { Errno, SysError } from "../ffi/errno.ts";
import { closeFd, fstatFd, O_NONBLOCK, O_RDONLY, openPath } from "../ffi/files.ts";
import { prIoctl } from "../ffi/pr_ioctl.ts";
import { DATA_IN_BUFFER_LEN, residAgainst, sgIo } from "../ffi/sgio.ts";
import { Slot, SlotKind, SlotResult } from "./executor.ts";

/** The ioctls a job runs (the real ones by default). */
export interface JobDeps {
  sgIo: typeof sgIo;
  prIoctl: typeof prIoctl;
}

const REAL: JobDeps = { sgIo, prIoctl };

/** Kind 1: open the device node named in the slot, check its number; fd or -errno. */
function openPathTarget(words: Int32Array, bytes: Uint8Array): number {
  const raw = bytes.subarray(Slot.PATH_AT, Slot.PATH_AT + Slot.PATH_LEN);
  const end = raw.indexOf(0);
  const name = new TextDecoder().decode(raw.subarray(0, end < 0 ? raw.length : end));
  let fd: number;
  try {
    fd = openPath(name, O_RDONLY | O_NONBLOCK);
  } catch (e) {
    return e instanceof SysError ? -e.errno : -Errno.ENODEV;
  }
  try {
    const st = fstatFd(fd);
    if (st.kind !== "block" || ((st.rdevMajor << 20) | st.rdevMinor) !== words[Slot.AUX]) {
      closeFd(fd);
      return -Errno.ENODEV;
    }
  } catch {
    closeFd(fd);
    return -Errno.ENODEV;
  }
  return fd;
}

/**
 * SG_IO on `fd` with the slot's CDB and data; the outcome goes into the slot.
 * A data-in buffer is {@linkcode DATA_IN_BUFFER_LEN} long and starts zeroed
 * for every job (issue 14.9): the slot's data area still holds the previous
 * job's bytes (another client's), and a target that under-reports its
 * residual count would otherwise hand them on. The residual count written
 * back is relative to the slot's transfer length (the allocation length).
 */
function runSgIo(fd: number, words: Int32Array, bytes: Uint8Array, deps: JobDeps): void {
  const dir = words[Slot.DIRECTION];
  const length = words[Slot.LENGTH];
  const data = dir === 1
    ? new Uint8Array(DATA_IN_BUFFER_LEN)
    : dir === 2
    ? bytes.slice(Slot.DATA_AT, Slot.DATA_AT + length)
    : new Uint8Array(0);
  const r = deps.sgIo(fd, {
    cdb: bytes.slice(Slot.CDB_AT, Slot.CDB_AT + words[Slot.CDB_LEN]),
    direction: dir === 1 ? "in" : dir === 2 ? "out" : "none",
    data,
    timeoutMs: words[Slot.TIMEOUT],
  });
  if (r.kind === "errno") {
    words[Slot.RESULT] = SlotResult.ERRNO;
    words[Slot.ERRNO] = r.errno;
  } else {
    words[Slot.RESULT] = SlotResult.DONE;
    words[Slot.STATUS] = r.status;
    words[Slot.HOST] = r.hostStatus;
    words[Slot.DRIVER] = r.driverStatus;
    words[Slot.RESID] = dir === 1 ? residAgainst(length, data.length, r.resid) : r.resid;
    words[Slot.DURATION] = r.durationMs;
    bytes.set(r.sense, Slot.SENSE_AT);
    if (dir === 1) bytes.set(data.subarray(0, length), Slot.DATA_AT);
  }
}

/** Run the posted job of whatever kind; its outcome goes into the slot. */
export function runJob(words: Int32Array, bytes: Uint8Array, deps: JobDeps = REAL): void {
  switch (words[Slot.KIND]) {
    case SlotKind.PR_IOCTL: {
      const arg = bytes.slice(Slot.DATA_AT, Slot.DATA_AT + words[Slot.LENGTH]);
      const r = deps.prIoctl(words[Slot.FD], words[Slot.AUX] >>> 0, arg);
      if (r.kind === "errno") {
        words[Slot.RESULT] = SlotResult.ERRNO;
        words[Slot.ERRNO] = r.errno;
      } else {
        words[Slot.RESULT] = SlotResult.DONE;
        words[Slot.AUX] = r.value;
      }
      return;
    }
    case SlotKind.PATH_SGIO: {
      const fd = openPathTarget(words, bytes);
      if (fd < 0) {
        words[Slot.RESULT] = SlotResult.ERRNO;
        words[Slot.ERRNO] = -fd;
        return;
      }
      try {
        runSgIo(fd, words, bytes, deps);
      } finally {
        closeFd(fd);
      }
      return;
    }
    default:
      runSgIo(words[Slot.FD], words, bytes, deps);
  }
}
