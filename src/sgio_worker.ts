/**
 * Worker entry: runs SG_IO ioctls synchronously, one at a time, so a slow
 * device blocks only this thread. The main thread keeps the fd open until the
 * answer arrives.
 *
 * @module
 */

import { sgIo } from "../ffi/sgio.ts";
import type { SgIoJob, SgIoJobResult } from "./executor.ts";

/// <reference lib="deno.worker" />

self.onmessage = (event: MessageEvent<SgIoJob>) => {
  const job = event.data;
  const data = job.direction === "out" ? job.payload : new Uint8Array(job.transferLength);
  let result: SgIoJobResult;
  try {
    const r = sgIo(job.fd, {
      cdb: job.cdb,
      direction: job.direction,
      data,
      timeoutMs: job.timeoutMs,
    });
    result = r.kind === "errno" ? { id: job.id, outcome: r } : {
      id: job.id,
      outcome: {
        kind: "done",
        status: r.status,
        hostStatus: r.hostStatus,
        driverStatus: r.driverStatus,
        sense: r.sense,
        resid: r.resid,
      },
      data: job.direction === "in" ? data : undefined,
      durationMs: r.durationMs,
    };
  } catch (e) {
    result = { id: job.id, error: String(e) };
  }
  self.postMessage(result);
};
