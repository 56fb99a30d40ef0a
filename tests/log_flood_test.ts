/**
 * Issue 14, finding 14.5 (log flooding drops audit records): one client
 * sending bad opcodes made 13,364 lines in 2 s, past journald's rate limit, so
 * PR OUT audit records in that window were lost. Now every line a client can
 * cause spends one global budget, audit records spend their own, and what is
 * left out is reported in a "suppressed" line.
 *
 * Unit level: the real sink (src/log.ts) with a clock the test moves, the
 * real security hooks (src/security/mod.ts: AVC-like lines and audit records) and
 * server-style lines. Daemon level: a client looping on bad opcodes gets a
 * bounded number of lines, and the summaries account for every line left out.
 */

import assert from "node:assert/strict";
import { configure, getLogger, type LogRecord, reset } from "@logtape/logtape";
import { closeFd, O_RDONLY, openPath } from "../ffi/files.ts";
import { parsePrCdb } from "../src/cdb.ts";
import type { DeviceFacts } from "../src/device_check.ts";
import {
  createLogSink,
  LineBudget,
  LOG_BUDGETS,
  LogGate,
  logStream,
  reportSuppressed,
} from "../src/log.ts";
import type { Peer } from "../src/request_handler.ts";
import { createSecurity } from "../src/security/mod.ts";
import { createAccessChecker } from "../src/security/selinux_access.ts";
import { encodeFeatures } from "../src/wire.ts";
import { startDaemon, waitFor } from "./helpers/daemon.ts";
import { closedByHelper, connectRaw, wireCdb } from "./helpers/protocol.ts";

const peer: Peer = {
  pid: 812,
  uid: 64055,
  gid: 108,
  context: "system_u:system_r:svirt_t:s0:c1,c2",
  connection: 3,
};
const facts: DeviceFacts = {
  kind: "block",
  major: 8,
  minor: 0,
  readOnly: false,
  partition: false,
  scsi: true,
  dmUuid: null,
};

/** LogTape with the daemon's sink writing into `out`, on the clock `now()`. */
async function captureWithSink(out: string[], gate: LogGate, now: () => number): Promise<void> {
  await configure({
    reset: true,
    sinks: { mem: createLogSink({ journal: false, write: (l) => out.push(l), gate, clock: now }) },
    loggers: [
      { category: ["prhelperd"], lowestLevel: "info", sinks: ["mem"] },
      { category: ["logtape", "meta"], lowestLevel: "error", sinks: [] },
    ],
  });
}

function prOutEvent() {
  const cdb = new Uint8Array(16);
  cdb.set([0x5f, 0x01, 0x05, 0, 0, 0, 0, 0, 24]); // RESERVE, WE_RO
  return {
    peer,
    facts: { ...facts, kind: "char" as const, major: 1, minor: 3 }, // no sysfs identity
    command: parsePrCdb(cdb),
    payload: new Uint8Array(24),
    status: 0,
    sense: new Uint8Array(96),
  };
}

const suppressedIn = (lines: string[], what: RegExp) =>
  lines.map((l) => l.match(what)).reduce((n, m) => n + (m ? Number(m[1]) : 0), 0);

Deno.test("14.5 log: a token bucket passes its burst, then its rate, and counts the rest", () => {
  const b = new LineBudget({ burst: 3, perSecond: 2 });
  const t0 = 1_000_000;
  assert.deepEqual([0, 1, 2, 3, 4].map((i) => b.take(t0 + i)), [true, true, true, false, false]);
  assert.equal(b.take(t0 + 504), true, "half a second at 2/s refills one line");
  assert.equal(b.take(t0 + 505), false);
  assert.equal(b.takeSuppressed(), 3);
  assert.equal(b.takeSuppressed(), 0);
  assert.equal(b.take(t0 + 60_000), true);
  // which budget a record spends
  const rec = (category: string[], level: LogRecord["level"]) => ({ category, level });
  assert.equal(logStream(rec(["prhelperd", "audit"], "info")), "audit");
  assert.equal(logStream(rec(["prhelperd", "server"], "warning")), "general");
  assert.equal(logStream(rec(["prhelperd", "selinux"], "warning")), "general");
  assert.equal(logStream(rec(["prhelperd", "request"], "info")), "general");
  assert.equal(logStream(rec(["prhelperd", "daemon"], "info")), "lifecycle");
  assert.equal(logStream(rec(["prhelperd", "daemon"], "debug")), "general");
  assert.equal(logStream(rec(["prhelperd", "log"], "warning")), "lifecycle");
});

Deno.test("14.5 log: a flood of refusals and AVC lines is bounded; the PR OUT audit record in it is kept", async () => {
  const out: string[] = [];
  let now = 1_700_000_000_000;
  const start = now;
  const gate = new LogGate();
  await captureWithSink(out, gate, () => now);
  try {
    const security = createSecurity({
      checker: createAccessChecker({ mode: "off" }),
      peerPolicy: { uids: null, gids: null, allowRoot: true },
    });
    // the AVC-like line of src/security/mod.ts, in its category
    const selinux = getLogger(["prhelperd", "selinux"]);
    const server = getLogger(["prhelperd", "server"]);
    // the figure: 13,364 lines in 2 s, closes and AVC-like lines mixed,
    // with a PR OUT reaching a device half-way through
    const total = 13_364;
    let auditAt = -1;
    for (let i = 0; i < total; i++) {
      now = start + Math.floor((i * 2000) / total);
      if (i % 3 === 0) {
        selinux.warning(
          "prhelperd avc: denied {{ ioctl }} for pid=812 uid=64055 gid=108 dev=8:0 " +
            "scontext=system_u:system_r:svirt_t:s0:c1,c2 tcontext=system_u:object_r:" +
            "svirt_image_t:s0:c3,c4 tclass=blk_file permissive=0 mode=enforcing verdict=deny",
          { conn: i },
        );
      } else {
        server.info("closing connection {id}: {reason}", {
          id: i,
          reason: "protocol: bad-opcode",
          pid: 812,
          uid: 64055,
        });
      }
      if (i === total / 2) {
        auditAt = out.length;
        security.audit(prOutEvent());
      }
    }
    const elapsedS = (now - start) / 1000;
    const { burst, perSecond } = LOG_BUDGETS.general;
    const perClient = out.filter((l) => !l.includes("prhelperd.audit:"));
    assert.ok(
      perClient.length <= burst + Math.ceil(perSecond * elapsedS) + 1,
      `${perClient.length} per-client lines in ${elapsedS} s`,
    );
    const audits = out.filter((l) => l.includes("audit: event=pr-out"));
    assert.equal(audits.length, 1, "the audit record was dropped by the flood");
    assert.ok(out.indexOf(audits[0]) >= auditAt);
    assert.match(audits[0], /sa_name=RESERVE .*type_name=WE_RO .*result=GOOD/);
    // the summary accounts for every line left out
    now += 5000;
    reportSuppressed(gate, now);
    const left = suppressedIn(out, /log rate limit: (\d+) lines suppressed/);
    assert.equal(left + perClient.length, total);
    assert.equal(suppressedIn(out, /audit rate limit: (\d+)/), 0);
  } finally {
    await reset();
  }
});

Deno.test("14.5 log: refusals cannot spend the audit budget; an audit flood is reported as such", async () => {
  const out: string[] = [];
  let now = 1_700_000_000_000;
  const gate = new LogGate({
    general: { burst: 5, perSecond: 1 },
    audit: { burst: 50, perSecond: 1 },
  });
  await captureWithSink(out, gate, () => now);
  try {
    const security = createSecurity({
      checker: createAccessChecker({ mode: "off" }),
      peerPolicy: { uids: null, gids: null, allowRoot: true },
    });
    const server = getLogger(["prhelperd", "server"]);
    for (let i = 0; i < 1000; i++) server.warning("refusing connection {id}: x", { id: i });
    // the general budget is empty; audit records still have all of theirs
    for (let i = 0; i < 50; i++) security.audit(prOutEvent());
    assert.equal(out.filter((l) => l.includes("audit: event=pr-out")).length, 50);
    // past the audit budget: counted, and reported at error level
    for (let i = 0; i < 7; i++) security.audit(prOutEvent());
    now += 1000;
    reportSuppressed(gate, now);
    const summary = out.find((l) => l.includes("audit rate limit"));
    assert.ok(summary, out.slice(-3).join("\n"));
    assert.match(summary, /^ERROR prhelperd\.log: audit rate limit: 7 audit records not logged/);
    assert.equal(suppressedIn(out, /log rate limit: (\d+) lines suppressed/), 995);
    // nothing left out since: no summary
    const n = out.length;
    reportSuppressed(gate, now + 5000);
    assert.equal(out.length, n);
  } finally {
    await reset();
  }
});

Deno.test("14.5 daemon: a client looping on bad opcodes gets a bounded number of log lines", async () => {
  await using d = await startDaemon();
  const fd = openPath("/dev/null", O_RDONLY);
  const rounds = 3000;
  const t0 = Date.now();
  try {
    for (let i = 0; i < rounds; i++) {
      const c = connectRaw(d.socket);
      try {
        c.receive(4);
        c.send(encodeFeatures(0));
        c.send(wireCdb(0x12, 36), [fd]); // INQUIRY: not PR IN/OUT, the helper closes
        assert.ok(closedByHelper(c), `round ${i}: connection kept after a bad opcode`);
      } finally {
        c.close();
      }
    }
  } finally {
    closeFd(fd);
  }
  const elapsedS = (Date.now() - t0) / 1000;
  const closes = () =>
    d.stderr().match(/closing connection \d+: protocol: bad-opcode/g)?.length ?? 0;
  const { burst, perSecond } = LOG_BUDGETS.general;
  const bound = burst + Math.ceil(perSecond * (elapsedS + 1));
  assert.ok(closes() <= bound, `${closes()} lines for ${rounds} bad requests in ${elapsedS} s`);
  // within the next summary period, every line left out is accounted for
  await waitFor(
    () => closes() + suppressedIn(d.stderr().split("\n"), /log rate limit: (\d+) lines/) === rounds,
    { what: "summaries accounting for every bad-opcode line", timeoutMs: 30_000 },
  );
  assert.equal((await d.stop()).code, 0, d.stderr());
});
