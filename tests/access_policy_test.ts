// Unit tests of the pure SELinux access decision (src/access_policy.ts).

import assert from "node:assert/strict";
import fc from "fast-check";
import {
  ACCESS_DENIED_SENSE,
  type AccessInputs,
  decideAccess,
  type DeviceKind,
  securityClassFor,
} from "../src/access_policy.ts";

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
        fc.record({ allowed: fc.boolean(), domainPermissive: fc.boolean() }),
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
    const av = x.av as { allowed: boolean; domainPermissive: boolean };
    const policyDenies = !av.allowed;
    const enforced = x.state === "enforcing" && !av.domainPermissive;
    assert.equal(d.verdict, policyDenies && enforced ? "deny" : "allow");
    assert.equal(d.wouldDeny, policyDenies);
    assert.ok(d.avc);
  }));
});
