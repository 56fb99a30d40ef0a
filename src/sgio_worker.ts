/**
 * Worker entry: waits on its shared slot, runs the posted job
 * (src/sgio_job.ts: SG_IO on the client's fd, SG_IO on a device it opens by
 * path, or a block-layer PR ioctl) synchronously, writes the result back and
 * pokes the completion pipe (see src/executor.ts for the slot layout). A slow
 * device blocks only this thread.
 *
 * @module
 */

import { writeSome } from "../ffi/files.ts";
import { Slot, SlotResult, SlotState } from "./executor.ts";
import { runJob } from "./sgio_job.ts";

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
