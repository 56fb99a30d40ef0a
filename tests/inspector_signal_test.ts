/**
 * SIGUSR1 must not open Deno's V8 inspector (Deno >= 2.9.2 starts it on
 * 127.0.0.1:9229 when the signal arrives): the daemon holds CAP_SYS_RAWIO and
 * an inspector is code execution for anyone who can connect to it.
 */

import assert from "node:assert/strict";
import { readSmallFile } from "../ffi/libc.ts";
import { sleep, startDaemon } from "./helpers/daemon.ts";
import { connectGreeted, roundTrip, senseOf } from "./helpers/protocol.ts";
import { closeFd, O_RDONLY, openPath } from "../ffi/libc.ts";
import { prInCdb } from "../src/cdb.ts";

function listensOnTcp(pid: number): boolean {
  // the daemon's socket inodes vs the kernel's TCP listen table
  const tcp = (readSmallFile("/proc/net/tcp", 1 << 20) ?? "") +
    (readSmallFile("/proc/net/tcp6", 1 << 20) ?? "");
  const listening = new Set(
    tcp.split("\n").slice(1).map((l) => l.trim().split(/\s+/)).filter((f) => f[3] === "0A").map((
      f,
    ) => f[9]),
  );
  for (const entry of Deno.readDirSync(`/proc/${pid}/fd`)) {
    let target: string;
    try {
      target = Deno.readLinkSync(`/proc/${pid}/fd/${entry.name}`);
    } catch {
      continue;
    }
    const m = target.match(/^socket:\[(\d+)\]$/);
    if (m && listening.has(m[1])) return true;
  }
  return false;
}

Deno.test("daemon: SIGUSR1 neither opens the V8 inspector nor stops the daemon", async () => {
  await using d = await startDaemon({ args: ["-q"] });
  // past Deno's 500 ms grace period, after which it installs its SIGUSR1 handler
  await sleep(1500);
  for (let i = 0; i < 3; i++) {
    d.proc.signal("SIGUSR1");
    await sleep(200);
  }
  assert.doesNotMatch(d.stderr(), /Debugger listening/);
  assert.equal(listensOnTcp(d.pid), false, "the daemon listens on a TCP port");
  const { conn } = connectGreeted(d.socket);
  const fd = openPath("/dev/null", O_RDONLY);
  try {
    assert.equal(senseOf(roundTrip(conn, prInCdb(0, 8192), [fd])), "05/20/00");
  } finally {
    closeFd(fd);
    conn.close();
  }
  assert.equal((await d.stop()).code, 0);
});
