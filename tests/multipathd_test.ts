// Host tests of telling multipathd about registrations (issue 18): the pure
// plan (src/multipathd_plan.ts), the framing and the exchange
// (src/multipathd.ts) against a fake multipathd on an abstract socket
// (tests/fixtures/fake_multipathd.ts, in a Worker), the notifier's per-map
// warning, and the multipath handler's order: setprkey, the PR OUT, the
// reply, then setprstatus.
import assert from "node:assert/strict";
import fc from "fast-check";
import { parsePrCdb, PrInAction, prInCdb, PrOutAction, prOutCdb, PrOutFlags } from "../src/cdb.ts";
import {
  decodeMultipathdFrame,
  encodeMultipathdFrame,
  judgeMultipathdReply,
  MULTIPATHD_SOCKET,
  multipathdPlan,
} from "../src/multipathd_plan.ts";
import {
  askMultipathd,
  askMultipathdSync,
  type AskOptions,
  MultipathdNotifier,
  type MultipathdOutcome,
} from "../src/multipathd.ts";
import { type MpathPath, MultipathHandler } from "../src/multipath.ts";
import type { PrIoctlJob, SgIoExecutor, SgIoJob, SgIoRun } from "../src/executor.ts";
import type { PrIoctlResult } from "../ffi/pr_ioctl.ts";
import type { DeviceFacts } from "../src/device_check.ts";
import type { Reply } from "../src/wire.ts";

function params(key: bigint, saKey: bigint, flags = 0): Uint8Array {
  const p = new Uint8Array(24);
  const v = new DataView(p.buffer);
  v.setBigUint64(0, key);
  v.setBigUint64(8, saKey);
  p[20] = flags;
  return p;
}

const out = (sa: number) => parsePrCdb(prOutCdb(sa, 24, { type: 5 }));

// ---------------------------------------------------------------- the plan

Deno.test("multipathd plan (18.1): the commands libmpathpersist would send, per service action", () => {
  const map = { alias: "mpatha" };
  assert.deepEqual(multipathdPlan(out(PrOutAction.REGISTER), params(0n, 0xabcn), map), {
    before: ["setprkey map mpatha key abc"],
    after: ["setprstatus map mpatha"],
  });
  assert.deepEqual(
    multipathdPlan(
      out(PrOutAction.REGISTER_AND_IGNORE_EXISTING_KEY),
      params(5n, 0x123456789abcdef0n, PrOutFlags.APTPL),
      map,
    ),
    {
      before: ["setprkey map mpatha key 123456789abcdef0:aptpl"],
      after: ["setprstatus map mpatha"],
    },
  );
  const forget = { before: [], after: ["unsetprstatus map mpatha", "unsetprkey map mpatha"] };
  assert.deepEqual(multipathdPlan(out(PrOutAction.REGISTER), params(0xabcn, 0n), map), forget);
  assert.deepEqual(
    multipathdPlan(out(PrOutAction.REGISTER_AND_IGNORE_EXISTING_KEY), params(0n, 0n), map),
    forget,
  );
  assert.deepEqual(multipathdPlan(out(PrOutAction.CLEAR), params(0xabcn, 0n), map), forget);
  for (
    const sa of [
      PrOutAction.RESERVE,
      PrOutAction.RELEASE,
      PrOutAction.PREEMPT,
      PrOutAction.PREEMPT_AND_ABORT,
      PrOutAction.REGISTER_AND_MOVE,
    ]
  ) {
    assert.deepEqual(multipathdPlan(out(sa), params(1n, 2n), map), { before: [], after: [] });
  }
  // PR IN, a short list, an alias multipathd could not parse as one word: nothing
  const readKeys = parsePrCdb(prInCdb(PrInAction.READ_KEYS, 16));
  assert.deepEqual(multipathdPlan(readKeys, params(1n, 2n), map).before, []);
  assert.deepEqual(
    multipathdPlan(out(PrOutAction.REGISTER), params(1n, 2n).subarray(0, 16), map).before,
    [],
  );
  for (const alias of ["", "two words", "a\nb", "x".repeat(200)]) {
    assert.deepEqual(multipathdPlan(out(PrOutAction.REGISTER), params(0n, 2n), { alias }), {
      before: [],
      after: [],
    }, JSON.stringify(alias));
  }
});

Deno.test("multipathd plan (18.1): setprkey goes before, and only with a non-zero new key", () => {
  fc.assert(fc.property(
    fc.integer({ min: 0, max: 8 }),
    fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
    fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
    fc.integer({ min: 0, max: 255 }),
    (sa, key, saKey, flags) => {
      const plan = multipathdPlan(out(sa), params(key, saKey, flags), { alias: "m" });
      const registering = sa === PrOutAction.REGISTER ||
        sa === PrOutAction.REGISTER_AND_IGNORE_EXISTING_KEY;
      assert.equal(plan.before.length, registering && saKey !== 0n ? 1 : 0);
      if (plan.before.length === 1) {
        const m = plan.before[0].match(/^setprkey map m key ([0-9a-f]+)(:aptpl)?$/);
        assert.ok(m, plan.before[0]);
        assert.equal(BigInt(`0x${m[1]}`), saKey);
        assert.equal(m[2] !== undefined, (flags & PrOutFlags.APTPL) !== 0);
        assert.deepEqual(plan.after, ["setprstatus map m"]);
      }
    },
  ));
});

Deno.test("multipathd framing (18.1): 8-byte little-endian length with the NUL, text, NUL", () => {
  const frame = encodeMultipathdFrame("setprstatus map mpatha");
  assert.equal(frame.length, 8 + 22 + 1);
  assert.deepEqual([...frame.subarray(0, 8)], [23, 0, 0, 0, 0, 0, 0, 0]);
  assert.equal(new TextDecoder().decode(frame.subarray(8, 30)), "setprstatus map mpatha");
  assert.equal(frame[30], 0);
  assert.throws(() => encodeMultipathdFrame("a\0b"), /NUL/);
  // decode: partial until complete, the text up to its NUL, bad lengths refused
  const reply = encodeMultipathdFrame("ok\n");
  for (let n = 0; n < reply.length; n++) {
    assert.deepEqual(decodeMultipathdFrame(reply.subarray(0, n)), { kind: "partial" });
  }
  assert.deepEqual(decodeMultipathdFrame(reply), { kind: "frame", text: "ok\n", size: 12 });
  const zero = new Uint8Array(8);
  assert.equal(decodeMultipathdFrame(zero).kind, "bad");
  const huge = new Uint8Array(8);
  new DataView(huge.buffer).setBigUint64(0, 1n << 40n, true);
  assert.equal(decodeMultipathdFrame(huge).kind, "bad");
  assert.equal(judgeMultipathdReply("ok\n"), "ok");
  assert.equal(judgeMultipathdReply("fail\n"), "fail");
  assert.equal(judgeMultipathdReply("permission deny: need to be root"), "not-root");
  assert.equal(MULTIPATHD_SOCKET, "/org/kernel/linux/storage/multipathd");
});

// ---------------------------------------------------------------- the exchange

let fakes = 0;

/** A fake multipathd on a fresh abstract name; `commands` collects what it was sent. */
async function fakeMultipathd(rules: [string, string][]) {
  const name = `/prhelperd-test/multipathd-${Deno.pid}-${++fakes}`;
  const worker = new Worker(new URL("./fixtures/fake_multipathd.ts", import.meta.url), {
    type: "module",
  });
  const commands: string[] = [];
  const lengths: { length: number; nul: boolean }[] = [];
  const listening = Promise.withResolvers<void>();
  worker.onmessage = (e) => {
    if (e.data.listening) listening.resolve();
    if (typeof e.data.command === "string") commands.push(e.data.command);
    if (typeof e.data.length === "number") lengths.push(e.data);
  };
  worker.postMessage({ name, rules });
  await listening.promise;
  return {
    name,
    commands,
    lengths,
    stop: () => worker.terminate(),
  };
}

Deno.test("multipathd exchange (18.1): commands and replies on an abstract socket", async () => {
  const fake = await fakeMultipathd([
    ["setprkey", "ok\n"],
    ["setprstatus", "fail\n"],
    ["getprstatus", "permission deny: need to be root\n"],
    ["close", "<close>"],
    ["garbage", "<garbage>"],
  ]);
  try {
    const o: AskOptions = { socketName: fake.name, timeoutMs: 5000 };
    assert.deepEqual(await askMultipathd("setprkey map mpatha key abc", o), {
      kind: "ok",
      reply: "ok",
    });
    assert.deepEqual(await askMultipathd("setprstatus map mpatha", o), {
      kind: "fail",
      reply: "fail",
    });
    assert.equal((await askMultipathd("getprstatus map mpatha", o)).kind, "not-root");
    assert.equal((await askMultipathd("close now", o)).kind, "broken");
    assert.equal((await askMultipathd("garbage please", o)).kind, "broken");
    // the same exchange waiting on this thread (prhelperd check)
    assert.deepEqual(askMultipathdSync("setprkey map mpathb key 1", o), {
      kind: "ok",
      reply: "ok",
    });
    // (the Worker's messages arrive once this thread runs its event loop again)
    for (let i = 0; i < 100 && fake.commands.length < 6; i++) await settle();
    assert.deepEqual(fake.lengths[0], { length: 28, nul: true }, "28 bytes with the NUL");
    assert.deepEqual(fake.commands, [
      "setprkey map mpatha key abc",
      "setprstatus map mpatha",
      "getprstatus map mpatha",
      "close now",
      "garbage please",
      "setprkey map mpathb key 1",
    ]);
  } finally {
    fake.stop();
  }
});

Deno.test("multipathd exchange (18.1): nobody listening is unreachable at once", async () => {
  const o = { socketName: `/prhelperd-test/nobody-${Deno.pid}`, timeoutMs: 60_000 };
  const outcome = await askMultipathd("setprstatus map m", o);
  assert.equal(outcome.kind, "unreachable");
  assert.match((outcome as { error: string }).error, /ECONNREFUSED/);
  assert.equal(askMultipathdSync("setprstatus map m", o).kind, "unreachable");
  // no socket is left open by an exchange that failed
  const fds = () => [...Deno.readDirSync("/proc/self/fd")].length;
  const before = fds();
  for (let i = 0; i < 20; i++) {
    await askMultipathd("setprstatus map m", o);
    askMultipathdSync("setprstatus map m", o);
  }
  assert.equal(fds(), before);
});

Deno.test("multipathd exchange (18.1): a multipathd that never answers times out, the event loop runs on", async () => {
  const fake = await fakeMultipathd([["", "<stall>"]]);
  try {
    let ticks = 0;
    const timer = setInterval(() => ticks++, 20);
    const outcome = await askMultipathd("setprkey map m key 1", {
      socketName: fake.name,
      timeoutMs: 600,
    });
    clearInterval(timer);
    assert.deepEqual(outcome, { kind: "timeout" });
    assert.ok(ticks >= 3, `the event loop ran while waiting (${ticks} ticks)`);
    assert.deepEqual(
      askMultipathdSync("setprkey map m key 2", { socketName: fake.name, timeoutMs: 300 }),
      { kind: "timeout" },
    );
  } finally {
    fake.stop();
  }
});

// ---------------------------------------------------------------- the notifier and the handler

/** Collects log records of the "multipathd" category. */
async function captureLogs(): Promise<{ records: string[]; close: () => Promise<void> }> {
  const { configure, reset } = await import("@logtape/logtape");
  const records: string[] = [];
  await configure({
    reset: true,
    sinks: {
      mem: (r) => records.push(`${r.level}: ${r.message.map(String).join("")}`),
    },
    loggers: [
      { category: ["logtape", "meta"], lowestLevel: "error", sinks: [] },
      { category: ["prhelperd"], lowestLevel: "debug", sinks: ["mem"] },
    ],
  });
  return { records, close: () => reset() };
}

Deno.test("multipathd notifier (18.1): one warning per map while multipathd refuses, again after it took one", async () => {
  const logs = await captureLogs();
  try {
    let answer: MultipathdOutcome = { kind: "unreachable", error: "connect: ECONNREFUSED" };
    const sent: string[] = [];
    const notifier = new MultipathdNotifier({
      ask: (command) => {
        sent.push(command);
        return Promise.resolve(answer);
      },
    });
    await notifier.tell("mpatha", ["unsetprstatus map mpatha", "unsetprkey map mpatha"]);
    assert.deepEqual(sent, ["unsetprstatus map mpatha"], "unreachable: the rest is not sent");
    await notifier.tell("mpatha", ["setprstatus map mpatha"]);
    await notifier.tell("mpathb", ["setprstatus map mpathb"]);
    const warnings = () => logs.records.filter((r) => r.startsWith("warning"));
    assert.equal(warnings().length, 2, warnings().join("\n"));
    assert.match(warnings()[0], /mpatha.*not reachable \(connect: ECONNREFUSED\)/);
    assert.deepEqual(notifier.warnedMaps.sort(), ["mpatha", "mpathb"]);
    answer = { kind: "fail", reply: "fail" };
    sent.length = 0;
    await notifier.tell("mpathb", ["unsetprstatus map mpathb", "unsetprkey map mpathb"]);
    assert.equal(sent.length, 2, "a refused command does not stop the next one");
    answer = { kind: "ok", reply: "ok" };
    await notifier.tell("mpatha", ["setprstatus map mpatha"]);
    assert.deepEqual(notifier.warnedMaps, ["mpathb"]);
    answer = { kind: "not-root", reply: "permission deny: need to be root" };
    await notifier.tell("mpatha", ["setprstatus map mpatha"]);
    assert.equal(warnings().length, 3);
    assert.match(warnings()[2], /uid 0 only/);
  } finally {
    await logs.close();
  }
});

const PATHS: MpathPath[] = [
  { name: "sda", major: 8, minor: 0, state: "running" },
  { name: "sdb", major: 8, minor: 16, state: "running" },
];
const FACTS: DeviceFacts = {
  kind: "block",
  major: 253,
  minor: 3,
  readOnly: false,
  partition: false,
  scsi: false,
  dmUuid: "mpath-3600140512345",
};

/**
 * The handler on a fake executor (the PR ioctl answers `ioctl`) and a fake
 * multipathd (`ask`); `events` is the order of everything that happened.
 */
function rig(ioctl: PrIoctlResult, ask: (command: string) => Promise<MultipathdOutcome>) {
  const events: string[] = [];
  const executor = {
    maxWorkers: 4,
    submit(job: SgIoJob, done: (r: SgIoRun | Error) => void) {
      queueMicrotask(() =>
        done({
          outcome: {
            kind: "done",
            status: 0,
            hostStatus: 0,
            driverStatus: 0,
            sense: new Uint8Array(96),
            resid: 0,
          },
          data: new Uint8Array(job.transferLength),
        })
      );
    },
    submitIoctl(_job: PrIoctlJob, done: (r: PrIoctlResult | Error) => void) {
      events.push("ioctl");
      queueMicrotask(() => done(ioctl));
    },
  } as unknown as SgIoExecutor;
  const handler = new MultipathHandler({
    executor,
    sgioTimeoutMs: 1000,
    paths: () => PATHS,
    mapName: (major, minor) => `${major}:${minor}` === "253:3" ? "mpathq" : null,
    multipathd: new MultipathdNotifier({
      timeoutMs: 300,
      ask: (command) => {
        events.push(command);
        return ask(command);
      },
    }),
  });
  const run = (sa: number, payload: Uint8Array) =>
    new Promise<Reply>((resolve) => {
      handler.handle({ fd: 42, command: out(sa), payload, facts: FACTS }, (r) => {
        events.push(`reply ${r.status}`);
        resolve(r);
      });
    });
  return { events, run };
}

const ok = () => Promise.resolve<MultipathdOutcome>({ kind: "ok", reply: "ok" });
const settle = () => new Promise((r) => setTimeout(r, 50));

Deno.test("multipath + multipathd (18.1): setprkey, REGISTER, reply, setprstatus, in that order", async () => {
  const r = rig({ kind: "done", value: 0 }, ok);
  const reply = await r.run(PrOutAction.REGISTER, params(0n, 0x1234n));
  await settle();
  assert.equal(reply.status, 0);
  assert.deepEqual(r.events, [
    "setprkey map mpathq key 1234",
    "ioctl",
    "reply 0",
    "setprstatus map mpathq",
  ]);
  r.events.length = 0;
  await r.run(PrOutAction.REGISTER_AND_IGNORE_EXISTING_KEY, params(0n, 0n));
  await r.run(PrOutAction.RESERVE, params(0x1234n, 0n));
  await r.run(PrOutAction.CLEAR, params(0x1234n, 0n));
  await settle();
  assert.deepEqual(r.events, [
    "ioctl",
    "reply 0",
    "unsetprstatus map mpathq",
    "unsetprkey map mpathq",
    "ioctl",
    "reply 0",
    "ioctl",
    "reply 0",
    "unsetprstatus map mpathq",
    "unsetprkey map mpathq",
  ]);
});

Deno.test("multipath + multipathd (18.1): a failed REGISTER does not set the PR status", async () => {
  const conflict = { kind: "done" as const, value: 0x18 }; // RESERVATION CONFLICT
  const r = rig(conflict, ok);
  const reply = await r.run(PrOutAction.REGISTER, params(7n, 0x99n));
  await settle();
  assert.equal(reply.status, 0x18);
  assert.deepEqual(r.events, ["setprkey map mpathq key 99", "ioctl", "reply 24"]);
});

Deno.test("multipath + multipathd (18.1): absent or stuck multipathd: the REGISTER succeeds, bounded", async () => {
  const logs = await captureLogs();
  try {
    const gone = rig(
      { kind: "done", value: 0 },
      () => Promise.resolve({ kind: "unreachable", error: "connect: ECONNREFUSED" }),
    );
    assert.equal((await gone.run(PrOutAction.REGISTER, params(0n, 5n))).status, 0);
    assert.equal((await gone.run(PrOutAction.REGISTER, params(5n, 6n))).status, 0);
    await settle();
    assert.equal(logs.records.filter((x) => x.startsWith("warning")).length, 1);
    // a multipathd that never answers: the REGISTER still runs after the bound
    const stuck = rig({ kind: "done", value: 0 }, () => new Promise(() => {}));
    const reply = await stuck.run(PrOutAction.REGISTER, params(0n, 5n));
    assert.equal(reply.status, 0);
    assert.deepEqual(stuck.events, ["setprkey map mpathq key 5", "ioctl", "reply 0"]);
  } finally {
    await logs.close();
  }
});

// ---------------------------------------------------------------- prhelperd check

Deno.test("prhelperd check (18.1): multipathd reachable or not, and whether the daemon can tell it", async () => {
  const { multipathdFindings } = await import("../src/commands/check_findings.ts");
  const asked = (
    outcome: MultipathdOutcome,
    daemon: { uid: number; sameNetns: boolean | null } | null,
  ) => multipathdFindings({ kind: "asked", map: "mpatha", outcome, daemon });
  assert.deepEqual(multipathdFindings({ kind: "skipped" }), []);
  const gone = asked({ kind: "unreachable", error: "connect: ECONNREFUSED" }, {
    uid: 0,
    sameNetns: true,
  });
  assert.equal(gone.length, 1);
  assert.equal(gone[0].status, "warn");
  assert.match(
    gone[0].message,
    /multipathd is not reachable \(connect: ECONNREFUSED\): PR commands on mpatha succeed/,
  );
  // getprkey answers with the key, not "ok": judged "fail" by the exchange
  const known = asked({ kind: "fail", reply: "0x5151" }, { uid: 0, sameNetns: true });
  assert.deepEqual(known.map((x) => x.status), ["info", "ok"]);
  assert.match(known[0].message, /keeps key 0x5151 for mpatha/);
  const none = asked({ kind: "fail", reply: "none" }, null);
  assert.deepEqual(none.map((x) => x.status), ["info", "skip"]);
  assert.match(none[0].message, /no key for mpatha/);
  const packaged = asked({ kind: "ok", reply: "none" }, { uid: 0, sameNetns: false });
  assert.equal(packaged[1].status, "warn");
  assert.match(packaged[1].message, /another network namespace \(PrivateNetwork=yes/);
  const user = asked({ kind: "not-root", reply: "permission deny: need to be root" }, {
    uid: 998,
    sameNetns: true,
  });
  assert.deepEqual(user.map((x) => x.status), ["info", "warn"]);
  assert.match(user[1].message, /uid 998: multipathd refuses its commands/);
  assert.equal(asked({ kind: "fail", reply: "fail" }, null)[0].status, "warn");
});
