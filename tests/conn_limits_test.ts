/**
 * Issue 14, finding 14.4 (idle connections hold every slot): the pure
 * per-uid / per-context bookkeeping (src/conn_limits.ts) and the command-line
 * defaults, chosen so that a host of 1,000 VMs whose QEMUs all run as one uid
 * keeps working while one VM's context cannot take more than its share.
 * tests/conn_limits_daemon_test.ts checks the running daemon.
 */

import assert from "node:assert/strict";
import {
  ConnectionLimits,
  describeRefusal,
  fdsNeeded,
  perInstanceContext,
} from "../src/conn_limits.ts";
import { parseArgs } from "../src/cli.ts";

Deno.test("14.4 limits: only single-level contexts with categories are per-VM", () => {
  const vm = "system_u:system_r:svirt_t:s0:c12,c34";
  assert.equal(perInstanceContext(vm), vm);
  assert.equal(
    perInstanceContext("system_u:system_r:container_t:s0:c1,c2"),
    "system_u:system_r:container_t:s0:c1,c2",
  );
  // shared by many processes: a range, a bare level, a category range, no MLS field, none
  assert.equal(perInstanceContext("unconfined_u:unconfined_r:unconfined_t:s0-s0:c0.c1023"), null);
  assert.equal(perInstanceContext("system_u:system_r:virtd_t:s0-s0:c0.c1023"), null);
  assert.equal(perInstanceContext("system_u:system_r:svirt_t:s0"), null);
  assert.equal(perInstanceContext("system_u:system_r:svirt_t:s0:c0.c1023"), null);
  assert.equal(perInstanceContext("user_u:user_r:user_t"), null);
  assert.equal(perInstanceContext(null), null);
});

Deno.test("14.4 limits: per uid, then per context; a slot is given back on remove", () => {
  const limits = new ConnectionLimits({ perUid: 3, perContext: 2 });
  const vmA = { uid: 107, context: "system_u:system_r:svirt_t:s0:c1,c2" };
  const vmB = { uid: 107, context: "system_u:system_r:svirt_t:s0:c3,c4" };
  const plain = { uid: 107, context: null };
  limits.add(vmA);
  limits.add(vmA);
  const full = limits.check(vmA);
  assert.deepEqual(full, { limit: "context", context: vmA.context, open: 2, max: 2 });
  assert.match(
    describeRefusal(full!),
    /context .*s0:c1,c2 has 2 connections open \(--max-connections-per-context 2\)/,
  );
  // the other VM, same uid: its own context still has room
  assert.equal(limits.check(vmB), null);
  limits.add(vmB);
  // the uid is now at 3: everyone of that uid waits, whatever the context
  const uidFull = limits.check(plain);
  assert.deepEqual(uidFull, { limit: "uid", uid: 107, open: 3, max: 3 });
  assert.match(
    describeRefusal(uidFull!),
    /uid 107 has 3 connections open \(--max-connections-per-uid 3\)/,
  );
  assert.equal(limits.check({ uid: 0, context: null }), null, "another uid is not affected");
  limits.remove(vmA);
  assert.equal(limits.openByUid(107), 2);
  assert.equal(limits.check(vmA), null);
  limits.remove(vmA);
  limits.remove(vmB);
  assert.equal(limits.openByUid(107), 0);
  assert.throws(() => new ConnectionLimits({ perUid: 0, perContext: 1 }), /perUid 0/);
});

Deno.test("14.4 limits: defaults keep 1,000 VMs of one uid working; per-context caps one VM", () => {
  const r = parseArgs([]);
  assert.equal(r.kind, "daemon");
  if (r.kind !== "daemon") return;
  const o = r.options;
  assert.equal(o.maxConnections, 4096);
  assert.equal(o.maxConnectionsPerUid, 2048);
  assert.equal(o.maxConnectionsPerContext, 64);
  assert.equal(o.idleTimeoutMs, 0, "idle timeout off unless asked (libvirt managed mode)");
  // 1,000 VMs as libvirt-qemu, two PR disks each (libvirt: one connection per disk)
  const limits = new ConnectionLimits({
    perUid: o.maxConnectionsPerUid,
    perContext: o.maxConnectionsPerContext,
  });
  for (let vm = 0; vm < 1000; vm++) {
    const peer = { uid: 64055, context: `system_u:system_r:svirt_t:s0:c${vm},c${vm + 1000}` };
    for (let disk = 0; disk < 2; disk++) {
      assert.equal(limits.check(peer), null, `VM ${vm} disk ${disk} refused`);
      limits.add(peer);
    }
  }
  assert.ok(2000 <= o.maxConnections);
  // the fd budget of 4,096 connections fits the packaged LimitNOFILE=65536
  assert.ok(fdsNeeded(o.maxConnections) <= 65536);
  // per-uid follows --max-connections unless given
  const big = parseArgs(["--max-connections", "10000"]);
  assert.equal(big.kind === "daemon" && big.options.maxConnectionsPerUid, 5000);
  const set = parseArgs([
    "--max-connections-per-uid",
    "7",
    "--max-connections-per-context",
    "3",
    "--idle-timeout",
    "2.5",
  ]);
  assert.equal(set.kind, "daemon");
  if (set.kind === "daemon") {
    assert.equal(set.options.maxConnectionsPerUid, 7);
    assert.equal(set.options.maxConnectionsPerContext, 3);
    assert.equal(set.options.idleTimeoutMs, 2500);
  }
  for (
    const [args, message] of [
      [["--idle-timeout", "-1"], /--idle-timeout "-1"/],
      [["--max-connections-per-uid", "0"], /--max-connections-per-uid "0"/],
      [["--max-connections-per-context", "x"], /--max-connections-per-context "x"/],
    ] as const
  ) {
    const bad = parseArgs([...args]);
    assert.equal(bad.kind, "exit");
    if (bad.kind === "exit") {
      assert.equal(bad.code, 1);
      assert.match(bad.stderr, message);
    }
  }
});
