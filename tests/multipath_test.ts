// Host tests of multipath: src/multipath_plan.ts (PR OUT -> PR ioctl, TransportID
// lists, refusal senses, ioctl result mapping), ffi/pr_ioctl.ts's struct
// encoding and type mapping, and src/multipath.ts's handler on a fake executor.
import assert from "node:assert/strict";
import fc from "fast-check";
import { parsePrCdb, PrInAction, prInCdb, PrOutAction, prOutCdb, PrType } from "../src/cdb.ts";
import { type MpathPath, MultipathHandler } from "../src/multipath.ts";
import {
  isTransportFailure,
  parseTransportIds,
  planPrOut,
  verdictForPrIoctl,
} from "../src/multipath_plan.ts";
import type { PrIoctlJob, SgIoExecutor, SgIoJob, SgIoRun } from "../src/executor.ts";
import type { DeviceFacts } from "../src/device_check.ts";
import type { Reply } from "../src/wire.ts";
import {
  encodePrIoctl,
  PR_FL_IGNORE_KEY,
  PrIoctl,
  prIoctlArgSize,
  type PrIoctlResult,
  PrIoctlType,
  prTypeOf,
} from "../ffi/pr_ioctl.ts";
import { Errno } from "../ffi/errno.ts";
import { parseSense } from "../src/sense.ts";

function params(key: bigint, saKey: bigint, flags = 0, length = 24): Uint8Array {
  const p = new Uint8Array(length);
  const v = new DataView(p.buffer);
  if (length >= 16) {
    v.setBigUint64(0, key);
    v.setBigUint64(8, saKey);
  }
  if (length > 20) p[20] = flags;
  return p;
}

function out(sa: number, payload: Uint8Array, type = 0, scope = 0) {
  const r = planPrOut(parsePrCdb(prOutCdb(sa, payload.length, { type, scope })), payload);
  return r.ok ? { ...r, plan: { ...r.plan, ...encodePrIoctl(r.plan.call) } } : r;
}

function senseOf(plan: ReturnType<typeof planPrOut>): string {
  assert.equal(plan.ok, false, "expected a refusal");
  if (plan.ok) return "";
  const s = plan.sense;
  return `${s.key.toString(16)}/${s.asc.toString(16)}/${s.ascq.toString(16)}`;
}

function sas(n: number): Uint8Array {
  const t = new Uint8Array(24);
  t[0] = 0x06;
  new DataView(t.buffer).setBigUint64(4, 0x5001405000000000n + BigInt(n));
  return t;
}

function iscsi(name: string, pad = 4): Uint8Array {
  const bytes = new TextEncoder().encode(name);
  let additional = bytes.length + 1;
  additional = Math.max(20, Math.ceil(additional / pad) * pad);
  const t = new Uint8Array(4 + additional);
  t[0] = 0x05;
  t[2] = additional >> 8;
  t[3] = additional & 0xff;
  t.set(bytes, 4);
  return t;
}

function specIPt(tids: Uint8Array[], declared?: number, extra = 0): Uint8Array {
  const total = tids.reduce((n, t) => n + t.length, 0);
  const p = new Uint8Array(28 + total + extra);
  const v = new DataView(p.buffer);
  v.setBigUint64(8, 0x77n);
  p[20] = 0x08;
  v.setUint32(24, declared ?? total);
  let at = 28;
  for (const t of tids) {
    p.set(t, at);
    at += t.length;
  }
  return p;
}

Deno.test("multipath: REGISTER and REGISTER AND IGNORE become IOC_PR_REGISTER structs", () => {
  const r = out(PrOutAction.REGISTER, params(0x1111n, 0x2222n));
  assert.ok(r.ok);
  assert.equal(r.plan.request, PrIoctl.REGISTER);
  const v = new DataView(r.plan.arg.buffer);
  assert.equal(r.plan.arg.length, prIoctlArgSize(PrIoctl.REGISTER));
  assert.equal(v.getBigUint64(0, true), 0x1111n);
  assert.equal(v.getBigUint64(8, true), 0x2222n);
  assert.equal(v.getUint32(16, true), 0);
  const i = out(PrOutAction.REGISTER_AND_IGNORE_EXISTING_KEY, params(0n, 0xabcdef0123456789n, 1));
  assert.ok(i.ok);
  const w = new DataView(i.plan.arg.buffer);
  assert.equal(w.getBigUint64(8, true), 0xabcdef0123456789n);
  assert.equal(w.getUint32(16, true), PR_FL_IGNORE_KEY);
});

Deno.test("multipath: RESERVE/RELEASE/PREEMPT/PREEMPT AND ABORT/CLEAR structs and type map", () => {
  const cases: [number, number][] = [
    [PrType.WRITE_EXCLUSIVE, PrIoctlType.WRITE_EXCLUSIVE],
    [PrType.EXCLUSIVE_ACCESS, PrIoctlType.EXCLUSIVE_ACCESS],
    [PrType.WRITE_EXCLUSIVE_REGISTRANTS_ONLY, PrIoctlType.WRITE_EXCLUSIVE_REG_ONLY],
    [PrType.EXCLUSIVE_ACCESS_REGISTRANTS_ONLY, PrIoctlType.EXCLUSIVE_ACCESS_REG_ONLY],
    [PrType.WRITE_EXCLUSIVE_ALL_REGISTRANTS, PrIoctlType.WRITE_EXCLUSIVE_ALL_REGS],
    [PrType.EXCLUSIVE_ACCESS_ALL_REGISTRANTS, PrIoctlType.EXCLUSIVE_ACCESS_ALL_REGS],
  ];
  for (const [scsi, ioctl] of cases) {
    assert.equal(prTypeOf(scsi), ioctl);
    for (const [sa, req] of [[1, PrIoctl.RESERVE], [2, PrIoctl.RELEASE]]) {
      const r = out(sa, params(0x55n, 0n), scsi);
      assert.ok(r.ok);
      assert.equal(r.plan.request, req);
      const v = new DataView(r.plan.arg.buffer);
      assert.equal(r.plan.arg.length, 16);
      assert.equal(v.getBigUint64(0, true), 0x55n);
      assert.equal(v.getUint32(8, true), ioctl);
    }
    for (const [sa, req] of [[4, PrIoctl.PREEMPT], [5, PrIoctl.PREEMPT_ABORT]]) {
      const r = out(sa, params(0x55n, 0x66n), scsi);
      assert.ok(r.ok);
      assert.equal(r.plan.request, req);
      const v = new DataView(r.plan.arg.buffer);
      assert.equal(v.getBigUint64(0, true), 0x55n);
      assert.equal(v.getBigUint64(8, true), 0x66n);
      assert.equal(v.getUint32(16, true), ioctl);
    }
  }
  for (const bad of [0, 2, 4, 9, 15]) {
    assert.equal(prTypeOf(bad), null);
    assert.equal(senseOf(out(PrOutAction.RESERVE, params(1n, 0n), bad)), "5/24/0");
  }
  assert.equal(senseOf(out(PrOutAction.RELEASE, params(1n, 0n), 1, 1)), "5/24/0", "scope 1");
  const c = out(PrOutAction.CLEAR, params(0x99n, 0n), 15, 3); // type/scope ignored
  assert.ok(c.ok);
  assert.equal(c.plan.request, PrIoctl.CLEAR);
  assert.equal(new DataView(c.plan.arg.buffer).getBigUint64(0, true), 0x99n);
});

Deno.test("multipath: service actions the ioctls cannot express are refused 05/24/00", () => {
  for (let sa = 7; sa < 32; sa++) assert.equal(senseOf(out(sa, params(1n, 2n))), "5/24/0");
});

Deno.test("multipath: parameter list length and flag refusals", () => {
  for (const n of [0, 8, 23]) {
    assert.equal(senseOf(out(PrOutAction.REGISTER, params(0n, 1n, 0, n))), "5/1a/0", `N=${n}`);
  }
  for (const n of [25, 28, 100, 8192]) {
    assert.equal(senseOf(out(PrOutAction.RESERVE, params(1n, 0n, 0, n), 1)), "5/1a/0", `N=${n}`);
  }
  assert.equal(senseOf(out(PrOutAction.REGISTER, params(0n, 1n, 0x04))), "5/26/0", "ALL_TG_PT");
  assert.equal(senseOf(out(6, params(0n, 1n, 0x04))), "5/26/0", "ALL_TG_PT, IGNORE");
  assert.ok(out(PrOutAction.RESERVE, params(1n, 0n, 0x04), 1).ok, "ALL_TG_PT ignored on RESERVE");
  assert.ok(out(PrOutAction.REGISTER, params(0n, 1n, 0x01)).ok, "APTPL accepted");
  for (const sa of [1, 2, 3, 4, 5, 6]) {
    assert.equal(senseOf(out(sa, specIPt([sas(1)]), 1)), "5/26/0", `SPEC_I_PT on SA ${sa}`);
  }
});

Deno.test("multipath: SPEC_I_PT lists of any size that fits 8192 bytes parse, then are refused", () => {
  // 340 SAS TransportIDs: 28 + 8160 = 8188 bytes (upstream aborts above 32)
  for (const count of [1, 32, 33, 100, 340]) {
    const tids = Array.from({ length: count }, (_, i) => sas(i));
    const payload = specIPt(tids);
    assert.ok(payload.length <= 8192);
    const parsed = parseTransportIds(payload.subarray(28));
    assert.ok(parsed.ok);
    assert.equal(parsed.ids.length, count);
    assert.deepEqual(parsed.ids[count - 1].bytes, sas(count - 1));
    assert.equal(senseOf(out(PrOutAction.REGISTER, payload)), "5/26/0");
  }
  const tooBig = specIPt(Array.from({ length: 341 }, (_, i) => sas(i)));
  assert.equal(tooBig.length, 8212);
  assert.equal(senseOf(out(PrOutAction.REGISTER, tooBig)), "5/1a/0");
});

Deno.test("multipath: TransportID formats and malformed lists", () => {
  const mixed = [sas(1), iscsi("iqn.2005-03.org.example:a"), iscsi("iqn.x"), sas(2)];
  const ok = parseTransportIds(specIPt(mixed).subarray(28));
  assert.ok(ok.ok);
  assert.deepEqual(ok.ids.map((t) => t.protocol), [6, 5, 5, 6]);
  assert.equal(ok.ids[2].bytes.length, 24); // minimum iSCSI size
  for (const proto of [0x0, 0x1, 0x3, 0x4, 0xa]) {
    const t = sas(0);
    t[0] = proto;
    assert.ok(parseTransportIds(t).ok, `protocol ${proto}`);
  }
  const bad = (t: Uint8Array, sense: string, why: string) => {
    const r = parseTransportIds(t);
    assert.equal(r.ok, false, why);
    if (!r.ok) {
      const s = r.sense;
      assert.equal(
        `${s.key.toString(16)}/${s.asc.toString(16)}/${s.ascq.toString(16)}`,
        sense,
        why,
      );
    }
  };
  bad(sas(1).subarray(0, 20), "5/1a/0", "cut SAS");
  bad(new Uint8Array([6, 0]), "5/1a/0", "2 bytes");
  const unknown = sas(1);
  unknown[0] = 0x0f;
  bad(unknown, "5/26/0", "protocol 0xf");
  const format1 = sas(1);
  format1[0] = 0x46;
  bad(format1, "5/26/0", "SAS with format 1");
  const noNul = iscsi("iqn.2005-03.org.example:abcdefgh");
  noNul.fill(0x41, 4);
  bad(noNul, "5/26/0", "iSCSI name without NUL");
  const odd = iscsi("iqn.a");
  odd[3] = 21;
  bad(odd, "5/26/0", "additional length not a multiple of 4");
  const small = iscsi("iqn.a");
  small[3] = 16;
  bad(small, "5/26/0", "additional length < 20");
  bad(iscsi("iqn.2005-03.org.example:a").subarray(0, 30), "5/1a/0", "cut iSCSI");
  // the declared length longer than the list: PARAMETER LIST LENGTH ERROR
  assert.equal(senseOf(out(0, specIPt([sas(1)], 48))), "5/1a/0");
  // 24 < N < 28 with SPEC_I_PT
  assert.equal(senseOf(out(0, params(0n, 1n, 0x08, 26))), "5/1a/0");
});

Deno.test("multipath: arbitrary parameter lists never throw and give a plan or a refusal", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 0, max: 31 }),
      fc.integer({ min: 0, max: 255 }),
      fc.uint8Array({ minLength: 0, maxLength: 600 }),
      (sa, typeScope, payload) => {
        const cdb = prOutCdb(sa, payload.length, { type: typeScope & 15, scope: typeScope >> 4 });
        const r = planPrOut(parsePrCdb(cdb), payload);
        if (r.ok) {
          assert.ok(sa <= 6 && payload.length === 24);
          const { request, arg } = encodePrIoctl(r.plan.call);
          assert.equal(arg.length, prIoctlArgSize(request));
        } else {
          assert.equal(r.sense.key, 5);
          assert.ok([0x1a, 0x24, 0x26].includes(r.sense.asc));
        }
      },
    ),
    { numRuns: 300 },
  );
  fc.assert(
    fc.property(fc.uint8Array({ minLength: 0, maxLength: 2000 }), (list) => {
      const r = parseTransportIds(list);
      if (r.ok) assert.equal(r.ids.reduce((n, t) => n + t.bytes.length, 0), list.length);
    }),
    { numRuns: 300 },
  );
});

Deno.test("multipath: PR ioctl results map to status and sense", () => {
  const key = (v: ReturnType<typeof verdictForPrIoctl>) => {
    const s = parseSense(v.sense);
    return `${v.status.toString(16)} ${s ? `${s.key.toString(16)}/${s.asc.toString(16)}` : "-"}`;
  };
  assert.equal(verdictForPrIoctl({ kind: "done", value: 0 }).status, 0);
  assert.equal(verdictForPrIoctl({ kind: "done", value: 0x18 }).status, 0x18);
  assert.equal(verdictForPrIoctl({ kind: "done", value: 0x118 }).status, 0x18); // ml RESV_CONFLICT
  assert.equal(key(verdictForPrIoctl({ kind: "done", value: 0x402 })), "2 5/26");
  assert.equal(key(verdictForPrIoctl({ kind: "done", value: 0x302 })), "2 3/11");
  assert.equal(key(verdictForPrIoctl({ kind: "done", value: 0x10000 })), "2 b/5"); // DID_NO_CONNECT
  assert.equal(key(verdictForPrIoctl({ kind: "done", value: 0xe0000 })), "2 b/29");
  const check = verdictForPrIoctl({ kind: "done", value: 0x02 });
  assert.equal(key(check), "2 b/0");
  assert.equal(check.retry, true);
  assert.equal(verdictForPrIoctl({ kind: "done", value: 0x08 }).status, 0x08);
  assert.equal(verdictForPrIoctl({ kind: "errno", errno: Errno.EBADE }).status, 0x18);
  assert.equal(key(verdictForPrIoctl({ kind: "errno", errno: Errno.ENOTTY })), "2 5/20");
  assert.equal(key(verdictForPrIoctl({ kind: "errno", errno: Errno.EOPNOTSUPP })), "2 5/20");
  assert.equal(key(verdictForPrIoctl({ kind: "errno", errno: Errno.EINVAL })), "2 5/24");
  assert.equal(key(verdictForPrIoctl({ kind: "errno", errno: Errno.EPERM })), "2 b/0");
});

Deno.test("multipath: PR ioctl request numbers are _IOW('p', nr, struct)", () => {
  assert.equal(PrIoctl.REGISTER, 0x401870c8);
  assert.equal(PrIoctl.RESERVE, 0x401070c9);
  assert.equal(PrIoctl.RELEASE, 0x401070ca);
  assert.equal(PrIoctl.PREEMPT, 0x401870cb);
  assert.equal(PrIoctl.PREEMPT_ABORT, 0x401870cc);
  assert.equal(PrIoctl.CLEAR, 0x401070cd);
  assert.equal(prIoctlArgSize(0x2285), null);
});

// ---------------------------------------------------------------- finding 14.2: no path fallback for the client's fd

function errnoRun(errno: number): SgIoRun {
  return { outcome: { kind: "errno", errno }, data: new Uint8Array(0) };
}

function doneRun(hostStatus: number, data = new Uint8Array(0)): SgIoRun {
  return {
    outcome: {
      kind: "done",
      status: 0,
      hostStatus,
      driverStatus: 0,
      sense: new Uint8Array(96),
      resid: 0,
    },
    data,
  };
}

/** What every path answers: GOOD, with the LUN's registered keys. */
const PATH_KEYS = new Uint8Array([0, 0, 0, 1, 0, 0, 0, 8, 0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 1]);
const PATHS: MpathPath[] = [
  { name: "sda", major: 8, minor: 0, state: "running" },
  { name: "sdb", major: 8, minor: 16, state: "running" },
];
const MPATH_FACTS: DeviceFacts = {
  kind: "block",
  major: 253,
  minor: 0,
  readOnly: false,
  partition: false,
  scsi: false,
  dmUuid: "mpath-3600140512345",
};

/**
 * A stand-in for the SG_IO executor: SG_IO on the client's fd answers
 * `onDm`, SG_IO on a path the daemon opens itself answers GOOD with
 * PATH_KEYS, a PR ioctl answers `onIoctl`. Jobs complete in order from
 * {@linkcode run}'s loop, as from the executor's drain.
 */
function fakeExecutor(onDm: SgIoRun | Error, onIoctl: PrIoctlResult = { kind: "done", value: 0 }) {
  const sgio: SgIoJob[] = [];
  const ioctls: PrIoctlJob[] = [];
  const pending: (() => void)[] = [];
  const executor = {
    maxWorkers: 4,
    submit(job: SgIoJob, done: (r: SgIoRun | Error) => void) {
      sgio.push(job);
      pending.push(() =>
        done(job.path ? doneRun(0, PATH_KEYS.slice(0, job.transferLength)) : onDm)
      );
    },
    submitIoctl(job: PrIoctlJob, done: (r: PrIoctlResult | Error) => void) {
      ioctls.push(job);
      pending.push(() => done(onIoctl));
    },
  } as unknown as SgIoExecutor;
  const run = (command: Uint8Array, payload = new Uint8Array(0)): Reply => {
    const handler = new MultipathHandler({ executor, sgioTimeoutMs: 1000, paths: () => PATHS });
    let reply: Reply | null = null;
    handler.handle({ fd: 42, command: parsePrCdb(command), payload, facts: MPATH_FACTS }, (r) => {
      assert.equal(reply, null, "answered twice");
      reply = r;
    });
    while (pending.length > 0) pending.shift()!();
    assert.ok(reply !== null, "not answered");
    return reply;
  };
  return { sgio, ioctls, run };
}

function senseText(reply: Reply): string {
  const s = reply.sense ? parseSense(reply.sense) : null;
  return s ? `${s.key.toString(16)}/${s.asc.toString(16)}/${s.ascq.toString(16)}` : "-";
}

Deno.test("multipath (14.2): which SG_IO failures on the dm fd count as a failed path", () => {
  for (const errno of [Errno.EIO, Errno.ENXIO, Errno.ENODEV, Errno.ENOTCONN, Errno.ETIMEDOUT]) {
    assert.equal(isTransportFailure(errnoRun(errno)), true, `errno ${errno}`);
  }
  assert.equal(isTransportFailure(errnoRun(Errno.ENOLINK)), true);
  assert.equal(isTransportFailure(errnoRun(Errno.EREMOTEIO)), true);
  assert.equal(isTransportFailure(doneRun(0x01)), true, "DID_NO_CONNECT");
  // what the client's fd causes: never a reason to open the paths ourselves
  for (
    const errno of [
      Errno.EBADF,
      Errno.EPERM,
      Errno.EACCES,
      Errno.EINVAL,
      Errno.ENOTTY,
      Errno.EFAULT,
      Errno.EOPNOTSUPP,
    ]
  ) {
    assert.equal(isTransportFailure(errnoRun(errno)), false, `errno ${errno}`);
  }
  assert.equal(isTransportFailure(doneRun(0)), false);
  assert.equal(isTransportFailure(new Error("the SG_IO worker failed")), false);
});

Deno.test("multipath (14.2): PR IN failing with EBADF on the client's fd (O_PATH) reads no path", () => {
  const ex = fakeExecutor(errnoRun(Errno.EBADF));
  const reply = ex.run(prInCdb(PrInAction.READ_KEYS, 16));
  assert.deepEqual(ex.sgio.map((j) => j.path?.name ?? `fd ${j.fd}`), ["fd 42"]);
  assert.equal(reply.status, 0x02, "the EBADF is answered as an error");
  assert.equal(senseText(reply), "b/0/6");
  assert.equal(reply.data?.length ?? 0, 0, "no keys from a path the client could not open");
  // EPERM and EACCES alike
  for (const errno of [Errno.EPERM, Errno.EACCES, Errno.EINVAL]) {
    const other = fakeExecutor(errnoRun(errno));
    other.run(prInCdb(PrInAction.READ_FULL_STATUS, 16));
    assert.equal(other.sgio.filter((j) => j.path).length, 0, `errno ${errno}`);
  }
});

Deno.test("multipath (14.2): PR IN that fails at transport level still goes to the paths", () => {
  for (const failed of [errnoRun(Errno.EIO), errnoRun(Errno.ENODEV), doneRun(0x01)]) {
    const ex = fakeExecutor(failed);
    const reply = ex.run(prInCdb(PrInAction.READ_KEYS, 16));
    assert.deepEqual(ex.sgio.map((j) => j.path?.name ?? `fd ${j.fd}`), ["fd 42", "/dev/sda"]);
    assert.equal(reply.status, 0);
    assert.deepEqual(reply.data, PATH_KEYS);
  }
});

Deno.test("multipath (14.2): PR OUT by SG_IO (ioctls refused) does not go to the paths on EBADF", () => {
  const reserve = () => {
    const p = new Uint8Array(24);
    new DataView(p.buffer).setBigUint64(0, 0x1234n);
    return { cdb: prOutCdb(PrOutAction.RESERVE, 24, { type: PrType.WRITE_EXCLUSIVE }), p };
  };
  // the ioctl's EPERM switches to SG_IO (Linux < 6.5 without CAP_SYS_ADMIN);
  // SG_IO on the client's fd then fails with EBADF: no path is tried
  const { cdb, p } = reserve();
  const ex = fakeExecutor(errnoRun(Errno.EBADF), { kind: "errno", errno: Errno.EPERM });
  const reply = ex.run(cdb, p);
  assert.equal(ex.ioctls.length, 1);
  const afterIoctl = ex.sgio.filter((j) => j.cdb[0] === 0x5f);
  assert.deepEqual(afterIoctl.map((j) => j.path?.name ?? `fd ${j.fd}`), ["fd 42"]);
  assert.equal(reply.status, 0x02);
  // a transport failure there does go on to a path
  const io = fakeExecutor(errnoRun(Errno.EIO), { kind: "errno", errno: Errno.EPERM });
  assert.equal(io.run(cdb, p).status, 0);
  assert.deepEqual(
    io.sgio.filter((j) => j.cdb[0] === 0x5f).map((j) => j.path?.name ?? `fd ${j.fd}`),
    ["fd 42", "/dev/sda"],
  );
});

Deno.test("multipath: encodePrIoctl refuses a reservation type with no enum pr_type value", () => {
  assert.throws(
    () => encodePrIoctl({ op: "reserve", key: 1n, scsiType: 2 }),
    (e: Error) => e instanceof RangeError && /reservation type 2/.test(e.message),
  );
  const c = encodePrIoctl({ op: "clear", key: 0x0102030405060708n });
  assert.deepEqual([...c.arg], [8, 7, 6, 5, 4, 3, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
});
