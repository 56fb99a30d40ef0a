// The SELinux checker on this host (SELinux off) and with a fake libselinux
// backend (src/security/selinux_access.ts wiring: what is read, fail-closed on errors).
// Findings 14.1 (SELinux active decided by the kernel, not libselinux) and
// 14.6 (the policy's ioctl extended permissions) are marked in test names.

import assert from "node:assert/strict";
import {
  type AccessRequest,
  createAccessChecker,
  formatAvc,
  readKernelSelinuxFacts,
  type SelinuxBackend,
} from "../src/security/selinux_access.ts";
import type { KernelSelinuxFacts } from "../src/security/access_policy.ts";
import { type AvDecision, openLibselinux } from "../ffi/selinux.ts";
import { readLoadedPolicy, readSelfContext, statFilesystem } from "../ffi/selinuxfs.ts";
import { closeFd } from "../ffi/files.ts";
import { unixSocketPair } from "../ffi/sockets.ts";
import { Errno, SysError } from "../ffi/errno.ts";

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
      assert.match(
        c.describe(),
        /^SELinux access check: off: SELinux disabled \(no \/sys\/fs\/selinux, /,
      );
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

const NO_SELINUX: KernelSelinuxFacts = {
  selinuxfs: { kind: "absent" },
  selfContext: { error: "read(3) failed: EINVAL" },
};
const ENFORCING_RW: KernelSelinuxFacts = {
  selinuxfs: { kind: "mounted", readOnly: false },
  selfContext: { context: "system_u:system_r:prhelperd_t:s0" },
};

Deno.test("14.1: no SELinux in the kernel: off, and libselinux is not even loaded", () => {
  const c = createAccessChecker({
    libraryPath: "/nonexistent/libselinux.so.1",
    kernelFacts: () => NO_SELINUX,
  });
  assert.match(
    c.describe(),
    /^SELinux access check: off: SELinux disabled \(no \/sys\/fs\/selinux/,
  );
  assert.equal(c.check(request()).verdict, "allow");
});

Deno.test("14.1: libselinux not found while SELinux is active: start refused, with the reason", () => {
  assert.throws(
    () =>
      createAccessChecker({
        libraryPath: "/nonexistent/libselinux.so.1",
        kernelFacts: () => ENFORCING_RW,
      }),
    /SELinux access check not possible while SELinux is active: SELinux is active \(selinuxfs is mounted at \/sys\/fs\/selinux\) but libselinux cannot be loaded .*--selinux=off/,
  );
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
  /** What is_selinux_enabled() says (libselinux: 0 with a read-only selinuxfs or no config). */
  enabled?: boolean;
  /** Every access query fails with this errno (libselinux without a usable selinuxfs). */
  queryErrno?: number;
  /** The policy sequence number the kernel reports. */
  seqno?: () => number;
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
    isEnabled: () => o.enabled ?? true,
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
    securityClass(name) {
      if (o.queryErrno) throw new SysError("string_to_security_class", o.queryErrno, name);
      return name === "blk_file" ? BLK : name === "chr_file" ? CHR : 0;
    },
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
        seqno: o.seqno?.() ?? 1,
        flags: o.permissiveDomain ? 1 : 0,
      };
    },
  };
}

/** A checker on a fake backend; the start-up trial query is left out of `queries`. */
function checker(
  b: SelinuxBackend & { queries: string[] },
  options: { readPolicy?: () => Uint8Array; kernelFacts?: () => KernelSelinuxFacts } = {},
) {
  const c = createAccessChecker({ backend: b, ...options });
  b.queries.length = 0;
  return c;
}

// The MCS rule of the policy, as far as the test needs it: same categories or s0.
const mcs = (scon: string, tcon: string) => {
  const cats = (c: string) => c.split(":").slice(4).join(":");
  return cats(tcon) === "" || cats(tcon) === cats(scon);
};

Deno.test("fake backend: enforcing cross-MCS denied, with an AVC-like line", () => {
  const b = fake({ allowed: mcs });
  const c = checker(b);
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
    const c = checker(b);
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
  const file = checker(b);
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

  const failing: FakeOptions = {};
  const q = createAccessChecker({ backend: fake(failing) });
  failing.computeThrows = true;
  const qd = q.check(request({ deviceKind: "char" }));
  assert.equal(qd.reason, "av-query-failed");
  assert.match(qd.detail!, /EINVAL/);
});

Deno.test("fake backend: a regular file is refused without a query", () => {
  const b = fake({ allowed: () => true });
  const d = checker(b).check(request({ deviceKind: "regular" }));
  assert.equal(d.reason, "not-a-device");
  assert.equal(b.queries.length, 0);
});

Deno.test("fake backend: the enforcing mode is read per request (setenforce at runtime)", () => {
  let enforcing = false;
  const b = fake();
  b.getEnforce = () => enforcing;
  const c = checker(b);
  assert.equal(c.check(request()).verdict, "allow");
  enforcing = true;
  assert.equal(c.check(request()).verdict, "deny");
});

Deno.test("the start-up trial query asks the kernel about this process's own context", () => {
  const b = fake();
  createAccessChecker({ backend: b, kernelFacts: () => ENFORCING_RW });
  assert.deepEqual(b.queries, [
    `system_u:system_r:prhelperd_t:s0 system_u:system_r:prhelperd_t:s0 ${BLK} ${PERM_IOCTL}`,
  ]);
});

// ---------------------------------------------------------------- 14.1

Deno.test("14.1: selinuxfs read-only while the kernel enforces (is_selinux_enabled() = 0): start refused, never off", () => {
  // libselinux ignores a read-only selinuxfs: is_selinux_enabled() is 0 and
  // every query fails (no selinux_mnt); the kernel still enforces
  const b = fake({ enabled: false, queryErrno: Errno.EINVAL, allowed: () => true });
  const ro: KernelSelinuxFacts = {
    selinuxfs: { kind: "mounted", readOnly: true },
    selfContext: { context: "system_u:system_r:kernel_t:s0" },
  };
  for (const mode of ["auto", "require"] as const) {
    assert.throws(
      () => createAccessChecker({ mode, backend: b, kernelFacts: () => ro }),
      /selinuxfs is mounted read-only at \/sys\/fs\/selinux in this mount namespace, so the kernel cannot be asked .*EINVAL/,
    );
  }
});

Deno.test("14.1: /etc/selinux/config missing (is_selinux_enabled() = 0), selinuxfs usable: the check runs", () => {
  const b = fake({ enabled: false, allowed: mcs });
  const c = createAccessChecker({ backend: b, kernelFacts: () => ENFORCING_RW });
  assert.equal(c.describe(), "SELinux access check: on (enforcing)");
  const d = c.check(request());
  assert.equal(d.verdict, "deny");
  assert.equal(d.reason, "denied");
});

Deno.test("14.1: a container without selinuxfs, labelled by SELinux: start refused", () => {
  const b = fake({ enabled: false, queryErrno: Errno.ENOENT });
  assert.throws(
    () =>
      createAccessChecker({
        backend: b,
        kernelFacts: () => ({
          selinuxfs: { kind: "absent" },
          selfContext: { context: "system_u:system_r:container_t:s0:c1,c2" },
        }),
      }),
    /SELinux is active \(this process runs as system_u:system_r:container_t:s0:c1,c2\) but selinuxfs is not mounted at \/sys\/fs\/selinux/,
  );
  // the mount point without selinuxfs on it (another file system) says the same
  assert.throws(
    () =>
      createAccessChecker({
        backend: fake({ queryErrno: Errno.ENOENT }),
        kernelFacts: () => ({
          selinuxfs: { kind: "not-mounted" },
          selfContext: { error: "EINVAL" },
        }),
      }),
    /SELinux is active \(the kernel created \/sys\/fs\/selinux\) but selinuxfs is not mounted/,
  );
});

Deno.test("14.1: AppArmor's label is not SELinux: off, libselinux never asked", () => {
  const b = fake({ computeThrows: true });
  for (const label of ["unconfined", "/usr/bin/prhelperd (enforce)", ":ns:profile (complain)"]) {
    const c = createAccessChecker({
      backend: b,
      kernelFacts: () => ({ selinuxfs: { kind: "absent" }, selfContext: { context: label } }),
    });
    assert.equal(c.state.kind, "off");
    assert.equal(c.check(request()).verdict, "allow");
  }
  assert.equal(b.queries.length, 0);
});

Deno.test("14.1: this host's kernel facts are read without libselinux, and say no SELinux", {
  ignore: hostHasSelinux,
}, () => {
  const f = readKernelSelinuxFacts();
  assert.deepEqual(f.selinuxfs, { kind: "absent" });
  // no LSM labels processes here (EINVAL), or AppArmor does; neither is SELinux
  if ("context" in f.selfContext) assert.doesNotMatch(f.selfContext.context, /^[^:\s]+:[^:\s]+:/);
  else assert.match(f.selfContext.error, /EINVAL|ENOENT/);
});

Deno.test("14.1: ffi/selinuxfs.ts: statfs of a path, the self context, the policy file", () => {
  const proc = statFilesystem("/proc");
  assert.equal(proc?.type, 0x9fa0); // PROC_SUPER_MAGIC
  assert.equal(typeof proc?.readOnly, "boolean");
  assert.equal(statFilesystem("/nonexistent/prhelperd"), null);
  try {
    assert.equal(typeof readSelfContext(), "string");
  } catch (e) {
    assert.ok(e instanceof SysError, String(e));
  }
  assert.throws(
    () => readLoadedPolicy("/nonexistent/policy"),
    /open\(\/nonexistent\/policy\) failed: ENOENT/,
  );
});

// ---------------------------------------------------------------- 14.6

const XPERM_POLICY = Deno.readFileSync(
  new URL("./fixtures/selinux/xperm_policy.33", import.meta.url),
);
const SVIRT = "system_u:system_r:svirt_t:s0:c1,c2";
const IMAGE = "system_u:object_r:svirt_image_t:s0:c1,c2";

Deno.test("14.6: ioctl allowed but SG_IO not in the policy's allowxperm rules: refused like the kernel", () => {
  const b = fake({ allowed: () => true, peer: SVIRT, file: IMAGE });
  const c = checker(b, { readPolicy: () => XPERM_POLICY, kernelFacts: () => ENFORCING_RW });
  assert.equal(
    c.describe(),
    "SELinux access check: on (enforcing), policy version 33 with 4 ioctl extended-permission rules",
  );
  const req = request({ peerContext: { context: SVIRT } });
  const d = c.check(req);
  assert.equal(d.verdict, "deny");
  assert.equal(d.reason, "denied-xperm");
  assert.equal(
    formatAvc(d, req),
    "prhelperd avc: denied { ioctl } for pid=812 uid=107 gid=107 dev=8:0 ioctlcmd=0x2285 " +
      `scontext=${SVIRT} tcontext=${IMAGE} tclass=blk_file permissive=0 mode=enforcing ` +
      'verdict=deny reason=denied-xperm detail="no xperm rule names ioctl driver 0x22 (command 0x2285)"',
  );
  // the sg node: allowxperm lists 0x2285
  const sg = c.check({ ...req, deviceKind: "char" });
  assert.equal(sg.verdict, "allow");
  assert.equal(sg.avc?.ioctlcmd, "0x2285");
});

Deno.test("14.6: no xperm rule for the triple: ioctl alone decides, the line has no ioctlcmd", () => {
  const b = fake({
    allowed: (scon) => scon.includes(":other_t:"),
    peer: "system_u:system_r:other_t:s0",
    file: "system_u:object_r:fixed_disk_t:s0",
  });
  const c = checker(b, { readPolicy: () => XPERM_POLICY, kernelFacts: () => ENFORCING_RW });
  const req = request({ peerContext: { context: "system_u:system_r:other_t:s0" } });
  assert.equal(c.check(req).verdict, "allow");
  const other = request({ peerContext: { context: "system_u:system_r:kernel_t:s0" } });
  const d = c.check(other);
  assert.equal(d.reason, "denied");
  assert.doesNotMatch(formatAvc(d, other)!, /ioctlcmd/);
});

Deno.test("14.6: permissive mode lets an xperm denial through and logs it", () => {
  const b = fake({ enforcing: false, allowed: () => true, peer: SVIRT, file: IMAGE });
  const c = checker(b, { readPolicy: () => XPERM_POLICY, kernelFacts: () => ENFORCING_RW });
  const req = request({ peerContext: { context: SVIRT } });
  const d = c.check(req);
  assert.equal(d.verdict, "allow");
  assert.equal(d.wouldDeny, true);
  assert.equal(d.reason, "permissive");
  assert.match(formatAvc(d, req)!, /ioctlcmd=0x2285 .* permissive=1 mode=permissive verdict=allow/);
});

Deno.test("14.6: the policy is read at start and again only when the policy sequence number moves", () => {
  let seqno = 7;
  let reads = 0;
  const b = fake({ allowed: () => true, peer: SVIRT, file: IMAGE, seqno: () => seqno });
  const c = checker(b, {
    readPolicy: () => {
      reads++;
      return XPERM_POLICY;
    },
    kernelFacts: () => ENFORCING_RW,
  });
  const req = request({ peerContext: { context: SVIRT } });
  assert.equal(reads, 1);
  c.check(req);
  c.check(req);
  assert.equal(reads, 1);
  seqno = 8; // a policy load or a boolean change
  assert.equal(c.check(req).reason, "denied-xperm");
  assert.equal(reads, 2);
});

Deno.test("14.6: a policy that cannot be read fails closed: at start refused, later the request", () => {
  const b = fake({ allowed: () => true, peer: SVIRT, file: IMAGE });
  assert.throws(
    () =>
      createAccessChecker({
        backend: b,
        kernelFacts: () => ENFORCING_RW,
        readPolicy: () => {
          throw new SysError("open", Errno.EACCES, "/sys/fs/selinux/policy");
        },
      }),
    /the loaded policy cannot be read, so its ioctl extended permissions cannot be checked: open\(\/sys\/fs\/selinux\/policy\) failed: EACCES/,
  );
  assert.throws(
    () =>
      createAccessChecker({
        backend: b,
        kernelFacts: () => ENFORCING_RW,
        readPolicy: () => XPERM_POLICY.subarray(0, 100),
      }),
    /the loaded policy cannot be read.*binary policy, offset/,
  );
  let seqno = 1;
  let broken = false;
  const later = fake({ allowed: () => true, peer: SVIRT, file: IMAGE, seqno: () => seqno });
  const c = checker(later, {
    kernelFacts: () => ENFORCING_RW,
    readPolicy: () => {
      if (broken) throw new SysError("open", Errno.EACCES, "/sys/fs/selinux/policy");
      return XPERM_POLICY;
    },
  });
  broken = true;
  seqno = 2;
  const d = c.check(request({ peerContext: { context: SVIRT }, deviceKind: "char" }));
  assert.equal(d.verdict, "deny");
  assert.equal(d.reason, "av-query-failed");
  assert.match(d.detail!, /^ioctl extended permissions could not be evaluated: open.*EACCES/);
});

Deno.test("14.6: EBUSY (another reader holds the policy file) is retried", () => {
  let calls = 0;
  const b = fake({ allowed: () => true, peer: SVIRT, file: IMAGE });
  const c = checker(b, {
    kernelFacts: () => ENFORCING_RW,
    readPolicy: () => {
      if (++calls < 3) throw new SysError("open", Errno.EBUSY, "/sys/fs/selinux/policy");
      return XPERM_POLICY;
    },
  });
  assert.equal(c.state.kind, "on");
  assert.equal(calls, 3);
});
