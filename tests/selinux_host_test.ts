// The SELinux checker on this host (SELinux off) and with a fake libselinux
// backend (src/selinux_access.ts wiring: what is read, fail-closed on errors).

import assert from "node:assert/strict";
import {
  type AccessRequest,
  createAccessChecker,
  formatAvc,
  type SelinuxBackend,
} from "../src/selinux_access.ts";
import { type AvDecision, openLibselinux } from "../ffi/selinux.ts";
import { closeFd, unixSocketPair } from "../ffi/libc.ts";
import { SysError } from "../ffi/errno.ts";

const hostHasSelinux = (() => {
  try {
    Deno.statSync("/sys/fs/selinux/enforce");
    return true;
  } catch {
    return false;
  }
})();

function request(over: Partial<AccessRequest> = {}): AccessRequest {
  return {
    peerContext: { context: "system_u:system_r:svirt_t:s0:c1,c2" },
    fd: 99,
    deviceKind: "block",
    peer: { pid: 812, uid: 107, gid: 107 },
    major: 8,
    minor: 0,
    ...over,
  };
}

Deno.test({
  name: "host: SELinux is off, the checker says so and allows requests",
  ignore: hostHasSelinux,
  fn() {
    const c = createAccessChecker();
    try {
      assert.equal(c.state.kind, "off");
      assert.equal(c.describe(), "SELinux access check: off: SELinux disabled");
      const [a, b] = unixSocketPair();
      try {
        // a socketpair carries no context without an LSM
        assert.ok("error" in c.peerContext(a));
        const d = c.check(request({ peerContext: c.peerContext(a), fd: b }));
        assert.equal(d.verdict, "allow");
        assert.equal(d.reason, "check-off");
        assert.equal(formatAvc(d, request()), null);
      } finally {
        closeFd(a);
        closeFd(b);
      }
    } finally {
      c.close();
    }
  },
});

Deno.test({
  name: "host: mode require refuses to start without SELinux",
  ignore: hostHasSelinux,
  fn() {
    assert.throws(
      () => createAccessChecker({ mode: "require" }),
      /SELinux access check required but not possible: SELinux disabled/,
    );
  },
});

Deno.test("libselinux not found and no SELinux in the kernel: off, said once", () => {
  const c = createAccessChecker({
    libraryPath: "/nonexistent/libselinux.so.1",
    kernelSelinuxActive: () => false,
  });
  assert.equal(c.describe(), "SELinux access check: off: libselinux not found");
  assert.equal(c.check(request()).verdict, "allow");
});

Deno.test("libselinux not found but SELinux active: on, failing closed", () => {
  const c = createAccessChecker({
    libraryPath: "/nonexistent/libselinux.so.1",
    kernelSelinuxActive: () => true,
  });
  assert.equal(c.state.kind, "unusable");
  assert.match(
    c.describe(),
    /^SELinux access check: on, failing closed: .*every request is refused$/,
  );
  const d = c.check(request());
  assert.equal(d.verdict, "deny");
  assert.equal(d.reason, "selinux-unusable");
});

Deno.test("mode off: no library is loaded", () => {
  const c = createAccessChecker({ mode: "off", libraryPath: "/nonexistent" });
  assert.equal(c.describe(), "SELinux access check: off: disabled by option");
  assert.throws(
    () => createAccessChecker({ mode: "nope" as "off" }),
    /SELinux check mode "nope" is not one of auto, off, require/,
  );
});

Deno.test({
  name: "ffi: libselinux loads on this host and reports SELinux disabled",
  ignore: hostHasSelinux,
  fn() {
    const r = openLibselinux();
    assert.ok(r.ok, r.ok ? "" : r.message);
    try {
      assert.equal(r.lib.isEnabled(), false);
      assert.throws(() => r.lib.getEnforce(), SysError);
      assert.throws(() => r.lib.securityClass("blk_file"), /string_to_security_class\(blk_file\)/);
    } finally {
      r.lib.close();
    }
  },
});

// ---------------------------------------------------------------- fake backend

const PERM_IOCTL = 0x2;
const BLK = 11;
const CHR = 12;

interface FakeOptions {
  enforcing?: boolean | "throw";
  peer?: string | "throw";
  file?: string | "throw";
  allowed?: (scon: string, tcon: string, tclass: number) => boolean;
  permissiveDomain?: boolean;
  computeThrows?: boolean;
}

function fake(o: FakeOptions = {}): SelinuxBackend & { queries: string[] } {
  const queries: string[] = [];
  return {
    queries,
    isEnabled: () => true,
    getEnforce() {
      if (o.enforcing === "throw") throw new SysError("security_getenforce", 2);
      return o.enforcing ?? true;
    },
    peerContext(fd) {
      if (o.peer === "throw") throw new SysError("getpeercon_raw", 92, String(fd));
      return o.peer ?? "system_u:system_r:svirt_t:s0:c1,c2";
    },
    fileContext(fd) {
      if (o.file === "throw") throw new SysError("fgetfilecon_raw", 61, String(fd));
      return o.file ?? "system_u:object_r:svirt_image_t:s0:c3,c4";
    },
    securityClass: (name) => name === "blk_file" ? BLK : name === "chr_file" ? CHR : 0,
    avPerm: (_c, name) => name === "ioctl" ? PERM_IOCTL : 0,
    computeAv(scon, tcon, { tclass, requested }): AvDecision {
      queries.push(`${scon} ${tcon} ${tclass} ${requested}`);
      if (o.computeThrows) throw new SysError("security_compute_av_flags_raw", 22);
      const allowed = (o.allowed ?? (() => false))(scon, tcon, tclass);
      return {
        allowed: allowed ? 0x7f : 0x10,
        decided: ~0 >>> 0,
        auditallow: 0,
        auditdeny: ~0 >>> 0,
        seqno: 1,
        flags: o.permissiveDomain ? 1 : 0,
      };
    },
  };
}

// The MCS rule of the policy, as far as the test needs it: same categories or s0.
const mcs = (scon: string, tcon: string) => {
  const cats = (c: string) => c.split(":").slice(4).join(":");
  return cats(tcon) === "" || cats(tcon) === cats(scon);
};

Deno.test("fake backend: enforcing cross-MCS denied, with an AVC-like line", () => {
  const b = fake({ allowed: mcs });
  const c = createAccessChecker({ backend: b });
  assert.equal(c.describe(), "SELinux access check: on (enforcing)");
  const peerContext = c.peerContext(5);
  assert.deepEqual(peerContext, { context: "system_u:system_r:svirt_t:s0:c1,c2" });
  const req = request({ peerContext });
  const d = c.check(req);
  assert.equal(d.verdict, "deny");
  assert.deepEqual(b.queries, [
    `system_u:system_r:svirt_t:s0:c1,c2 system_u:object_r:svirt_image_t:s0:c3,c4 ${BLK} ${PERM_IOCTL}`,
  ]);
  assert.equal(
    formatAvc(d, req),
    "prhelperd avc: denied { ioctl } for pid=812 uid=107 gid=107 dev=8:0 " +
      "scontext=system_u:system_r:svirt_t:s0:c1,c2 tcontext=system_u:object_r:svirt_image_t:s0:c3,c4 " +
      "tclass=blk_file permissive=0 mode=enforcing verdict=deny reason=denied",
  );
});

Deno.test("fake backend: same MCS and s0 allowed; char devices query chr_file", () => {
  for (
    const file of ["system_u:object_r:svirt_image_t:s0:c1,c2", "system_u:object_r:svirt_image_t:s0"]
  ) {
    const b = fake({ allowed: mcs, file });
    const c = createAccessChecker({ backend: b });
    assert.equal(c.check(request()).verdict, "allow");
    const d = c.check(request({ deviceKind: "char", major: 21, minor: 0 }));
    assert.equal(d.verdict, "allow");
    assert.match(b.queries[1], new RegExp(` ${CHR} ${PERM_IOCTL}$`));
  }
});

Deno.test("fake backend: permissive (global and domain) allow and log would-deny", () => {
  const global = createAccessChecker({ backend: fake({ enforcing: false }) });
  assert.equal(global.describe(), "SELinux access check: on (permissive)");
  const g = global.check(request());
  assert.equal(g.verdict, "allow");
  assert.equal(g.wouldDeny, true);
  assert.match(
    formatAvc(g, request())!,
    /avc: denied \{ ioctl \}.* permissive=1 mode=permissive verdict=allow/,
  );
  const domain = createAccessChecker({ backend: fake({ permissiveDomain: true }) });
  const d = domain.check(request());
  assert.equal(d.verdict, "allow");
  assert.equal(d.reason, "permissive-domain");
  assert.match(formatAvc(d, request())!, /permissive=1 mode=permissive-domain/);
});

Deno.test("fake backend: every read failure fails closed, no query issued", () => {
  const peer = createAccessChecker({ backend: fake({ peer: "throw" }) });
  const pc = peer.peerContext(5);
  assert.ok("error" in pc && /ENOPROTOOPT/.test(pc.error));
  assert.equal(peer.check(request({ peerContext: pc })).reason, "peer-context-unreadable");

  const b = fake({ file: "throw", allowed: () => true });
  const file = createAccessChecker({ backend: b });
  const d = file.check(request());
  assert.equal(d.verdict, "deny");
  assert.equal(d.reason, "file-context-unreadable");
  assert.match(
    formatAvc(d, request())!,
    /tcontext=\? .*detail="fgetfilecon_raw\(99\) failed: ENODATA"/,
  );
  assert.equal(b.queries.length, 0);

  const enf = createAccessChecker({ backend: fake({ enforcing: "throw", allowed: () => true }) });
  assert.match(enf.describe(), /enforcing mode unreadable/);
  assert.equal(enf.check(request()).reason, "enforce-unreadable");

  const q = createAccessChecker({ backend: fake({ computeThrows: true }) });
  const qd = q.check(request({ deviceKind: "char" }));
  assert.equal(qd.reason, "av-query-failed");
  assert.match(qd.detail!, /EINVAL/);
});

Deno.test("fake backend: a regular file is refused without a query", () => {
  const b = fake({ allowed: () => true });
  const d = createAccessChecker({ backend: b }).check(request({ deviceKind: "regular" }));
  assert.equal(d.reason, "not-a-device");
  assert.equal(b.queries.length, 0);
});

Deno.test("fake backend: the enforcing mode is read per request (setenforce at runtime)", () => {
  let enforcing = false;
  const b = fake();
  b.getEnforce = () => enforcing;
  const c = createAccessChecker({ backend: b });
  assert.equal(c.check(request()).verdict, "allow");
  enforcing = true;
  assert.equal(c.check(request()).verdict, "deny");
});
