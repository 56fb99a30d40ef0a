/**
 * Issue 14, finding 14.8 (without -u the daemon stays uid 0): started as root
 * without -u, as libvirt's managed mode starts it (`prhelperd -k SOCK`), the
 * daemon switches to the `prhelperd` system user when that user exists (the
 * package creates it), keeping only CAP_SYS_RAWIO; `-u root` keeps uid 0; and
 * where no such user exists it stays uid 0, as qemu-pr-helper does.
 *
 * The host must not get a `prhelperd` user for this, so each daemon runs in a
 * private mount namespace (`unshare -m`) where /etc/passwd is a bind-mounted
 * copy with (or without) the user. The daemon itself runs unchanged, without
 * any test option: the default path is what is tested. Root only.
 */

import assert from "node:assert/strict";
import { closeFd, O_RDONLY, openPath } from "../ffi/files.ts";
import { PR_IN } from "../src/wire.ts";
import { parseStatus } from "../src/security/privileges.ts";
import { daemonCommand, Subprocess, TempDir, TestDaemon, waitReady } from "./helpers/daemon.ts";
import { connectGreeted, roundTrip, senseOf, wireCdb } from "./helpers/protocol.ts";

const isRoot = Deno.uid() === 0;
const hasUnshare = (() => {
  try {
    return Deno.statSync("/usr/bin/unshare").isFile;
  } catch {
    return false;
  }
})();
const RAWIO = 1n << 17n;
/** The uid/gid the test's `prhelperd` user gets (unused on the host). */
const TEST_ID = 64123;

/** /etc/passwd as the host has it, with or without a `prhelperd` entry. */
function passwdCopy(dir: TempDir, withUser: boolean): string {
  const lines = Deno.readTextFileSync("/etc/passwd").split("\n")
    .filter((l) => l !== "" && !l.startsWith("prhelperd:"));
  if (withUser) {
    lines.push(`prhelperd:x:${TEST_ID}:${TEST_ID}:prhelperd (test):/nonexistent:/usr/sbin/nologin`);
  }
  const path = dir.join(withUser ? "passwd.with" : "passwd.without");
  Deno.writeTextFileSync(path, lines.join("\n") + "\n");
  Deno.chmodSync(path, 0o644);
  return path;
}

/** Start the daemon as root in a mount namespace whose /etc/passwd is `passwd`. */
async function startWithPasswd(
  dir: TempDir,
  passwd: string,
  args: string[],
): Promise<TestDaemon> {
  const sock = dir.join(`prh-${crypto.randomUUID().slice(0, 8)}.sock`);
  const proc = Subprocess.spawn([
    "unshare",
    "-m",
    "--propagation",
    "private",
    "sh",
    "-c",
    'mount --bind "$0" /etc/passwd && exec "$@"',
    passwd,
    ...daemonCommand(["-k", sock, ...args]),
  ], { logFile: dir.join(`log-${crypto.randomUUID().slice(0, 8)}`) });
  const d = new TestDaemon(proc, sock, dir);
  await waitReady(d);
  return d;
}

/** Every thread: these ids, no groups, exactly CAP_SYS_RAWIO, empty bounding set. */
function assertThreads(pid: number, id: number): void {
  const threads = [...Deno.readDirSync(`/proc/${pid}/task`)].map((e) => ({
    tid: e.name,
    ...parseStatus(Deno.readTextFileSync(`/proc/${pid}/task/${e.name}/status`)),
  }));
  assert.ok(threads.length >= 5, `only ${threads.length} threads`);
  for (const t of threads) {
    const where = `thread ${t.tid} (${t.name})`;
    assert.deepEqual(t.uid, [id, id, id, id], `Uid of ${where}`);
    assert.deepEqual(t.gid, [id, id, id, id], `Gid of ${where}`);
    assert.deepEqual(t.groups, [], `Groups of ${where}`);
    assert.equal(t.capEff, RAWIO, `CapEff of ${where}`);
    assert.equal(t.capPrm, RAWIO, `CapPrm of ${where}`);
    assert.equal(t.capBnd, 0n, `CapBnd of ${where}`);
    assert.equal(t.noNewPrivs, true, `NoNewPrivs of ${where}`);
  }
}

/** The daemon answers a request (so it still works after the switch). */
function assertServes(socket: string): void {
  const { conn } = connectGreeted(socket);
  const fd = openPath("/dev/null", O_RDONLY);
  try {
    assert.equal(senseOf(roundTrip(conn, wireCdb(PR_IN, 8192), [fd])), "05/20/00");
  } finally {
    closeFd(fd);
    conn.close();
  }
}

Deno.test({
  name: "14.8 daemon: as root without -u, it switches to the prhelperd user when that user exists",
  ignore: !isRoot || !hasUnshare,
  async fn() {
    using dir = new TempDir();
    Deno.chmodSync(dir.path, 0o755); // the socket's directory, for the switched daemon
    await using d = await startWithPasswd(dir, passwdCopy(dir, true), []);
    assertServes(d.socket);
    assertThreads(d.pid, TEST_ID);
    assert.match(d.stderr(), /no -u given: running as the default user prhelperd/);
    assert.match(
      d.stderr(),
      new RegExp(`running as uid ${TEST_ID} gid ${TEST_ID}, CAP_SYS_RAWIO effective`),
    );
    assert.equal((await d.stop()).code, 0, d.stderr());
  },
});

Deno.test({
  name: "14.8 daemon: -u root keeps uid 0 even where the prhelperd user exists",
  ignore: !isRoot || !hasUnshare,
  async fn() {
    using dir = new TempDir();
    await using d = await startWithPasswd(dir, passwdCopy(dir, true), ["-u", "root"]);
    assertServes(d.socket);
    assertThreads(d.pid, 0);
    assert.doesNotMatch(d.stderr(), /default user/);
    assert.equal((await d.stop()).code, 0, d.stderr());
  },
});

Deno.test({
  name: "14.8 daemon: without a prhelperd user, -k alone keeps uid 0 and says why",
  ignore: !isRoot || !hasUnshare,
  async fn() {
    using dir = new TempDir();
    await using d = await startWithPasswd(dir, passwdCopy(dir, false), []);
    assertServes(d.socket);
    assertThreads(d.pid, 0);
    assert.match(d.stderr(), /no -u given and no "prhelperd" user exists: uid 0 kept/);
    assert.equal((await d.stop()).code, 0, d.stderr());
  },
});
