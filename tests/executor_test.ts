/** The SG_IO Worker pool, on the host (no SCSI): errno comes back, never a throw. */

import assert from "node:assert/strict";
import { Errno } from "../ffi/errno.ts";
import { closeFd, O_RDWR, openPath } from "../ffi/libc.ts";
import { SgIoExecutor } from "../src/executor.ts";
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
