/**
 * Worker entry: waits on its shared slot, runs the SG_IO ioctl synchronously,
 * writes the result back and pokes the completion pipe (see src/executor.ts
 * for the slot layout). A slow device blocks only this thread.
 *
 * @module
 */

import { writeSome } from "../ffi/libc.ts";
import { sgIo } from "../ffi/sgio.ts";
import { Slot, SlotResult, SlotState } from "./executor.ts";

/// <reference lib="deno.worker" />

const ONE = new Uint8Array([1]);

function serve(sab: SharedArrayBuffer): void {
  const words = new Int32Array(sab, 0, 16);
  const bytes = new Uint8Array(sab);
  for (;;) {
    Atomics.wait(words, Slot.STATE, SlotState.IDLE);
    const state = Atomics.load(words, Slot.STATE);
    if (state === SlotState.STOP) return;
    if (state !== SlotState.POSTED) continue;
    const dir = words[Slot.DIRECTION];
    const length = words[Slot.LENGTH];
    const data = dir === 0 ? new Uint8Array(0) : bytes.slice(Slot.DATA_AT, Slot.DATA_AT + length);
    try {
      const r = sgIo(words[Slot.FD], {
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
