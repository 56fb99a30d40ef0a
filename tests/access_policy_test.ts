// Unit tests of the pure SELinux access decision (src/security/access_policy.ts).

import assert from "node:assert/strict";
import fc from "fast-check";
import {
  ACCESS_DENIED_SENSE,
  type AccessInputs,
  decideAccess,
  decideSelinuxState,
  type DeviceKind,
  isSelinuxContext,
  type KernelSelinuxFacts,
  securityClassFor,
  selinuxActive,
  type XpermAnswer,
} from "../src/security/access_policy.ts";

const SVIRT_C12 = "system_u:system_r:svirt_t:s0:c1,c2";
const IMG_C12 = "system_u:object_r:svirt_image_t:s0:c1,c2";
const IMG_C34 = "system_u:object_r:svirt_image_t:s0:c3,c4";
const IMG_S0 = "system_u:object_r:svirt_image_t:s0";

function inputs(over: Partial<AccessInputs> = {}): AccessInputs {
  return {
    selinux: { kind: "on", enforcing: true },
    peer: { context: SVIRT_C12 },
    file: { context: IMG_C34 },
    deviceKind: "block",
    av: { allowed: false, domainPermissive: false },
    ...over,
  };
}

Deno.test("the denial sense is ILLEGAL REQUEST, ACCESS DENIED - NO ACCESS RIGHTS (05/20/02)", () => {
  assert.deepEqual({ ...ACCESS_DENIED_SENSE }, { key: 5, asc: 0x20, ascq: 0x02 });
});

Deno.test("class by device kind: block → blk_file, char → chr_file, others none", () => {
  assert.equal(securityClassFor("block"), "blk_file");
  assert.equal(securityClassFor("char"), "chr_file");
  for (const k of ["regular", "directory", "fifo", "socket", "symlink", "unknown"] as const) {
    assert.equal(securityClassFor(k), null);
  }
});

Deno.test("check off (SELinux disabled): allowed without contexts or a query", () => {
  const d = decideAccess({
    selinux: { kind: "off", why: "SELinux disabled" },
    peer: { error: "ENOPROTOOPT" },
    file: { error: "not read" },
    deviceKind: "block",
  });
  assert.equal(d.verdict, "allow");
  assert.equal(d.wouldDeny, false);
  assert.equal(d.reason, "check-off");
  assert.equal(d.detail, "SELinux disabled");
  assert.equal(d.avc, undefined);
});

Deno.test("enforcing, cross-MCS (ioctl not allowed): denied with AVC fields", () => {
  const d = decideAccess(inputs());
  assert.equal(d.verdict, "deny");
  assert.equal(d.wouldDeny, true);
  assert.equal(d.reason, "denied");
  assert.deepEqual(d.avc, {
    scontext: SVIRT_C12,
    tcontext: IMG_C34,
    tclass: "blk_file",
    perm: "ioctl",
    mode: "enforcing",
  });
});

Deno.test("enforcing, same MCS (ioctl allowed): allowed, nothing to log", () => {
  const d = decideAccess(inputs({
    file: { context: IMG_C12 },
    av: { allowed: true, domainPermissive: false },
  }));
  assert.equal(d.verdict, "allow");
  assert.equal(d.wouldDeny, false);
  assert.equal(d.reason, "allowed");
  assert.equal(d.avc?.mode, "enforcing");
});

Deno.test("enforcing, shared disk at s0 (policy allows: s0 is dominated by s0:c1,c2): allowed", () => {
  const d = decideAccess(inputs({
    file: { context: IMG_S0 },
    av: { allowed: true, domainPermissive: false },
  }));
  assert.equal(d.verdict, "allow");
  assert.equal(d.reason, "allowed");
  assert.equal(d.avc?.tcontext, IMG_S0);
});

Deno.test("sg node (chr_file): same rules, class chr_file", () => {
  const denied = decideAccess(inputs({ deviceKind: "char" }));
  assert.equal(denied.verdict, "deny");
  assert.equal(denied.avc?.tclass, "chr_file");
  const allowed = decideAccess(inputs({
    deviceKind: "char",
    av: { allowed: true, domainPermissive: false },
  }));
  assert.equal(allowed.verdict, "allow");
});

Deno.test("globally permissive: a denial is allowed and marked wouldDeny", () => {
  const d = decideAccess(inputs({ selinux: { kind: "on", enforcing: false } }));
  assert.equal(d.verdict, "allow");
  assert.equal(d.wouldDeny, true);
  assert.equal(d.reason, "permissive");
  assert.equal(d.avc?.mode, "permissive");
});

Deno.test("permissive domain in an enforcing system: allowed and marked wouldDeny", () => {
  const d = decideAccess(inputs({ av: { allowed: false, domainPermissive: true } }));
  assert.equal(d.verdict, "allow");
  assert.equal(d.wouldDeny, true);
  assert.equal(d.reason, "permissive-domain");
  assert.equal(d.avc?.mode, "permissive-domain");
});

Deno.test("permissive, allowed: no wouldDeny", () => {
  const d = decideAccess(inputs({
    selinux: { kind: "on", enforcing: false },
    av: { allowed: true, domainPermissive: true },
  }));
  assert.equal(d.verdict, "allow");
  assert.equal(d.wouldDeny, false);
  assert.equal(d.avc?.mode, "permissive");
});

Deno.test("peer context unreadable: refused (fail closed), in permissive mode too", () => {
  for (const enforcing of [true, false]) {
    const d = decideAccess(inputs({
      selinux: { kind: "on", enforcing },
      peer: { error: "getpeercon_raw(5) failed: ENOPROTOOPT" },
      av: undefined,
    }));
    assert.equal(d.verdict, "deny");
    assert.equal(d.reason, "peer-context-unreadable");
    assert.match(d.detail ?? "", /ENOPROTOOPT/);
    assert.equal(d.avc?.scontext, "?");
  }
});

Deno.test("file context unreadable: refused (fail closed), in permissive mode too", () => {
  for (const enforcing of [true, false]) {
    const d = decideAccess(inputs({
      selinux: { kind: "on", enforcing },
      file: { error: "fgetfilecon_raw(7) failed: ENODATA" },
      av: { allowed: true, domainPermissive: false },
    }));
    assert.equal(d.verdict, "deny");
    assert.equal(d.reason, "file-context-unreadable");
    assert.equal(d.avc?.tcontext, "?");
  }
});

Deno.test("enforcing mode unreadable: refused", () => {
  const d = decideAccess(inputs({
    selinux: { kind: "on", enforcing: { error: "ENOENT" } },
    av: { allowed: true, domainPermissive: false },
  }));
  assert.equal(d.verdict, "deny");
  assert.equal(d.reason, "enforce-unreadable");
  assert.equal(d.avc?.mode, "enforcing");
});

Deno.test("access query failed or missing: refused", () => {
  const failed = decideAccess(inputs({ av: { error: "EINVAL" } }));
  assert.equal(failed.verdict, "deny");
  assert.equal(failed.reason, "av-query-failed");
  assert.equal(failed.detail, "EINVAL");
  const missing = decideAccess(inputs({ av: undefined }));
  assert.equal(missing.verdict, "deny");
  assert.equal(missing.reason, "av-query-failed");
});

Deno.test("SELinux active but unusable (no libselinux): every request refused", () => {
  const d = decideAccess(inputs({
    selinux: { kind: "unusable", why: "libselinux missing" },
    av: { allowed: true, domainPermissive: false },
  }));
  assert.equal(d.verdict, "deny");
  assert.equal(d.reason, "selinux-unusable");
});

Deno.test("not a device: refused when the check is on", () => {
  const d = decideAccess(inputs({
    deviceKind: "regular",
    av: { allowed: true, domainPermissive: false },
  }));
  assert.equal(d.verdict, "deny");
  assert.equal(d.reason, "not-a-device");
  assert.equal(d.avc?.tclass, "?");
});

// The whole decision table as a property: deny ⇔ (check on) ∧ (a read failed ∨
// not a device ∨ (policy denies ∧ enforcing ∧ domain not permissive)).
Deno.test("property: verdict and wouldDeny follow the decision table", () => {
  const ctx = fc.oneof(
    fc.constantFrom(SVIRT_C12, IMG_C12, IMG_C34, IMG_S0).map((context) => ({ context })),
    fc.constant({ error: "EIO" }),
  );
  const arb = fc.record({
    state: fc.constantFrom("off", "unusable", "enforcing", "permissive", "unreadable"),
    peer: ctx,
    file: ctx,
    deviceKind: fc.constantFrom<DeviceKind>("block", "char", "regular", "socket"),
    av: fc.option(
      fc.oneof(
        fc.record({
          allowed: fc.boolean(),
          domainPermissive: fc.boolean(),
          xperm: fc.option(
            fc.constantFrom<XpermAnswer>(
              { kind: "no-rules" },
              { kind: "allowed" },
              { kind: "denied", why: "not listed" },
            ),
            { nil: undefined },
          ),
        }),
        fc.constant({ error: "EINVAL" }),
      ),
      { nil: undefined },
    ),
  });
  fc.assert(fc.property(arb, (x) => {
    const selinux = x.state === "off"
      ? { kind: "off" as const, why: "x" }
      : x.state === "unusable"
      ? { kind: "unusable" as const, why: "x" }
      : {
        kind: "on" as const,
        enforcing: x.state === "unreadable" ? { error: "x" } : x.state === "enforcing",
      };
    const d = decideAccess({
      selinux,
      peer: x.peer,
      file: x.file,
      deviceKind: x.deviceKind,
      av: x.av,
    });
    if (x.state === "off") {
      assert.equal(d.verdict, "allow");
      assert.equal(d.wouldDeny, false);
      return;
    }
    const failed = x.state === "unusable" || x.state === "unreadable" ||
      "error" in x.peer || "error" in x.file ||
      (x.deviceKind !== "block" && x.deviceKind !== "char") ||
      x.av === undefined || "error" in x.av;
    if (failed) {
      assert.equal(d.verdict, "deny");
      assert.equal(d.wouldDeny, true);
      return;
    }
    const av = x.av as { allowed: boolean; domainPermissive: boolean; xperm?: XpermAnswer };
    // 14.6: the extended permissions are part of the kernel's answer
    const policyDenies = !av.allowed || av.xperm?.kind === "denied";
    const enforced = x.state === "enforcing" && !av.domainPermissive;
    assert.equal(d.verdict, policyDenies && enforced ? "deny" : "allow");
    assert.equal(d.wouldDeny, policyDenies);
    assert.ok(d.avc);
  }));
});

// ---------------------------------------------------------------- 14.6 (xperms)

Deno.test("14.6: ioctl allowed, SG_IO not in the allowxperm rules: denied-xperm, with ioctlcmd", () => {
  const d = decideAccess(inputs({
    file: { context: IMG_C12 },
    av: { allowed: true, domainPermissive: false, xperm: { kind: "denied", why: "not listed" } },
  }));
  assert.equal(d.verdict, "deny");
  assert.equal(d.reason, "denied-xperm");
  assert.equal(d.detail, "not listed");
  assert.equal(d.avc?.ioctlcmd, "0x2285");
});

Deno.test("14.6: xperm rules that list SG_IO, or none: ioctl alone decides", () => {
  for (const xperm of [{ kind: "allowed" as const }, { kind: "no-rules" as const }]) {
    const ok = decideAccess(inputs({ av: { allowed: true, domainPermissive: false, xperm } }));
    assert.equal(ok.verdict, "allow");
    assert.equal(ok.avc?.ioctlcmd, xperm.kind === "allowed" ? "0x2285" : undefined);
    const no = decideAccess(inputs({ av: { allowed: false, domainPermissive: false, xperm } }));
    assert.equal(no.reason, "denied");
  }
});

Deno.test("14.6: permissive (global or domain) covers an xperm denial as it covers ioctl", () => {
  const xperm = { kind: "denied" as const, why: "not listed" };
  const g = decideAccess(inputs({
    selinux: { kind: "on", enforcing: false },
    av: { allowed: true, domainPermissive: false, xperm },
  }));
  assert.deepEqual([g.verdict, g.wouldDeny, g.reason, g.detail], [
    "allow",
    true,
    "permissive",
    "not listed",
  ]);
  const dom = decideAccess(inputs({ av: { allowed: true, domainPermissive: true, xperm } }));
  assert.deepEqual([dom.verdict, dom.reason], ["allow", "permissive-domain"]);
});

// ---------------------------------------------------------------- 14.1 (is SELinux active?)

const CTX = { context: "system_u:system_r:kernel_t:s0" };
const NOCTX = { error: "read(3) failed: EINVAL" };
const facts = (over: Partial<KernelSelinuxFacts>): KernelSelinuxFacts => ({
  selinuxfs: { kind: "absent" },
  selfContext: NOCTX,
  ...over,
});

Deno.test("14.1: SELinux contexts are told from AppArmor and Smack labels", () => {
  for (
    const c of [
      "system_u:system_r:svirt_t:s0:c1,c2",
      "system_u:system_r:kernel_t:s0-s0:c0.c1023",
      "u:r:t",
    ]
  ) assert.ok(isSelinuxContext(c), c);
  for (
    const c of ["unconfined", "/usr/sbin/libvirtd (enforce)", ":ns:prof (complain)", "_", "a:b", ""]
  ) assert.ok(!isSelinuxContext(c), c);
});

Deno.test("14.1: active is decided from the kernel's signs, each one enough", () => {
  assert.equal(selinuxActive(facts({})).active, false);
  assert.equal(selinuxActive(facts({ selfContext: { context: "unconfined" } })).active, false);
  assert.equal(
    selinuxActive(facts({ selinuxfs: { kind: "mounted", readOnly: true } })).active,
    true,
  );
  assert.equal(
    selinuxActive(facts({ selinuxfs: { kind: "mounted", readOnly: false } })).active,
    true,
  );
  assert.equal(selinuxActive(facts({ selinuxfs: { kind: "not-mounted" } })).active, true);
  assert.equal(
    selinuxActive(facts({ selinuxfs: { kind: "error", error: "EACCES" } })).active,
    true,
  );
  assert.deepEqual(selinuxActive(facts({ selfContext: CTX })), {
    active: true,
    evidence: "this process runs as system_u:system_r:kernel_t:s0",
  });
});

Deno.test("14.1: start-up state: off only without SELinux; every failure while active is unusable", () => {
  const ok = { ok: true } as const;
  const rw = facts({ selinuxfs: { kind: "mounted", readOnly: false }, selfContext: CTX });
  const ro = facts({ selinuxfs: { kind: "mounted", readOnly: true }, selfContext: CTX });
  assert.deepEqual(decideSelinuxState({ kernel: facts({}), library: { loaded: true } }), {
    kind: "off",
    why: "SELinux disabled (no /sys/fs/selinux, no process context (read(3) failed: EINVAL))",
  });
  assert.deepEqual(
    decideSelinuxState({
      kernel: rw,
      library: { loaded: true },
      probe: ok,
      policy: ok,
      enforcing: true,
    }),
    { kind: "on", enforcing: true },
  );
  const why = (s: ReturnType<typeof decideSelinuxState>) => {
    assert.equal(s.kind, "unusable");
    return s.kind === "unusable" ? s.why : "";
  };
  assert.match(
    why(decideSelinuxState({ kernel: rw, library: { loaded: false, error: "ENOENT" } })),
    /but libselinux cannot be loaded \(ENOENT\)/,
  );
  assert.match(
    why(decideSelinuxState({ kernel: ro, library: { loaded: true }, probe: { error: "EROFS" } })),
    /selinuxfs is mounted read-only at \/sys\/fs\/selinux in this mount namespace.*: EROFS$/,
  );
  assert.match(
    why(decideSelinuxState({
      kernel: facts({ selinuxfs: { kind: "not-mounted" } }),
      library: { loaded: true },
      probe: { error: "ENOENT" },
    })),
    /selinuxfs is not mounted at \/sys\/fs\/selinux/,
  );
  assert.match(
    why(decideSelinuxState({ kernel: rw, library: { loaded: true }, probe: { error: "EACCES" } })),
    /the kernel's access query fails: EACCES/,
  );
  assert.match(
    why(decideSelinuxState({
      kernel: rw,
      library: { loaded: true },
      probe: ok,
      policy: { error: "EACCES" },
    })),
    /the loaded policy cannot be read, so its ioctl extended permissions cannot be checked/,
  );
  // a read-only selinuxfs that still answers (mounted read-write elsewhere too) is fine
  assert.equal(
    decideSelinuxState({ kernel: ro, library: { loaded: true }, probe: ok, policy: ok }).kind,
    "on",
  );
});
