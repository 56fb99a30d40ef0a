// The security hooks (src/security/mod.ts) with a fake SELinux backend and a
// capturing log sink: admit, access (with AVC-like lines) and audit.

import assert from "node:assert/strict";
import { configure, type LogRecord, reset } from "@logtape/logtape";
import { OPEN_PEER_POLICY } from "../src/security/access_policy.ts";
import { createSecurity } from "../src/security/mod.ts";
import { createAccessChecker, type SelinuxBackend } from "../src/security/selinux_access.ts";
import { formatLine } from "../src/log.ts";
import type { DeviceFacts } from "../src/device_check.ts";
import { parsePrCdb } from "../src/cdb.ts";
import type { Peer } from "../src/request_handler.ts";

const records: LogRecord[] = [];

async function capture(): Promise<void> {
  records.length = 0;
  await configure({
    reset: true,
    sinks: { mem: (r: LogRecord) => void records.push(r) },
    loggers: [
      { category: ["prhelperd"], lowestLevel: "debug", sinks: ["mem"] },
      { category: ["logtape", "meta"], lowestLevel: "error", sinks: [] },
    ],
  });
}

const lines = () => records.map((r) => formatLine(r, false));

function backend(allowed: boolean, enforcing = true): SelinuxBackend {
  return {
    isEnabled: () => true,
    getEnforce: () => enforcing,
    peerContext: () => "unused",
    fileContext: () => "system_u:object_r:svirt_image_t:s0:c3,c4",
    securityClass: (n) => n === "blk_file" ? 11 : 12,
    avPerm: () => 2,
    computeAv: () => ({
      allowed: allowed ? 2 : 0,
      decided: 0xffffffff,
      auditallow: 0,
      auditdeny: 0xffffffff,
      seqno: 1,
      flags: 0,
    }),
  };
}

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

Deno.test("admit: the peer policy refuses an unlisted uid, with a reason", async () => {
  await capture();
  try {
    const s = createSecurity({
      checker: createAccessChecker({ mode: "off" }),
      apparmor: "off",
      peerPolicy: { uids: new Set([64055]), gids: null, allowRoot: true },
    });
    assert.deepEqual(s.startupLines, [
      "SELinux access check: off: disabled by option",
      "AppArmor access check: off: disabled by option",
      "peer policy: uids 64055; gids -; root allowed",
    ]);
    assert.equal(s.admit(peer), null);
    assert.equal(
      s.admit({ ...peer, uid: 1000, gid: 1000 }),
      "peer policy: uid 1000 gid 1000 is not allowed",
    );
    assert.equal(s.admit({ ...peer, uid: 0, gid: 0 }), null);
  } finally {
    await reset();
  }
});

Deno.test("access: enforcing denial refused and logged as an AVC-like line", async () => {
  await capture();
  try {
    const s = createSecurity({
      checker: createAccessChecker({ backend: backend(false) }),
      peerPolicy: OPEN_PEER_POLICY,
    });
    const v = s.access.check({ peer, fd: 9, facts, fileClass: "blk_file" });
    assert.deepEqual(v, { allow: false, reason: "SELinux: denied" });
    const out = lines();
    assert.equal(out.length, 1);
    assert.equal(
      out[0],
      "WARNING prhelperd.selinux: prhelperd avc: denied { ioctl } for pid=812 uid=64055 gid=108 " +
        "dev=8:0 scontext=system_u:system_r:svirt_t:s0:c1,c2 " +
        "tcontext=system_u:object_r:svirt_image_t:s0:c3,c4 tclass=blk_file permissive=0 " +
        "mode=enforcing verdict=deny reason=denied conn=3",
    );
  } finally {
    await reset();
  }
});

Deno.test("access: allowed is silent; permissive allows and logs; no context fails closed", async () => {
  await capture();
  try {
    const ok = createSecurity({
      checker: createAccessChecker({ backend: backend(true) }),
      peerPolicy: OPEN_PEER_POLICY,
    });
    assert.deepEqual(ok.access.check({ peer, fd: 9, facts, fileClass: "blk_file" }), {
      allow: true,
    });
    assert.equal(records.length, 0);

    const perm = createSecurity({
      checker: createAccessChecker({ backend: backend(false, false) }),
      peerPolicy: OPEN_PEER_POLICY,
    });
    const sg = { ...facts, kind: "char" as const, major: 21 };
    assert.deepEqual(perm.access.check({ peer, fd: 9, facts: sg, fileClass: "chr_file" }), {
      allow: true,
    });
    assert.match(
      lines()[0],
      /avc: denied \{ ioctl \} .*dev=21:0 .*tclass=chr_file permissive=1 mode=permissive verdict=allow/,
    );

    const v = ok.access.check({
      peer: { ...peer, context: null },
      fd: 9,
      facts,
      fileClass: "blk_file",
    });
    assert.equal(v.allow, false);
    assert.match(lines()[1], /scontext=\? .*reason=peer-context-unreadable/);
  } finally {
    await reset();
  }
});

Deno.test("audit: one structured record per PR OUT", async () => {
  await capture();
  try {
    const s = createSecurity({
      checker: createAccessChecker({ mode: "off" }),
      peerPolicy: OPEN_PEER_POLICY,
    });
    const cdb = new Uint8Array(16);
    cdb.set([0x5f, 0x01, 0x05, 0, 0, 0, 0, 0, 24]);
    const sense = new Uint8Array(96);
    s.audit({
      peer,
      facts: { ...facts, major: 1, minor: 3, kind: "char" }, // /dev/null: no sysfs identity
      command: parsePrCdb(cdb),
      payload: new Uint8Array(24),
      status: 0x18,
      sense,
    });
    assert.equal(records.length, 1);
    const r = records[0];
    assert.equal(r.level, "info");
    assert.deepEqual(r.category, ["prhelperd", "audit"]);
    assert.equal(r.properties.sa_name, "RESERVE");
    assert.equal(r.properties.type_name, "WE_RO");
    assert.equal(r.properties.status, 0x18);
    assert.equal(r.properties.peer_context, peer.context);
    assert.equal(r.properties.dev, "1:3");
    assert.equal(
      lines()[0],
      "INFO prhelperd.audit: audit: event=pr-out peer_pid=812 peer_uid=64055 peer_gid=108 " +
        "peer_context=system_u:system_r:svirt_t:s0:c1,c2 dev=1:3 dev_kind=char sa=1 " +
        "sa_name=RESERVE scope=0 type=5 type_name=WE_RO status=24 result=RESERVATION_CONFLICT " +
        "conn=3",
    );
  } finally {
    await reset();
  }
});
