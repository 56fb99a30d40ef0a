/**
 * `prhelperd check`: the judgements (pure, from synthetic facts) and the
 * command on this host: /dev/null, a regular file, a missing path, and a
 * running daemon with and without CAP_SYS_RAWIO.
 */
import assert from "node:assert/strict";
import {
  capabilityFindings,
  checkExitStatus,
  daemonFindings,
  deviceFindings,
  type Finding,
  formatFindings,
  groupsOf,
  modeAllows,
  selinuxFindings,
  socketFindings,
} from "../src/commands/check_findings.ts";
import { parseCheckArgs } from "../src/commands/check_command.ts";
import type { DeviceFacts } from "../src/device_check.ts";
import type { FileStat } from "../ffi/files.ts";
import { parseStatus } from "../src/security/privileges.ts";
import {
  DENO,
  MAIN,
  startDaemon,
  Subprocess,
  TempDir,
  TestDaemon,
  waitReady,
} from "./helpers/daemon.ts";

const disk: DeviceFacts = {
  kind: "block",
  major: 8,
  minor: 0,
  readOnly: true,
  partition: false,
  scsi: true,
  dmUuid: null,
};

function only(findings: Finding[], status: Finding["status"]): Finding {
  const hits = findings.filter((x) => x.status === status);
  assert.equal(hits.length, 1, JSON.stringify(findings));
  return hits[0];
}

Deno.test("check device: whole disk ok; partition, dm, non-SCSI, regular file fail with a fix", () => {
  assert.equal(
    deviceFindings("/dev/sda", { kind: "facts", facts: disk, parent: null })[0].status,
    "ok",
  );
  const part = only(
    deviceFindings("/dev/sda1", {
      kind: "facts",
      facts: { ...disk, minor: 1, partition: true },
      parent: "sda",
    }),
    "fail",
  );
  assert.match(part.message, /\/dev\/sda1 \(8:1\) is a partition, not a whole disk/);
  assert.match(part.fix!, /whole disk \/dev\/sda/);
  const lvm = only(
    deviceFindings("/dev/dm-3", {
      kind: "facts",
      facts: { ...disk, major: 253, dmUuid: "LVM-abc" },
      parent: null,
    }),
    "fail",
  );
  assert.match(lvm.message, /not multipath/);
  const mpath = deviceFindings("/dev/dm-4", {
    kind: "facts",
    facts: { ...disk, major: 253, dmUuid: "mpath-3600" },
    parent: null,
  });
  assert.equal(mpath[0].status, "ok");
  const vd = only(
    deviceFindings("/dev/vda", {
      kind: "facts",
      facts: { ...disk, major: 252, scsi: false },
      parent: null,
    }),
    "fail",
  );
  assert.match(vd.fix!, /virtio-blk/);
  const reg = only(
    deviceFindings("/img", { kind: "facts", facts: { ...disk, kind: "regular" }, parent: null }),
    "fail",
  );
  assert.match(reg.message, /is a regular file, not a device/);
  assert.match(
    deviceFindings("/x", { kind: "error", errno: 2, code: "ENOENT" })[0].message,
    /does not exist/,
  );
});

function caps(bytes: number[]) {
  return {
    kind: "reply" as const,
    via: "helper" as const,
    status: 0,
    sense: new Uint8Array(96),
    data: new Uint8Array(bytes),
  };
}
function cc(key: number, asc: number, ascq: number) {
  const s = new Uint8Array(96);
  s.set([0x70, 0, key, 0, 0, 0, 0, 10, 0, 0, 0, 0, asc, ascq]);
  return s;
}

Deno.test("check PR support: types and flags; refusals explained", () => {
  const lio = capabilityFindings(caps([0, 8, 0x0d, 0x80, 0xea, 0x01, 0, 0]));
  const ok = only(lio, "ok");
  assert.match(ok.message, /types 1 \(Write Exclusive\), 3 \(Exclusive Access\)/);
  assert.match(ok.message, /ATP_C=1 PTPL_C=1/);
  assert.equal(checkExitStatus(lio), 0);
  const some = capabilityFindings(caps([0, 8, 0x00, 0x80, 0x02, 0x00, 0, 0]));
  assert.ok(
    some.some((x) =>
      x.status === "info" && /not supported: 3 \(Exclusive Access\)/.test(x.message)
    ),
  );
  assert.ok(some.some((x) => /PTPL_C=0/.test(x.message)));
  assert.equal(
    only(capabilityFindings(caps([0, 8, 0, 0x80, 0, 0, 0, 0])), "fail").message.includes(
      "no reservation type",
    ),
    true,
  );
  const denied = capabilityFindings({ ...caps([]), status: 2, sense: cc(5, 0x20, 2) });
  assert.match(only(denied, "fail").message, /refused access/);
  const noPr = capabilityFindings({ ...caps([]), status: 2, sense: cc(5, 0x20, 0) });
  assert.match(only(noPr, "fail").message, /does not support PERSISTENT RESERVE IN/);
  const spc2 = capabilityFindings({
    ...caps([]),
    status: 2,
    sense: cc(5, 0x24, 0),
    readKeysStatus: 0,
  });
  assert.match(only(spc2, "warn").message, /READ KEYS works/);
  const sgioFailed = capabilityFindings({ ...caps([]), status: 2, sense: cc(0x0b, 0, 6) });
  assert.match(only(sgioFailed, "fail").fix!, /lacks CAP_SYS_RAWIO/);
  const eperm = capabilityFindings({
    kind: "error",
    via: "SG_IO",
    message: "ioctl(SG_IO) failed: EPERM",
    errno: "EPERM",
  });
  assert.match(only(eperm, "fail").fix!, /CAP_SYS_RAWIO/);
});

Deno.test("check SELinux: allowed, permissive, denied (with the relabel fix), off", () => {
  const base = {
    state: { kind: "on" as const, enforcing: true },
    deviceLabel: "system_u:object_r:fixed_disk_device_t:s0",
    deviceKind: "block" as const,
    clientContext: "system_u:system_r:svirt_t:s0:c1,c2",
  };
  assert.ok(
    selinuxFindings({ ...base, deviceAv: { allowed: true, domainPermissive: false } })
      .some((x) => x.status === "ok" && /blk_file:ioctl .*: allowed/.test(x.message)),
  );
  const denied = only(
    selinuxFindings({ ...base, deviceAv: { allowed: false, domainPermissive: false } }),
    "fail",
  );
  assert.match(denied.message, /refused \(denied\).*05\/20\/02/);
  assert.match(denied.fix!, /chcon -t svirt_image_t -l s0/);
  const perm = selinuxFindings({
    ...base,
    state: { kind: "on", enforcing: false },
    deviceAv: { allowed: false, domainPermissive: false },
  });
  assert.match(only(perm, "warn").message, /allowed only because SELinux is permissive/);
  const conn = selinuxFindings({
    ...base,
    deviceAv: { allowed: true, domainPermissive: false },
    daemonContext: "system_u:system_r:prhelperd_t:s0",
    connectAv: { allowed: false, domainPermissive: false },
  });
  assert.match(only(conn, "fail").message, /connectto .*denied/);
  const off = selinuxFindings({
    state: { kind: "off", why: "SELinux disabled" },
    clientContext: "x",
  });
  assert.equal(off.filter((x) => x.status === "skip").length, 1);
  assert.equal(checkExitStatus(off), 0);
});

const STATUS = (capEff: string) =>
  parseStatus(`Name:\tdeno\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nCapEff:\t${capEff}\n`);

Deno.test("check daemon: CAP_SYS_RAWIO present, missing, extra capabilities", () => {
  const found = (capEff: string) =>
    daemonFindings({
      kind: "found",
      socket: "/s",
      pid: 42,
      features: 0,
      status: STATUS(capEff),
      userName: "root",
    });
  assert.equal(checkExitStatus(found("0000000000020000")), 0);
  const missing = only(found("0000000000000000"), "fail");
  assert.match(missing.message, /pid 42\) runs without CAP_SYS_RAWIO/);
  assert.match(missing.fix!, /AmbientCapabilities=CAP_SYS_RAWIO/);
  assert.match(only(found("000001ffffffffff"), "warn").message, /beyond CAP_SYS_RAWIO/);
  const gone = daemonFindings({
    kind: "unreachable",
    socket: "/s",
    code: "ECONNREFUSED",
    message: "x",
  });
  assert.match(only(gone, "fail").fix!, /stale socket/);
});

function st(mode: number, uid: number, gid: number, kind: FileStat["kind"] = "socket"): FileStat {
  return { kind, mode, uid, gid, rdevMajor: 0, rdevMinor: 0, dev: 0n, ino: 0n, nlink: 1, size: 0n };
}

Deno.test("check socket: can the QEMU user connect", () => {
  const qemu = { name: "qemu", uid: 107, gids: [107, 36] };
  const dirs = [{ path: "/", stat: st(0o40755, 0, 0, "directory") }, {
    path: "/run",
    stat: st(0o40755, 0, 0, "directory"),
  }];
  const probe = (sock: FileStat, d = dirs) => ({
    kind: "stat" as const,
    path: "/run/prhelperd.sock",
    stat: sock,
    dirs: d,
    users: [qemu],
    kvmGroup: { gid: 36 },
  });
  const closed = only(socketFindings(probe(st(0o140755, 0, 0))), "fail");
  assert.match(closed.message, /user qemu .* cannot connect .*mode 0755 owner 0 group 0/);
  assert.match(closed.fix!, /SocketGroup=kvm/);
  assert.equal(only(socketFindings(probe(st(0o140660, 0, 36))), "ok").status, "ok");
  const hidden = socketFindings(probe(st(0o140666, 0, 0), [...dirs, {
    path: "/run/x",
    stat: st(0o40700, 0, 0, "directory"),
  }]));
  assert.match(only(hidden, "fail").message, /no search permission on \/run\/x/);
  assert.equal(
    modeAllows({ mode: 0o600, uid: 5, gid: 5 }, { name: "r", uid: 0, gids: [] }, 2),
    true,
  );
  assert.deepEqual(groupsOf("kvm:x:36:qemu,libvirt-qemu\ndisk:x:6:\nqemu:x:107:\n", "qemu"), [36]);
});

Deno.test("check args and report", () => {
  assert.equal(parseCheckArgs([]).kind, "exit");
  const p = parseCheckArgs(["/dev/sdb", "--socket=/s", "--as", "ctx", "--json"]);
  assert.deepEqual(p.kind === "run" && p.options, {
    device: "/dev/sdb",
    socket: "/s",
    as: "ctx",
    json: true,
    timeoutMs: 10_000,
  });
  assert.equal(parseCheckArgs(["a", "b"]).kind, "exit");
  assert.equal(parseCheckArgs(["--bogus", "a"]).kind, "exit");
  const text = formatFindings("/dev/x", [
    { area: "device", status: "fail", message: "bad", fix: "do this" },
    { area: "pr", status: "warn", message: "meh" },
  ]);
  assert.equal(
    text,
    "prhelperd check /dev/x\n[FAIL] device: bad\n       fix: do this\n[WARN] pr: meh\nresult: 1 problem found\n",
  );
});

async function check(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(DENO, {
    args: ["run", "-P=daemon", "--no-prompt", MAIN, "check", ...args],
    stdout: "piped",
    stderr: "piped",
    env: { RUST_BACKTRACE: "0", NO_COLOR: "1" },
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

Deno.test("check on this host: /dev/null, a regular file, a missing path", async () => {
  const n = await check(["/dev/null"]);
  assert.equal(n.code, 1, n.stderr);
  assert.match(
    n.stdout,
    /\[FAIL\] device: \/dev\/null \(1:3\) is a character device but not a SCSI generic \(sg\) node/,
  );
  assert.match(n.stdout, /\[SKIP\] pr: PR support not checked/);
  assert.match(n.stdout, /result: 1 problem found/);
  using dir = new TempDir();
  Deno.writeTextFileSync(dir.join("disk.img"), "not a disk");
  const f = await check([dir.join("disk.img"), "--json"]);
  assert.equal(f.code, 1);
  const doc = JSON.parse(f.stdout);
  assert.equal(doc.exitStatus, 1);
  assert.match(doc.findings[0].message, /disk\.img is a regular file, not a device/);
  assert.match(doc.findings[0].fix, /device='lun'/);
  const m = await check([dir.join("missing")]);
  assert.equal(m.code, 1);
  assert.match(m.stdout, /missing does not exist/);
});

Deno.test("check with a daemon: it reports the daemon's user and CAP_SYS_RAWIO", async () => {
  await using daemon = await startDaemon();
  const r = await check(["/dev/null", "--socket", daemon.socket]);
  assert.match(r.stdout, new RegExp(`\\[INFO\\] daemon: helper at .*: pid ${daemon.pid} `));
  const rawio =
    (await Deno.readTextFile(`/proc/${daemon.pid}/status`)).match(/^CapEff:\s*(\w+)/m)![1];
  const has = (BigInt(`0x${rawio}`) & (1n << 17n)) !== 0n;
  assert.match(
    r.stdout,
    has
      ? /\[ OK \] daemon: the daemon has CAP_SYS_RAWIO/
      : /\[FAIL\] daemon: .* without CAP_SYS_RAWIO/,
  );
  assert.match(r.stdout, /\[(INFO|OK|FAIL) ?\] socket: /);
});

const CAN_SETPRIV = Deno.uid() === 0 &&
  new Deno.Command("sh", { args: ["-c", "command -v setpriv"], stdout: "null" }).outputSync()
    .success;

Deno.test({
  name: "check flags a daemon started without CAP_SYS_RAWIO",
  ignore: !CAN_SETPRIV,
  async fn() {
    using dir = new TempDir();
    const socket = dir.join("norawio.sock");
    const proc = Subprocess.spawn(
      [
        "setpriv",
        "--inh-caps=-all",
        "--bounding-set=-sys_rawio",
        DENO,
        "run",
        "-P=daemon",
        "--no-prompt",
        MAIN,
        "-k",
        socket,
      ],
      { logFile: dir.join("daemon.log") },
    );
    await using daemon = new TestDaemon(proc, socket, new TempDir());
    await waitReady(daemon);
    const r = await check(["/dev/null", "--socket", socket]);
    assert.equal(r.code, 1);
    assert.match(
      r.stdout,
      new RegExp(
        `\\[FAIL\\] daemon: the daemon \\(pid ${daemon.pid}\\) runs without CAP_SYS_RAWIO`,
      ),
    );
    assert.match(r.stdout, /fix: start prhelperd as root/);
    assert.match(r.stdout, /result: 2 problems found/);
  },
});
