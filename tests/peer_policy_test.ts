// Unit tests of the peer-credential policy (src/security/access_policy.ts).

import assert from "node:assert/strict";
import fc from "fast-check";
import {
  decidePeer,
  describePeerPolicy,
  OPEN_PEER_POLICY,
  parseIdFile,
  type PeerPolicy,
  resolvePeerPolicy,
} from "../src/security/access_policy.ts";
import { loadPeerPolicy } from "../src/security/selinux_access.ts";

const PASSWD = [
  "root:x:0:0:root:/root:/bin/bash",
  "# a comment",
  "libvirt-qemu:x:64055:108:Libvirt Qemu,,,:/var/lib/libvirt:/usr/sbin/nologin",
  "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin",
  "+nisuser::::::",
  "broken line",
].join("\n");
const GROUP = "root:x:0:\nkvm:x:104:\nlibvirt-qemu:x:108:\n";

const policy = (p: Partial<PeerPolicy>): PeerPolicy => ({ ...OPEN_PEER_POLICY, ...p });
const cred = (uid: number, gid: number) => ({ pid: 4242, uid, gid });

Deno.test("no lists: every peer is allowed (socket permissions are the gate)", () => {
  assert.deepEqual(decidePeer(OPEN_PEER_POLICY, cred(1000, 1000)), {
    verdict: "allow",
    reason: "no-restriction",
  });
});

Deno.test("uid list: listed uid allowed, other uid refused", () => {
  const p = policy({ uids: new Set([64055]) });
  assert.equal(decidePeer(p, cred(64055, 108)).verdict, "allow");
  assert.equal(decidePeer(p, cred(64055, 108)).reason, "uid-listed");
  assert.deepEqual(decidePeer(p, cred(1000, 1000)), { verdict: "deny", reason: "not-listed" });
});

Deno.test("gid list: a peer whose primary gid is listed is allowed", () => {
  const p = policy({ gids: new Set([108]) });
  assert.deepEqual(decidePeer(p, cred(1234, 108)), { verdict: "allow", reason: "gid-listed" });
  assert.equal(decidePeer(p, cred(1234, 1234)).verdict, "deny");
});

Deno.test("root: allowed by default even when not listed; refused with allowRoot false", () => {
  const p = policy({ uids: new Set([64055]) });
  assert.deepEqual(decidePeer(p, cred(0, 0)), { verdict: "allow", reason: "root" });
  const strict = policy({ uids: new Set([64055]), allowRoot: false });
  assert.deepEqual(decidePeer(strict, cred(0, 0)), { verdict: "deny", reason: "not-listed" });
  const listed = policy({ uids: new Set([0]), allowRoot: false });
  assert.equal(decidePeer(listed, cred(0, 0)).verdict, "allow");
});

Deno.test("parseIdFile skips comments, NIS markers and malformed lines", () => {
  const m = parseIdFile(PASSWD);
  assert.deepEqual([...m], [["root", 0], ["libvirt-qemu", 64055], ["nobody", 65534]]);
});

Deno.test("resolvePeerPolicy: names and numbers, unknown names name the bad value", () => {
  const p = resolvePeerPolicy(
    { users: ["libvirt-qemu", "1001"], groups: ["kvm"] },
    { passwd: PASSWD, group: GROUP },
  );
  assert.deepEqual([...p.uids!], [64055, 1001]);
  assert.deepEqual([...p.gids!], [104]);
  assert.equal(p.allowRoot, true);
  assert.throws(
    () => resolvePeerPolicy({ users: ["qemu"] }, { passwd: PASSWD, group: GROUP }),
    /unknown user "qemu"/,
  );
  assert.throws(
    () => resolvePeerPolicy({ groups: ["nope"] }, { passwd: PASSWD, group: GROUP }),
    /unknown group "nope"/,
  );
  assert.throws(
    () => resolvePeerPolicy({ users: ["99999999999"] }, { passwd: "", group: "" }),
    /user id "99999999999" is out of range/,
  );
  const none = resolvePeerPolicy({}, { passwd: "", group: "" });
  assert.equal(none.uids, null);
  assert.equal(none.gids, null);
});

Deno.test("describePeerPolicy", () => {
  assert.match(describePeerPolicy(OPEN_PEER_POLICY), /any uid/);
  assert.equal(
    describePeerPolicy(policy({ uids: new Set([64055]), gids: null, allowRoot: false })),
    "peer policy: uids 64055; gids -; root refused unless listed",
  );
});

Deno.test("loadPeerPolicy reads this host's /etc/passwd for names", () => {
  const p = loadPeerPolicy({ users: ["root", "65534"] });
  assert.deepEqual([...p.uids!], [0, 65534]);
  assert.throws(() => loadPeerPolicy({ users: ["no-such-user-prhelperd"] }), /unknown user/);
});

Deno.test("property: with lists, allowed ⇔ uid listed ∨ gid listed ∨ (root ∧ allowRoot)", () => {
  const ids = fc.uniqueArray(fc.integer({ min: 0, max: 70000 }), { maxLength: 5 });
  fc.assert(fc.property(
    fc.option(ids, { nil: null }),
    fc.option(ids, { nil: null }),
    fc.boolean(),
    fc.integer({ min: 0, max: 70000 }),
    fc.integer({ min: 0, max: 70000 }),
    (uids, gids, allowRoot, uid, gid) => {
      const p: PeerPolicy = {
        uids: uids && new Set(uids),
        gids: gids && new Set(gids),
        allowRoot,
      };
      const d = decidePeer(p, cred(uid, gid));
      const open = uids === null && gids === null;
      const expected = open || (uids?.includes(uid) ?? false) ||
        (gids?.includes(gid) ?? false) || (uid === 0 && allowRoot);
      assert.equal(d.verdict, expected ? "allow" : "deny");
    },
  ));
});
