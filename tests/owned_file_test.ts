/**
 * Issue 14, finding 14.7 (the lock file and the pidfile follow symlinks as
 * root): a symlink planted at `SOCK.lock` or at the pidfile path, pointing at
 * a victim file, must make start-up fail with a clear message and leave the
 * victim as it was; so must a hard link, and a file owned by another user. A
 * stale pidfile of our own is still reused.
 */

import assert from "node:assert/strict";
import { ownedFileProblem } from "../src/owned_file.ts";
import { exists, runDaemonToExit, startDaemon, TempDir } from "./helpers/daemon.ts";

const isRoot = Deno.uid() === 0;
const VICTIM_TEXT = "root:precious:19000:0:99999:7:::\n";

/** A victim file with known content and mode; returns a check that it is unchanged. */
function plantVictim(path: string): () => void {
  Deno.writeTextFileSync(path, VICTIM_TEXT);
  Deno.chmodSync(path, 0o640);
  const before = Deno.statSync(path);
  return () => {
    assert.equal(Deno.readTextFileSync(path), VICTIM_TEXT, `${path} was written`);
    const after = Deno.statSync(path);
    assert.equal(after.mode! & 0o7777, 0o640, `${path} changed mode`);
    assert.equal(after.size, before.size);
    assert.equal(after.mtime?.getTime(), before.mtime?.getTime(), `${path} was touched`);
  };
}

Deno.test("14.7 owned file: what may be used as the daemon's own file (pure)", () => {
  assert.equal(ownedFileProblem({ kind: "regular", uid: 0, nlink: 1 }, 0), null);
  assert.match(ownedFileProblem({ kind: "regular", uid: 0, nlink: 2 }, 0)!, /2 hard links/);
  assert.match(ownedFileProblem({ kind: "regular", uid: 1000, nlink: 1 }, 0)!, /owned by uid 1000/);
  assert.match(ownedFileProblem({ kind: "fifo", uid: 0, nlink: 1 }, 0)!, /a fifo, not a regular/);
  assert.match(ownedFileProblem({ kind: "char", uid: 0, nlink: 1 }, 0)!, /a char/);
});

Deno.test("14.7 daemon: a symlink at SOCK.lock is refused; its target is neither created nor touched", async () => {
  using dir = new TempDir();
  const sock = dir.join("prh.sock");
  const check = plantVictim(dir.join("shadow"));
  Deno.symlinkSync(dir.join("shadow"), `${sock}.lock`);
  // a dangling one: O_CREAT through it would create the target
  const sock2 = dir.join("prh2.sock");
  Deno.symlinkSync(dir.join("created-by-root"), `${sock2}.lock`);

  const r = await runDaemonToExit(["-k", sock]);
  assert.equal(r.code, 1, r.output);
  assert.match(r.output, /lock file .*prh\.sock\.lock is a symbolic link; refusing to follow it/);
  check();
  assert.equal(exists(sock), false, "the socket was created anyway");
  assert.ok(Deno.lstatSync(`${sock}.lock`).isSymlink, "the planted symlink was replaced");

  const r2 = await runDaemonToExit(["-k", sock2]);
  assert.equal(r2.code, 1, r2.output);
  assert.match(r2.output, /is a symbolic link/);
  assert.equal(exists(dir.join("created-by-root")), false, "the symlink's target was created");
});

Deno.test("14.7 daemon: a symlink or a hard link at the pidfile path is refused; the victim is unchanged", async () => {
  using dir = new TempDir();
  const check = plantVictim(dir.join("shadow"));
  const pidSym = dir.join("sym.pid");
  Deno.symlinkSync(dir.join("shadow"), pidSym);
  const r = await runDaemonToExit(["-k", dir.join("a.sock"), "-f", pidSym]);
  assert.equal(r.code, 1, r.output);
  assert.match(r.output, /pidfile .*sym\.pid is a symbolic link; refusing to follow it/);
  check();
  // the socket and its lock, made before the pidfile, are cleaned up
  assert.equal(exists(dir.join("a.sock")), false);
  assert.equal(exists(dir.join("a.sock.lock")), false);

  const pidLink = dir.join("link.pid");
  Deno.linkSync(dir.join("shadow"), pidLink);
  const r2 = await runDaemonToExit(["-k", dir.join("b.sock"), "-f", pidLink]);
  assert.equal(r2.code, 1, r2.output);
  assert.match(r2.output, /refusing pidfile .*link\.pid: it has 2 hard links/);
  check();

  // the same hard link at the lock file path
  Deno.linkSync(dir.join("shadow"), dir.join("c.sock.lock"));
  const r3 = await runDaemonToExit(["-k", dir.join("c.sock")]);
  assert.equal(r3.code, 1, r3.output);
  assert.match(r3.output, /refusing lock file .*c\.sock\.lock: it has 3 hard links/);
  check();
});

Deno.test({
  name: "14.7 daemon: a pidfile owned by another user is refused, a stale one of ours is reused",
  ignore: !isRoot,
  async fn() {
    using dir = new TempDir();
    const theirs = dir.join("theirs.pid");
    Deno.writeTextFileSync(theirs, "4242\n");
    Deno.chownSync(theirs, 65534, 65534);
    const r = await runDaemonToExit(["-k", dir.join("a.sock"), "-f", theirs]);
    assert.equal(r.code, 1, r.output);
    assert.match(
      r.output,
      /refusing pidfile .*theirs\.pid: it is owned by uid 65534, not by uid 0/,
    );
    assert.equal(Deno.readTextFileSync(theirs), "4242\n");

    const stale = dir.join("stale.pid");
    Deno.writeTextFileSync(stale, "999999\n");
    await using d = await startDaemon({ args: ["-f", stale] });
    assert.equal(Deno.readTextFileSync(stale).trim(), String(d.pid));
    assert.equal((await d.stop()).code, 0, d.stderr());
    assert.equal(exists(stale), false, "pidfile not removed on exit");
  },
});
