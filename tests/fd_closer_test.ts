/**
 * Finding 14.3 (one fd stalls the whole daemon): the fd closer. The ring
 * (pure, on shared words), the closer Worker closing what it is handed, and,
 * against a FUSE server that never answers FLUSH, a closer stuck in close(2)
 * that never makes its caller wait: fds queue (counted) and are all closed,
 * each once, when the blocked close returns. Also: the Debian package ships
 * the closer Worker as fd_closer_worker.js and it loads there.
 */

import assert from "node:assert/strict";
import { closeFd, isOpenFd, O_RDONLY, openPath } from "../ffi/files.ts";
import { FdCloser } from "../src/fd_closer.ts";
import {
  createRing,
  ringCapacity,
  ringLength,
  ringPush,
  ringStop,
  ringStopped,
  ringTake,
  RingWord,
} from "../src/fd_closer_ring.ts";
import { exists, REPO, sleep, TempDir, unpackPackage, waitFor } from "./helpers/daemon.ts";
import { FuseStall, fuseUnavailable } from "./helpers/fuse_stall.ts";

Deno.test("fd closer ring: FIFO, bounded, and right across the int32 wrap of its counts", () => {
  assert.throws(() => createRing(3), /ring capacity 3 must be a power of two/);
  const words = createRing(4);
  assert.equal(ringCapacity(words), 4);
  // start just below the wrap so the counts cross it
  Atomics.store(words, RingWord.HEAD, 0x7ffffffe);
  Atomics.store(words, RingWord.TAIL, 0x7ffffffe);
  let next = 100;
  let expect = 100;
  for (let round = 0; round < 5; round++) {
    for (let i = 0; i < 4; i++) assert.ok(ringPush(words, next++));
    assert.equal(ringPush(words, 999), false, "a full ring refuses");
    assert.equal(ringLength(words), 4);
    for (let i = 0; i < 3; i++) assert.deepEqual(ringTake(words), { fd: expect++ });
    assert.ok(ringPush(words, next++));
    for (let i = 0; i < 2; i++) assert.deepEqual(ringTake(words), { fd: expect++ });
    assert.equal(ringLength(words), 0);
    const empty = ringTake(words);
    assert.equal(empty.fd, null);
  }
  assert.ok(Atomics.load(words, RingWord.HEAD) < 0, "the counts wrapped");
});

Deno.test("fd closer ring: every hand-over and the stop change the wake-up sequence", () => {
  const words = createRing(2);
  const empty = ringTake(words);
  assert.equal(empty.fd, null);
  const seq = empty.fd === null ? empty.seq : -1;
  ringPush(words, 5);
  assert.notEqual(Atomics.load(words, RingWord.SEQ), seq, "a consumer waiting on seq wakes");
  ringTake(words);
  const again = ringTake(words);
  assert.equal(ringStopped(words), false);
  ringStop(words);
  assert.ok(ringStopped(words));
  assert.notEqual(Atomics.load(words, RingWord.SEQ), again.fd === null ? again.seq : -1);
});

Deno.test("fd closer: closes every fd it is handed, off this thread, then stops", async () => {
  const closer = new FdCloser({ capacity: 4 });
  const fds = Array.from({ length: 20 }, () => openPath("/dev/null", O_RDONLY));
  try {
    for (const fd of fds) closer.close(fd);
    await waitFor(() => fds.every((fd) => !isOpenFd(fd)), { what: "the closer to close them" });
    assert.equal(closer.stats.handed, 20);
    assert.equal(closer.pending, 0);
  } finally {
    closer.stop();
    // stopped: later hand-overs are closed at once, here
    const late = openPath("/dev/null", O_RDONLY);
    closer.close(late);
    assert.equal(isOpenFd(late), false);
    for (const fd of fds) if (isOpenFd(fd)) closeFd(fd);
  }
  await sleep(50); // let the Worker see the stop and exit
});

Deno.test({
  name: "fd closer: a close(2) that blocks (FUSE FLUSH never answered) never blocks the caller",
  ignore: fuseUnavailable() !== null,
  fn: async () => {
    await using fuse = await FuseStall.start();
    const closer = new FdCloser({ capacity: 2 });
    const others = Array.from({ length: 6 }, () => openPath("/dev/null", O_RDONLY));
    try {
      closer.close(fuse.open({ give: true }));
      await waitFor(() => fuse.events().some((e) => e.what === "FLUSH"), {
        what: "the closer Worker to be inside close(2) of the FUSE file",
      });
      // stuck: the ring (2) fills, the rest wait; none of these calls blocks
      for (const fd of others) closer.close(fd);
      const stuck = closer.stats;
      assert.equal(stuck.queued, 2, JSON.stringify(stuck));
      assert.equal(stuck.waiting, 4, JSON.stringify(stuck));
      assert.equal(stuck.overflows, 1);
      assert.ok(others.every((fd) => isOpenFd(fd)), "nothing behind the blocked close was closed");
      await fuse.stop(); // the FLUSH fails, the close returns
      await waitFor(() => others.every((fd) => !isOpenFd(fd)), {
        what: "the queued fds to be closed once the blocked close returned",
      });
      assert.equal(closer.pending, 0);
      assert.equal(closer.stats.handed, 7);
    } finally {
      await fuse.stop();
      closer.stop();
      for (const fd of others) if (isOpenFd(fd)) closeFd(fd);
    }
    await sleep(50);
  },
});

/** The unpacked package's library directory, if `deno task deb` has been run. */
function unpackedLibDir(dir: TempDir): string | null {
  const root = unpackPackage(dir);
  if (root === null) return null;
  const lib = `${root}/usr/lib/prhelperd`;
  return exists(`${lib}/prhelperd.js`) ? lib : null; // a compiled package has no bundle
}

Deno.test({
  name: "package: the bundle loads its fd closer Worker as fd_closer_worker.js, which loads",
  ignore: !exists(`${REPO}/dist`),
  fn: async () => {
    using dir = new TempDir();
    const lib = unpackedLibDir(dir);
    if (lib === null) return;
    assert.match(Deno.readTextFileSync(`${lib}/prhelperd.js`), /"\.\/fd_closer_worker\.js"/);
    const script = dir.join("closer_probe.js");
    Deno.writeTextFileSync(
      script,
      `const w = new Worker(new URL("./fd_closer_worker.js", "file://${lib}/prhelperd.js"), { type: "module" });
w.onerror = (e) => { e.preventDefault(); console.log("ERROR " + e.message); Deno.exit(1); };
w.onmessage = () => { console.log("LOADED"); Deno.exit(0); };
w.postMessage(new SharedArrayBuffer(4 * 8));
setTimeout(() => { console.log("TIMEOUT"); Deno.exit(1); }, 10000);`,
    );
    const launcher = Deno.readTextFileSync(dir.join("root/usr/bin/prhelperd"));
    const ffi = launcher.match(/"--allow-ffi=([^"]+)"/)?.[1];
    assert.ok(ffi, "no --allow-ffi in the launcher");
    const out = await new Deno.Command(`${lib}/deno`, {
      args: ["run", "--no-config", `--allow-ffi=${ffi}`, `--allow-read=${lib}`, script],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
    assert.equal(out.code, 0, text);
    assert.match(text, /LOADED/);
  },
});
