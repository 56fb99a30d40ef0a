/**
 * Worker entry: waits on its shared slot, runs the SG_IO ioctl (or, by the
 * slot's job kind, SG_IO on a device it opens by path, or a block-layer PR
 * ioctl) synchronously,
 * writes the result back and pokes the completion pipe (see src/executor.ts
 * for the slot layout). A slow device blocks only this thread.
 *
 * @module
 */

import { SysError } from "../ffi/errno.ts";
import { closeFd, fstatFd, O_NONBLOCK, O_RDONLY, openPath, writeSome } from "../ffi/libc.ts";
import { prIoctl } from "../ffi/pr_ioctl.ts";
import { sgIo } from "../ffi/sgio.ts";
import { Slot, SlotKind, SlotResult, SlotState } from "./executor.ts";

/// <reference lib="deno.worker" />

const ONE = new Uint8Array([1]);
const ENODEV = 19;

/** Kind 1: open the device node named in the slot, check its number; fd or -errno. */
function openPathTarget(words: Int32Array, bytes: Uint8Array): number {
  const raw = bytes.subarray(Slot.PATH_AT, Slot.PATH_AT + Slot.PATH_LEN);
  const end = raw.indexOf(0);
  const name = new TextDecoder().decode(raw.subarray(0, end < 0 ? raw.length : end));
  let fd: number;
  try {
    fd = openPath(name, O_RDONLY | O_NONBLOCK);
  } catch (e) {
    return e instanceof SysError ? -e.errno : -ENODEV;
  }
  try {
    const st = fstatFd(fd);
    if (st.kind !== "block" || ((st.rdevMajor << 20) | st.rdevMinor) !== words[Slot.AUX]) {
      closeFd(fd);
      return -ENODEV;
    }
  } catch {
    closeFd(fd);
    return -ENODEV;
  }
  return fd;
}

/** SG_IO on `fd` with the slot's CDB and data; the outcome goes into the slot. */
function runSgIo(fd: number, words: Int32Array, bytes: Uint8Array): void {
  const dir = words[Slot.DIRECTION];
  const length = words[Slot.LENGTH];
  const data = dir === 0 ? new Uint8Array(0) : bytes.slice(Slot.DATA_AT, Slot.DATA_AT + length);
  const r = sgIo(fd, {
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
    words[Slot.RESID] = r.resid;
    words[Slot.DURATION] = r.durationMs;
    bytes.set(r.sense, Slot.SENSE_AT);
    if (dir === 1) bytes.set(data, Slot.DATA_AT);
  }
}

/** Run the posted job of whatever kind; its outcome goes into the slot. */
function runJob(words: Int32Array, bytes: Uint8Array): void {
  switch (words[Slot.KIND]) {
    case SlotKind.PR_IOCTL: {
      const arg = bytes.slice(Slot.DATA_AT, Slot.DATA_AT + words[Slot.LENGTH]);
      const r = prIoctl(words[Slot.FD], words[Slot.AUX] >>> 0, arg);
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
        runSgIo(fd, words, bytes);
      } finally {
        closeFd(fd);
      }
      return;
    }
    default:
      runSgIo(words[Slot.FD], words, bytes);
  }
}

function serve(sab: SharedArrayBuffer): void {
  const words = new Int32Array(sab, 0, 16);
  const bytes = new Uint8Array(sab);
  for (;;) {
    Atomics.wait(words, Slot.STATE, SlotState.IDLE);
    const state = Atomics.load(words, Slot.STATE);
    if (state === SlotState.STOP) return;
    if (state !== SlotState.POSTED) continue;
    try {
      runJob(words, bytes);
    } catch {
      words[Slot.RESULT] = SlotResult.EXCEPTION;
    }
    Atomics.store(words, Slot.STATE, SlotState.DONE);
    try {
      writeSome(words[Slot.PIPE], ONE);
    } catch {
      // pipe full: the loop is already due to drain
    }
  }
}

self.onmessage = (event: MessageEvent<SharedArrayBuffer>) => {
  self.onmessage = null;
  serve(event.data);
};
