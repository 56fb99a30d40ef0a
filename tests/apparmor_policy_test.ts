// The AppArmor check's pure parts (src/security/apparmor_policy.ts): state selection,
// label parsing, the .access query bytes and answer, device node names, the
// per-request decision and its audit line.

import assert from "node:assert/strict";
import {
  answerGrants,
  type ApparmorAccessInputs,
  CHECKED_MASK,
  decideApparmorAccess,
  decideApparmorState,
  deviceNodePaths,
  encodeFileQuery,
  formatApparmorAudit,
  parseApparmorLabel,
  parseQueryAnswer,
} from "../src/security/apparmor_policy.ts";

const ON = { moduleEnabled: "Y\n", lsmList: "lockdown,capability,landlock,yama,apparmor,bpf" };

Deno.test("state: off by option, off without AppArmor, on with a working query", () => {
  assert.equal(decideApparmorState("off", { kernel: ON, probe: { ok: true } }).kind, "off");
  const absent = decideApparmorState("auto", { kernel: { moduleEnabled: null, lsmList: null } });
  assert.equal(absent.kind, "off");
  assert.match((absent as { why: string }).why, /no \/sys\/module\/apparmor/);
  const n = decideApparmorState("auto", { kernel: { moduleEnabled: "N\n", lsmList: null } });
  assert.equal(n.kind, "off");
  // module built in and enabled, but another LSM was chosen at boot (security=selinux)
  const other = decideApparmorState("auto", {
    kernel: { moduleEnabled: "Y", lsmList: "capability,selinux" },
  });
  assert.equal(other.kind, "off");
  assert.deepEqual(decideApparmorState("auto", { kernel: ON, probe: { ok: true } }), {
    kind: "on",
  });
});

Deno.test("state: AppArmor active but the query impossible is unusable, never off", () => {
  for (const probe of [undefined, { error: "open: EACCES" }, { error: "EROFS" }]) {
    const s = decideApparmorState("auto", { kernel: ON, probe });
    assert.equal(s.kind, "unusable");
  }
  // an unreadable LSM list with the module enabled counts as active
  const s = decideApparmorState("require", {
    kernel: { moduleEnabled: "Y", lsmList: null },
    probe: { error: "ENOENT" },
  });
  assert.equal(s.kind, "unusable");
  assert.match((s as { why: string }).why, /\.access: ENOENT/);
});

Deno.test("labels: modes, unconfined, stacks, junk", () => {
  assert.deepEqual(parseApparmorLabel("unconfined\n"), { kind: "unconfined", text: "unconfined" });
  assert.deepEqual(parseApparmorLabel("libvirt-0f1e (enforce)\0"), {
    kind: "confined",
    name: "libvirt-0f1e",
    mode: "enforce",
    text: "libvirt-0f1e (enforce)",
  });
  assert.equal((parseApparmorLabel("vm-B (complain)") as { mode: string }).mode, "complain");
  assert.equal(parseApparmorLabel("free (unconfined)").kind, "unconfined");
  assert.deepEqual(parseApparmorLabel("a//&b (mixed)"), {
    kind: "confined",
    name: "a//&b",
    mode: "mixed",
    text: "a//&b (mixed)",
  });
  // a name with a space and parentheses in it keeps the last "(mode)" only
  assert.equal(
    (parseApparmorLabel("/usr/bin/x (y) (enforce)") as { name: string }).name,
    "/usr/bin/x (y)",
  );
  assert.throws(() => parseApparmorLabel(""), /empty or not printable/);
  assert.throws(() => parseApparmorLabel("a\nb"), /not printable/);
});

Deno.test("query bytes: label\\0NAME\\0, class 2, path, no trailing NUL", () => {
  const q = encodeFileQuery("vm-A", "/dev/sda");
  assert.deepEqual([...q], [
    ...new TextEncoder().encode("label"),
    0,
    ...new TextEncoder().encode("vm-A"),
    0,
    2,
    ...new TextEncoder().encode("/dev/sda"),
  ]);
  assert.throws(() => encodeFileQuery("a\0b", "/dev/sda"), /cannot be queried/);
  assert.throws(() => encodeFileQuery("", "/dev/sda"), /cannot be queried/);
  assert.throws(() => encodeFileQuery("vm-A", "dev/sda"), /cannot be queried/);
  assert.throws(() => encodeFileQuery("vm-A", `/${"x".repeat(5000)}`), /too long/);
});

Deno.test("answer: parsed, and grants only what is allowed and not denied", () => {
  const a = parseQueryAnswer(
    "allow 0x0000000e\ndeny 0x00000000\naudit 0x00000000\nquiet 0x00000000\n",
  );
  assert.deepEqual(a, { allow: 0xe, deny: 0, audit: 0, quiet: 0 });
  assert.ok(answerGrants(a, CHECKED_MASK));
  assert.ok(!answerGrants({ ...a, allow: 0x4 }, CHECKED_MASK), "read only");
  assert.ok(!answerGrants({ ...a, deny: 0x2 }, CHECKED_MASK), "write denied");
  const all = parseQueryAnswer(
    "allow 0xffffffff\ndeny 0x00000000\naudit 0x00000000\nquiet 0xffffffff\n",
  );
  assert.ok(answerGrants(all, CHECKED_MASK));
  assert.throws(() => parseQueryAnswer(""), /unexpected AppArmor query answer/);
  assert.throws(() => parseQueryAnswer("allow 0xzz\n"), /unexpected/);
});

Deno.test("device paths: DEVNAME from the uevent, /dev/mapper for dm, junk refused", () => {
  assert.deepEqual(
    deviceNodePaths({ uevent: "MAJOR=8\nMINOR=16\nDEVNAME=sdb\nDEVTYPE=disk\n" }),
    ["/dev/sdb"],
  );
  assert.deepEqual(deviceNodePaths({ uevent: "MAJOR=21\nMINOR=1\nDEVNAME=sg1\n" }), [
    "/dev/sg1",
  ]);
  assert.deepEqual(
    deviceNodePaths({ uevent: "DEVNAME=dm-3\n", dmName: "mpatha\n" }),
    ["/dev/dm-3", "/dev/mapper/mpatha"],
  );
  assert.deepEqual(deviceNodePaths({ uevent: "DEVNAME=dm-3\n", dmName: "../x" }), ["/dev/dm-3"]);
  assert.throws(() => deviceNodePaths({ uevent: null }), /no uevent/);
  assert.throws(() => deviceNodePaths({ uevent: "MAJOR=8\n" }), /no usable DEVNAME/);
  assert.throws(() => deviceNodePaths({ uevent: "DEVNAME=../sda\n" }), /no usable DEVNAME/);
  assert.throws(() => deviceNodePaths({ uevent: "DEVNAME=a b\n" }), /no usable DEVNAME/);
});

const RW = { allow: 0xe, deny: 0, audit: 0, quiet: 0 };
const NONE = { allow: 0, deny: 0, audit: 0, quiet: 0 };

function inputs(over: Partial<ApparmorAccessInputs> = {}): ApparmorAccessInputs {
  return {
    state: { kind: "on" },
    unconfined: "allow",
    label: parseApparmorLabel("vm-A (enforce)"),
    paths: ["/dev/sdb"],
    answers: [RW],
    ...over,
  };
}

Deno.test("decision: allowed, denied, complain, query failures", () => {
  assert.equal(decideApparmorAccess(inputs()).reason, "allowed");
  const denied = decideApparmorAccess(inputs({ answers: [NONE] }));
  assert.deepEqual(
    [denied.verdict, denied.wouldDeny, denied.reason, denied.profile, denied.name],
    ["deny", true, "denied", "vm-A", "/dev/sdb"],
  );
  const complain = decideApparmorAccess(
    inputs({ label: parseApparmorLabel("vm-A (complain)"), answers: [NONE] }),
  );
  assert.deepEqual([complain.verdict, complain.wouldDeny, complain.reason], [
    "allow",
    true,
    "complain",
  ]);
  // kill, user and mixed modes are enforced
  for (const mode of ["kill", "user", "mixed"]) {
    const d = decideApparmorAccess(
      inputs({ label: parseApparmorLabel(`vm-A (${mode})`), answers: [NONE] }),
    );
    assert.equal(d.verdict, "deny", mode);
  }
  // a failed query is refused, in complain mode too
  for (const mode of ["enforce", "complain"]) {
    const d = decideApparmorAccess(
      inputs({ label: parseApparmorLabel(`vm-A (${mode})`), answers: [{ error: "EINVAL" }] }),
    );
    assert.deepEqual([d.verdict, d.reason], ["deny", "query-failed"], mode);
  }
  assert.equal(decideApparmorAccess(inputs({ answers: [] })).reason, "query-failed");
  // a second name (dm) that is allowed allows
  const dm = decideApparmorAccess(
    inputs({ paths: ["/dev/dm-0", "/dev/mapper/mpatha"], answers: [NONE, RW] }),
  );
  assert.deepEqual([dm.verdict, dm.name], ["allow", "/dev/mapper/mpatha"]);
});

Deno.test("decision: off, unusable, unreadable label, unnamed device, unconfined", () => {
  assert.equal(
    decideApparmorAccess(inputs({ state: { kind: "off", why: "x" }, answers: [NONE] })).verdict,
    "allow",
  );
  const unusable = decideApparmorAccess(inputs({ state: { kind: "unusable", why: "EACCES" } }));
  assert.deepEqual([unusable.verdict, unusable.reason], ["deny", "apparmor-unusable"]);
  const label = decideApparmorAccess(inputs({ label: { error: "ENOENT" } }));
  assert.deepEqual([label.verdict, label.reason, label.profile], [
    "deny",
    "label-unreadable",
    "?",
  ]);
  const unnamed = decideApparmorAccess(inputs({ paths: { error: "no uevent" } }));
  assert.deepEqual([unnamed.verdict, unnamed.reason], ["deny", "device-unnamed"]);
  const u = parseApparmorLabel("unconfined");
  assert.deepEqual(
    [decideApparmorAccess(inputs({ label: u, answers: [] })).verdict],
    ["allow"],
  );
  const refused = decideApparmorAccess(inputs({ label: u, unconfined: "refuse", answers: [] }));
  assert.deepEqual([refused.verdict, refused.reason], ["deny", "unconfined-refused"]);
});

Deno.test("audit line: kernel-like fields, quoted", () => {
  const d = decideApparmorAccess(inputs({ answers: [NONE] }));
  assert.equal(
    formatApparmorAudit(d, { pid: 42, uid: 64055 }),
    'apparmor="DENIED" operation="sg_io" profile="vm-A" name="/dev/sdb" requested_mask="rw" ' +
      'denied_mask="rw" mode="enforce" pid=42 ouid=64055 reason="denied"',
  );
  const c = decideApparmorAccess(
    inputs({ label: parseApparmorLabel('x"y (complain)'), answers: [NONE] }),
  );
  assert.match(formatApparmorAudit(c, { pid: 1, uid: 0 }), /^apparmor="ALLOWED" .*profile="x\\"y"/);
});
