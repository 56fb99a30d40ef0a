/**
 * Which fds reach SG_IO: decideDevice (pure, every branch) and probeDevice on
 * the kinds of fd the host has (/dev/null, a regular file, a pipe, a socket,
 * a directory, a non-SCSI block device when one can be opened).
 */

import assert from "node:assert/strict";
import {
  closeFd,
  fstatFd,
  O_DIRECTORY,
  O_PATH,
  O_RDONLY,
  O_RDWR,
  openPath,
  statxFd,
} from "../ffi/files.ts";
import { decideDevice, type DeviceFacts, probeDevice } from "../src/device_check.ts";
import { formatSense, Sense } from "../src/sense.ts";
import { FdSet } from "./helpers/protocol.ts";
import { TempDir } from "./helpers/daemon.ts";

function facts(over: Partial<DeviceFacts>): DeviceFacts {
  return {
    kind: "block",
    major: 8,
    minor: 0,
    readOnly: false,
    partition: false,
    scsi: true,
    dmUuid: null,
    ...over,
  };
}

function refusedWith(f: DeviceFacts, reason: RegExp): void {
  const d = decideDevice(f);
  assert.equal(d.ok, false, `expected a refusal for ${JSON.stringify(f)}`);
  if (!d.ok) {
    assert.match(d.reason, reason);
    assert.equal(formatSense(d.sense), "05/20/00");
  }
}

Deno.test("decideDevice: whole SCSI disk and sg char device are allowed", () => {
  assert.deepEqual(decideDevice(facts({})), {
    ok: true,
    deviceClass: "scsi-disk",
    fileClass: "blk_file",
  });
  assert.deepEqual(decideDevice(facts({ kind: "char", major: 21, minor: 3 })), {
    ok: true,
    deviceClass: "scsi-generic",
    fileClass: "chr_file",
  });
  // read-only does not change the device decision (PR OUT is refused later)
  assert.equal(decideDevice(facts({ readOnly: true })).ok, true);
});

Deno.test("decideDevice: multipath dm is allowed, other dm refused", () => {
  assert.deepEqual(decideDevice(facts({ major: 253, dmUuid: "mpath-3600140512345" })), {
    ok: true,
    deviceClass: "multipath",
    fileClass: "blk_file",
  });
  refusedWith(
    facts({ major: 253, minor: 4, dmUuid: "LVM-abc" }),
    /253:4 .*device-mapper.*not multipath/,
  );
  refusedWith(facts({ major: 253, dmUuid: "" }), /device-mapper/);
  // a dm uuid wins over scsi/partition flags
  refusedWith(facts({ major: 253, dmUuid: "CRYPT-x", scsi: true }), /not multipath/);
});

Deno.test("decideDevice: partitions and non-SCSI devices are refused with 05/20/00", () => {
  refusedWith(facts({ minor: 1, partition: true }), /8:1 is a partition/);
  refusedWith(facts({ major: 254, scsi: false }), /254:0 is not a SCSI device/);
  refusedWith(
    facts({ kind: "char", major: 1, minor: 3, scsi: false }),
    /1:3 is not a SCSI generic/,
  );
});

Deno.test("decideDevice: files, pipes, sockets, directories, unknown are refused", () => {
  for (
    const [kind, re] of [
      ["regular", /fd is a regular, not a device/],
      ["fifo", /fd is a fifo/],
      ["socket", /fd is a socket/],
      ["directory", /fd is a directory/],
      ["symlink", /fd is a symlink/],
      ["unknown", /file of unknown type/],
    ] as const
  ) {
    refusedWith(facts({ kind, major: 0, minor: 0, scsi: false }), re);
  }
});

Deno.test("probeDevice: host fds", () => {
  using dir = new TempDir();
  using fds = new FdSet(dir.path);
  const p = (k: Parameters<FdSet["get"]>[0]) => probeDevice(fds.get(k));
  const devnull = p("/dev/null");
  assert.deepEqual(
    [devnull.kind, devnull.major, devnull.minor, devnull.scsi, devnull.readOnly],
    ["char", 1, 3, false, false],
  );
  assert.equal(p("/dev/null (read-only)").readOnly, true);
  assert.equal(p("regular file").kind, "regular");
  assert.equal(p("regular file").readOnly, false);
  assert.equal(p("regular file (read-only)").readOnly, true);
  assert.equal(p("pipe (read end)").kind, "fifo");
  assert.equal(p("pipe (read end)").readOnly, true);
  assert.equal(p("pipe (write end)").readOnly, false);
  assert.equal(p("socket").kind, "socket");
  assert.equal(p("directory").kind, "directory");
  for (const kind of fds.fds.keys()) {
    const f = p(kind);
    assert.equal(f.partition, false, kind);
    assert.equal(f.dmUuid, null, kind);
    assert.equal(decideDevice(f).ok, false, `${kind} must be refused`);
  }
});

Deno.test("probeDevice: a non-SCSI block device (loop) is not SCSI and refused", {
  ignore: !canOpen("/dev/loop0"),
}, () => {
  const fd = openPath("/dev/loop0", O_RDONLY);
  try {
    const f = probeDevice(fd);
    assert.equal(f.kind, "block");
    assert.equal(f.major, 7);
    assert.equal(f.scsi, false);
    assert.equal(f.partition, false);
    const d = decideDevice(f);
    assert.equal(d.ok, false);
    if (!d.ok) assert.match(d.reason, /7:0 is not a SCSI device/);
  } finally {
    closeFd(fd);
  }
});

Deno.test("probeDevice: a closed fd throws (the handler turns it into a reply)", () => {
  const fd = openPath("/dev/null", O_RDONLY);
  closeFd(fd);
  assert.throws(() => probeDevice(fd), /EBADF|fstat/);
});

function canOpen(path: string): boolean {
  try {
    closeFd(openPath(path, O_RDONLY));
    return true;
  } catch {
    return false;
  }
}

Deno.test("decideDevice: a device removed while a client held its fd gets ENODEV's reply (04/44/00)", () => {
  for (const kind of ["block", "char"] as const) {
    const d = decideDevice(facts({ kind, present: false }));
    assert.equal(d.ok, false);
    if (!d.ok) {
      assert.deepEqual(d.sense, Sense.TARGET_FAILURE);
      assert.match(d.reason, /no longer exists/);
    }
  }
  assert.equal(decideDevice(facts({ present: true })).ok, true);
});

Deno.test("decideDevice (14.2): an O_PATH fd is refused 05/20/00 whatever it names", () => {
  // what probeDevice reports for an O_PATH fd of a whole SCSI disk, an sg
  // node or a multipath map: each would pass without the O_PATH flag
  for (
    const f of [
      facts({ pathOnly: true, readOnly: true }),
      facts({ kind: "char", major: 21, pathOnly: true, readOnly: true }),
      facts({ major: 253, dmUuid: "mpath-3600140512345", pathOnly: true, readOnly: true }),
    ]
  ) {
    assert.equal(decideDevice({ ...f, pathOnly: false }).ok, true);
    refusedWith(f, /O_PATH/);
  }
});

Deno.test("probeDevice (14.2): an fd opened O_PATH is seen as such and refused", () => {
  using dir = new TempDir();
  Deno.writeTextFileSync(dir.join("file"), "x");
  for (
    const [path, flags] of [["/dev/null", 0], [dir.join("file"), 0], [
      dir.path,
      O_DIRECTORY,
    ]] as const
  ) {
    const fd = openPath(path, O_PATH | flags);
    try {
      const f = probeDevice(fd);
      assert.equal(f.pathOnly, true, path);
      const d = decideDevice(f);
      assert.equal(d.ok, false, path);
      if (!d.ok) {
        assert.match(d.reason, /O_PATH/, path);
        assert.equal(formatSense(d.sense), "05/20/00");
      }
    } finally {
      closeFd(fd);
    }
  }
  // an ordinary fd of the same node is not O_PATH
  const plain = openPath("/dev/null", O_RDWR);
  try {
    assert.equal(probeDevice(plain).pathOnly, false);
  } finally {
    closeFd(plain);
  }
});

Deno.test("statxFd (14.3): the same type and numbers as fstat, also on O_PATH fds", () => {
  using dir = new TempDir();
  using fds = new FdSet(dir.path);
  const fd = openPath("/dev/null", O_PATH);
  try {
    for (const f of [...fds.fds.values(), fd]) {
      const a = statxFd(f);
      const b = fstatFd(f);
      assert.deepEqual(
        [a.kind, a.mode, a.rdevMajor, a.rdevMinor, a.dev, a.ino, a.uid, a.gid, a.nlink],
        [b.kind, b.mode, b.rdevMajor, b.rdevMinor, b.dev, b.ino, b.uid, b.gid, b.nlink],
      );
      if (a.kind === "regular") assert.equal(a.size, b.size);
    }
  } finally {
    closeFd(fd);
  }
  assert.throws(() => statxFd(fd), /statx\(\d+\) failed: EBADF/);
});
