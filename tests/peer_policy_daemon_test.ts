// The peer policy and the SELinux start-up line in a running daemon
// (subprocess): an unlisted uid is disconnected before the greeting and
// logged; a listed one gets the greeting.

import assert from "node:assert/strict";
import { startDaemon } from "./helpers/daemon.ts";

/** Connect, read until EOF or 4 bytes; returns what arrived. */
async function greeting(path: string): Promise<Uint8Array> {
  const conn = await Deno.connect({ transport: "unix", path });
  try {
    const buf = new Uint8Array(4);
    let n = 0;
    while (n < 4) {
      const got = await conn.read(buf.subarray(n));
      if (got === null) break;
      n += got;
    }
    return buf.subarray(0, n);
  } finally {
    conn.close();
  }
}

async function waitLog(stderr: () => string, re: RegExp): Promise<string> {
  for (let i = 0; i < 2400; i++) {
    const m = stderr().match(re);
    if (m) return m[0];
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`no log line matching ${re} in:\n${stderr()}`);
}

const isRoot = Deno.uid() === 0;

Deno.test({
  name: "daemon: a uid not allowed by --allow-user is refused before the greeting, with a log line",
  ignore: !isRoot, // the test client must be root for --refuse-root to bite
  async fn() {
    // the helper's readiness probe wants the greeting, which this policy refuses to root
    await using d = await startDaemon({
      args: ["--allow-user", "12345", "--refuse-root", "-v"],
      waitReady: false,
    });
    await waitLog(() => d.stderr(), /listening on/);
    await waitLog(() => d.stderr(), /peer policy: uids 12345; gids -; root refused unless listed/);
    const got = await greeting(d.socket);
    assert.equal(got.length, 0, "refused peer must not get the greeting");
    const line = await waitLog(
      () => d.stderr(),
      /refusing connection \d+: peer policy: uid 0 gid 0 is not allowed.*/,
    );
    assert.match(line, new RegExp(`pid=${Deno.pid} uid=0 gid=0`));
  },
});

Deno.test({
  name: "daemon: a listed uid (by name) gets the greeting; SELinux check reported off",
  ignore: !isRoot,
  async fn() {
    await using d = await startDaemon({ args: ["--allow-user", "nobody,root", "--refuse-root"] });
    assert.deepEqual([...await greeting(d.socket)], [0, 0, 0, 0]);
    await waitLog(() => d.stderr(), /SELinux access check: off: SELinux disabled/);
  },
});

Deno.test("daemon: an unknown --allow-user name stops start-up and names it", async () => {
  await using d = await startDaemon({
    args: ["--allow-user", "no-such-user-prhelperd"],
    waitReady: false,
  });
  const status = await d.proc.wait();
  assert.notEqual(status.code, 0);
  assert.match(d.stderr(), /unknown user "no-such-user-prhelperd"/);
});

Deno.test({
  name: "daemon: --selinux=require refuses to start where SELinux is off",
  ignore: (() => {
    try {
      Deno.statSync("/sys/fs/selinux/enforce");
      return true;
    } catch {
      return false;
    }
  })(),
  async fn() {
    await using d = await startDaemon({ args: ["--selinux", "require"], waitReady: false });
    const status = await d.proc.wait();
    assert.notEqual(status.code, 0);
    assert.match(d.stderr(), /SELinux access check required but not possible: SELinux disabled/);
  },
});
