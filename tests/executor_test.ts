/** The SG_IO Worker pool, on the host (no SCSI): errno comes back, never a throw. */

import assert from "node:assert/strict";
import { Errno } from "../ffi/errno.ts";
import { closeFd, O_RDWR, openPath } from "../ffi/files.ts";
import { SgIoExecutor, Slot, SlotKind, SlotResult } from "../src/executor.ts";
import { runJob } from "../src/sgio_job.ts";
import { DATA_IN_BUFFER_LEN, type SgIoResult } from "../ffi/sgio.ts";
import { prInCdb } from "../src/cdb.ts";
import { formatSense, mapSgIoOutcome, parseSense } from "../src/sense.ts";

function job(fd: number, direction: "in" | "out" | "none" = "in") {
  return {
    fd,
    cdb: prInCdb(0, 8192).slice(0, 10),
    direction,
    transferLength: direction === "in" ? 8192 : 0,
    payload: direction === "out" ? new Uint8Array(24) : new Uint8Array(0),
    timeoutMs: 5000,
  };
}

Deno.test("executor: SG_IO on /dev/null returns ENOTTY (mapped 0B/00/06)", async () => {
  const ex = new SgIoExecutor({ maxWorkers: 1 });
  const fd = openPath("/dev/null", O_RDWR);
  try {
    for (const dir of ["in", "out", "none"] as const) {
      const r = await ex.run(job(fd, dir));
      assert.deepEqual(r.outcome, { kind: "errno", errno: Errno.ENOTTY }, dir);
      const m = mapSgIoOutcome(r.outcome, 8192);
      assert.equal(m.status, 2);
      assert.equal(formatSense(parseSense(m.sense)!), "0B/00/06");
    }
    assert.equal(ex.workers, 1);
    assert.equal(ex.pending, 0);
  } finally {
    closeFd(fd);
    ex.close();
  }
});

Deno.test("executor: concurrent jobs queue on a bounded pool", async () => {
  const ex = new SgIoExecutor({ maxWorkers: 2 });
  const fd = openPath("/dev/null", O_RDWR);
  try {
    const runs = Array.from({ length: 20 }, () => ex.run(job(fd)));
    assert.ok(ex.workers <= 2);
    assert.ok(ex.pending > 0);
    const results = await Promise.all(runs);
    for (const r of results) assert.deepEqual(r.outcome, { kind: "errno", errno: Errno.ENOTTY });
    assert.equal(ex.pending, 0);
    assert.ok(ex.workers <= 2);
  } finally {
    closeFd(fd);
    ex.close();
  }
});

Deno.test("executor: a bad fd is an errno (EBADF), not a crash", async () => {
  const ex = new SgIoExecutor({ maxWorkers: 1 });
  try {
    const r = await ex.run(job(1_000_000));
    assert.deepEqual(r.outcome, { kind: "errno", errno: Errno.EBADF });
  } finally {
    ex.close();
  }
});

Deno.test("executor: options are checked; a closed executor refuses work", async () => {
  assert.throws(() => new SgIoExecutor({ maxWorkers: 0 }), /maxWorkers 0/);
  assert.throws(() => new SgIoExecutor({ maxWorkers: 1.5 }), RangeError);
  const ex = new SgIoExecutor({ maxWorkers: 1 });
  ex.warmUp();
  assert.equal(ex.workers, 1);
  ex.close();
  await assert.rejects(() => ex.run(job(0)), /closed/);
});

Deno.test("executor: a Worker that fails is an error for its job, never a hang or an exit (13.4)", async () => {
  const ex = new SgIoExecutor({
    maxWorkers: 1,
    workerUrl: new URL("./fixtures/broken_worker.ts", import.meta.url),
  });
  const fd = openPath("/dev/null", O_RDWR);
  try {
    // every job fails with an Error; none is posted to the dead Worker and hangs
    for (let i = 0; i < 3; i++) {
      await assert.rejects(ex.run(job(fd)), /SG_IO Worker failed/);
      assert.equal(ex.workers, 0, "the failed Worker left the pool");
    }
  } finally {
    closeFd(fd);
    ex.close();
  }
});

/** What a target that transferred `sent` of `dxferLen` bytes reports. */
function goodResult(dxferLen: number, sent: number): SgIoResult {
  return {
    kind: "done",
    status: 0,
    hostStatus: 0,
    driverStatus: 0,
    sense: new Uint8Array(96),
    senseLen: 0,
    resid: dxferLen - sent,
    durationMs: 0,
  };
}

Deno.test("executor job: a data-in buffer starts zeroed, never with the last job's bytes (14.9)", () => {
  const sab = new SharedArrayBuffer(Slot.BYTES);
  const words = new Int32Array(sab, 0, 16);
  const bytes = new Uint8Array(sab);
  // the previous job (another client's) left its data in the slot
  bytes.fill(0xa5, Slot.DATA_AT, Slot.DATA_AT + 8192);
  words[Slot.KIND] = SlotKind.SGIO;
  words[Slot.FD] = 99;
  words[Slot.DIRECTION] = 1;
  words[Slot.CDB_LEN] = 10;
  words[Slot.LENGTH] = 64;
  words[Slot.TIMEOUT] = 1000;
  let seen: Uint8Array | null = null;
  runJob(words, bytes, {
    // a target that transfers nothing and reports no residual
    sgIo: (_fd, req) => {
      seen = req.data.slice();
      return goodResult(req.data.length, req.data.length); // claims a full transfer
    },
    prIoctl: () => ({ kind: "errno", errno: Errno.ENOTTY }),
  });
  assert.equal(words[Slot.RESULT], SlotResult.DONE);
  assert.ok(seen !== null && (seen as Uint8Array).every((b) => b === 0), "a zeroed buffer");
  assert.deepEqual(bytes.slice(Slot.DATA_AT, Slot.DATA_AT + 64), new Uint8Array(64));
});

Deno.test("executor job: the kernel gets a data-in buffer with slack past any allocation length (13.1)", () => {
  const sab = new SharedArrayBuffer(Slot.BYTES);
  const words = new Int32Array(sab, 0, 16);
  const bytes = new Uint8Array(sab);
  words[Slot.KIND] = SlotKind.SGIO;
  words[Slot.DIRECTION] = 1;
  words[Slot.CDB_LEN] = 10;
  words[Slot.LENGTH] = 24; // READ FULL STATUS with allocation length 24
  words[Slot.TIMEOUT] = 1000;
  let dxferLen = 0;
  runJob(words, bytes, {
    // LIO's READ FULL STATUS: 24 bytes reported, 56 written (past the allocation length)
    sgIo: (_fd, req) => {
      dxferLen = req.data.length;
      req.data.fill(0x5a, 0, 56);
      return goodResult(req.data.length, 24);
    },
    prIoctl: () => ({ kind: "errno", errno: Errno.ENOTTY }),
  });
  // the buffer is never a small block that an overrun would leave: 8192 + slack
  assert.equal(dxferLen, DATA_IN_BUFFER_LEN);
  assert.ok(DATA_IN_BUFFER_LEN >= 8192 + 4096);
  // the residual is reported against the allocation length; only 24 bytes come back
  assert.equal(words[Slot.RESID], 0);
  assert.deepEqual(bytes.slice(Slot.DATA_AT, Slot.DATA_AT + 24), new Uint8Array(24).fill(0x5a));
  assert.equal(bytes[Slot.DATA_AT + 24], 0, "nothing past the allocation length reaches the slot");
});
