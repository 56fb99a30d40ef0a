// The AppArmor check's edge (src/security/apparmor_access.ts) and its place in the
// security hooks (src/security/mod.ts): a fake kernel that answers .access
// queries from a table of profiles (decoding the query bytes itself), a fake
// sysfs tree on disk read through the daemon's own libc reader, and a
// capturing log sink.

import assert from "node:assert/strict";
import { configure, type LogRecord } from "@logtape/logtape";
import {
  type ApparmorBackend,
  createApparmorChecker,
  KERNEL_BACKEND,
} from "../src/security/apparmor_access.ts";
import { createSecurity } from "../src/security/mod.ts";
import { createAccessChecker } from "../src/security/selinux_access.ts";
import { OPEN_PEER_POLICY } from "../src/security/access_policy.ts";
import { formatLine } from "../src/log.ts";
import type { DeviceFacts } from "../src/device_check.ts";
import type { Peer } from "../src/request_handler.ts";

/** profile name → { mode, path → "rw" | "r" } */
type Profiles = Record<string, { mode: string; files: Record<string, string> }>;

/** A kernel that answers like AppArmor's .access: label\0NAME\0 \x02 PATH. */
function fakeKernel(
  profiles: Profiles,
  labels: Record<number, string>,
  opts: { queryFails?: string; enabled?: boolean } = {},
): ApparmorBackend & { queries: string[] } {
  const queries: string[] = [];
  return {
    queries,
    kernelFacts: () => ({
      moduleEnabled: opts.enabled === false ? null : "Y\n",
      lsmList: "capability,yama,apparmor",
    }),
    query(bytes: Uint8Array): string {
      if (opts.queryFails) throw new Error(opts.queryFails);
      const text = new TextDecoder().decode(bytes);
      const parts = text.split("\0");
      assert.equal(parts[0], "label", "command");
      assert.equal(parts.length, 3, "label\\0NAME\\0\\x02PATH");
      assert.equal(parts[2].charCodeAt(0), 2, "class byte AA_CLASS_FILE");
      const name = parts[1];
      const path = parts[2].slice(1);
      queries.push(`${name} ${path}`);
      const word = (n: number) => `0x${n.toString(16).padStart(8, "0")}`;
      let allow = 0;
      if (name === "unconfined") allow = 0xffffffff;
      else {
        const p = profiles[name];
        if (p === undefined) throw new Error("write: ENOENT (no such profile)");
        const perm = p.files[path] ?? "";
        allow = (perm.includes("r") ? 4 : 0) | (perm.includes("w") ? 0xa : 0);
      }
      return `allow ${word(allow)}\ndeny ${word(0)}\naudit ${word(0)}\nquiet ${word(0)}\n`;
    },
    processLabel(pid: number): string {
      const l = labels[pid];
      if (l === undefined) throw new Error(`open /proc/${pid}/attr/apparmor/current: ENOENT`);
      return `${l}\n`;
    },
    readSysfs: KERNEL_BACKEND.readSysfs,
  };
}

/** A sysfs tree with block 8:0 = sda, 8:16 = sdb, char 21:0 = sg0, block 253:0 = dm-0 (mpatha). */
async function fakeSysfs(): Promise<string> {
  const root = await Deno.makeTempDir({ prefix: "prh-aa-sysfs-" });
  const dev = async (kind: string, id: string, uevent: string, dmName?: string) => {
    const dir = `${root}/dev/${kind}/${id}`;
    await Deno.mkdir(dir, { recursive: true });
    await Deno.writeTextFile(`${dir}/uevent`, uevent);
    if (dmName !== undefined) {
      await Deno.mkdir(`${dir}/dm`);
      await Deno.writeTextFile(`${dir}/dm/name`, `${dmName}\n`);
    }
  };
  await dev("block", "8:0", "MAJOR=8\nMINOR=0\nDEVNAME=sda\nDEVTYPE=disk\n");
  await dev("block", "8:16", "MAJOR=8\nMINOR=16\nDEVNAME=sdb\nDEVTYPE=disk\n");
  await dev("char", "21:0", "MAJOR=21\nMINOR=0\nDEVNAME=sg0\n");
  await dev("block", "253:0", "MAJOR=253\nMINOR=0\nDEVNAME=dm-0\n", "mpatha");
  return root;
}

const PROFILES: Profiles = {
  "vm-A": { mode: "enforce", files: { "/dev/sda": "rw", "/dev/sg0": "rw" } },
  "vm-B": { mode: "enforce", files: { "/dev/sdb": "rw", "/dev/mapper/mpatha": "rw" } },
  "vm-R": { mode: "enforce", files: { "/dev/sdb": "r" } },
};
const LABELS: Record<number, string> = {
  100: "vm-A (enforce)",
  200: "vm-B (enforce)",
  300: "vm-B (complain)",
  400: "unconfined",
  500: "vm-R (enforce)",
  600: "gone (enforce)",
};

Deno.test("checker: each profile gets its own node, nothing else", async () => {
  const sys = await fakeSysfs();
  try {
    const k = fakeKernel(PROFILES, LABELS);
    const c = createApparmorChecker({ backend: k, sysfsRoot: sys });
    assert.equal(c.state.kind, "on");
    assert.match(c.describe(), /on \(unconfined clients allowed\)/);
    const a = c.peerLabel({ pid: 100, context: null });
    const b = c.peerLabel({ pid: 200, context: null });
    const req = (label: typeof a, kind: "block" | "char", major: number, minor: number) =>
      c.check({ label, kind, major, minor });
    assert.equal(req(a, "block", 8, 0).verdict, "allow");
    assert.equal(req(a, "char", 21, 0).verdict, "allow");
    const cross = req(a, "block", 8, 16);
    assert.deepEqual([cross.verdict, cross.reason, cross.name], ["deny", "denied", "/dev/sdb"]);
    assert.equal(req(b, "block", 8, 0).verdict, "deny");
    assert.equal(req(b, "char", 21, 0).verdict, "deny");
    assert.equal(req(b, "block", 8, 16).verdict, "allow");
    // dm: the /dev/mapper name counts
    assert.deepEqual(
      [req(b, "block", 253, 0).verdict, req(b, "block", 253, 0).name],
      ["allow", "/dev/mapper/mpatha"],
    );
    assert.ok(
      k.queries.includes("vm-B /dev/dm-0") && k.queries.includes("vm-B /dev/mapper/mpatha"),
    );
    // read-only permission is not enough
    assert.equal(req(c.peerLabel({ pid: 500, context: null }), "block", 8, 16).verdict, "deny");
    // a device sysfs does not know (removed, or a number the client made up) is refused
    const unknown = req(a, "block", 8, 32);
    assert.deepEqual([unknown.verdict, unknown.reason], ["deny", "device-unnamed"]);
    // complain mode: allowed, flagged for the log
    const complain = req(c.peerLabel({ pid: 300, context: null }), "block", 8, 0);
    assert.deepEqual([complain.verdict, complain.wouldDeny, complain.reason], [
      "allow",
      true,
      "complain",
    ]);
    // SO_PEERSEC text, when the socket has it, wins over /proc
    const viaSock = c.peerLabel({ pid: 200, context: "vm-A (enforce)" });
    assert.equal(req(viaSock, "block", 8, 0).verdict, "allow");
    // a label the kernel does not know (profile removed): the query fails, refused
    const gone = req(c.peerLabel({ pid: 600, context: null }), "block", 8, 0);
    assert.deepEqual([gone.verdict, gone.reason], ["deny", "query-failed"]);
    // an unreadable label (process gone, /proc hidden): refused
    const none = req(c.peerLabel({ pid: 999, context: null }), "block", 8, 0);
    assert.deepEqual([none.verdict, none.reason], ["deny", "label-unreadable"]);
  } finally {
    await Deno.remove(sys, { recursive: true });
  }
});

Deno.test("checker: unconfined clients as the option says", async () => {
  const sys = await fakeSysfs();
  try {
    for (const unconfined of ["allow", "refuse"] as const) {
      const k = fakeKernel(PROFILES, LABELS);
      const c = createApparmorChecker({ backend: k, sysfsRoot: sys, unconfined });
      const d = c.check({
        label: c.peerLabel({ pid: 400, context: null }),
        kind: "block",
        major: 8,
        minor: 16,
      });
      assert.equal(d.verdict, unconfined === "allow" ? "allow" : "deny");
      assert.deepEqual(k.queries, ["unconfined /dev/null"], "only the start-up probe was made");
    }
  } finally {
    await Deno.remove(sys, { recursive: true });
  }
});

Deno.test("checker: fail closed when AppArmor runs but cannot be asked", () => {
  const k = fakeKernel(PROFILES, LABELS, { queryFails: "open .access: EROFS" });
  assert.throws(
    () => createApparmorChecker({ backend: k }),
    /AppArmor access check not possible while AppArmor is active: .*EROFS.*--apparmor=off/,
  );
  assert.throws(() => createApparmorChecker({ backend: k, mode: "require" }), /required/);
  // off: nothing asked, nothing refused
  const off = createApparmorChecker({ backend: k, mode: "off" });
  assert.equal(off.state.kind, "off");
  // no AppArmor at all: auto is off, require refuses to start
  const none = fakeKernel(PROFILES, LABELS, { enabled: false, queryFails: "ENOENT" });
  assert.equal(createApparmorChecker({ backend: none }).state.kind, "off");
  assert.throws(() => createApparmorChecker({ backend: none, mode: "require" }), /required/);
});

const records: LogRecord[] = [];

Deno.test("security hooks: cross-profile request refused with an AppArmor line", async () => {
  await configure({
    reset: true,
    sinks: { mem: (r: LogRecord) => void records.push(r) },
    loggers: [
      { category: ["prhelperd"], lowestLevel: "debug", sinks: ["mem"] },
      { category: ["logtape", "meta"], lowestLevel: "error", sinks: [] },
    ],
  });
  const sys = await fakeSysfs();
  try {
    const k = fakeKernel(PROFILES, LABELS);
    const security = createSecurity({
      checker: createAccessChecker({ mode: "off" }),
      apparmorChecker: createApparmorChecker({ backend: k, sysfsRoot: sys }),
      peerPolicy: OPEN_PEER_POLICY,
    });
    assert.ok(security.startupLines.some((l) => /AppArmor access check: on/.test(l)));
    const peer: Peer = { pid: 100, uid: 64055, gid: 64055, context: null, connection: 7 };
    assert.equal(security.admit(peer), null);
    // the label was read at accept: a later change of the pid's label does not matter
    LABELS[100] = "vm-B (enforce)";
    const facts = (minor: number): DeviceFacts => ({
      kind: "block",
      major: 8,
      minor,
      readOnly: false,
      partition: false,
      scsi: true,
      dmUuid: null,
    });
    const own = security.access.check({ peer, fd: -1, facts: facts(0), fileClass: "blk_file" });
    assert.deepEqual(own, { allow: true });
    const cross = security.access.check({
      peer,
      fd: -1,
      facts: facts(16),
      fileClass: "blk_file",
    });
    assert.equal(cross.allow, false);
    assert.match((cross as { reason: string }).reason, /^AppArmor: denied/);
    const lines = records.map((r) => formatLine(r, false));
    assert.ok(
      lines.some((l) =>
        l.includes('apparmor="DENIED" operation="sg_io" profile="vm-A" name="/dev/sdb"') &&
        l.includes("pid=100")
      ),
      lines.join("\n"),
    );
    security.close();
  } finally {
    LABELS[100] = "vm-A (enforce)";
    await Deno.remove(sys, { recursive: true });
  }
});
