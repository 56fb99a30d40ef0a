/**
 * Issue 14, finding 14.4 (idle connections hold every slot), against the
 * running daemon: one uid cannot take every slot (the per-uid default is half
 * of --max-connections, so another uid still gets in), and --idle-timeout
 * closes connections that sit between requests, while connections that keep
 * sending requests stay, and a client reconnects afterwards as QEMU does.
 * The per-context limit needs SELinux peer labels; tests/conn_limits_test.ts
 * checks its logic.
 */

import assert from "node:assert/strict";
import { closeFd, O_RDONLY, openPath } from "../ffi/files.ts";
import type { RawConnection } from "../src/client.ts";
import { PR_IN } from "../src/wire.ts";
import { DENO, startDaemon, type TestDaemon, waitFor } from "./helpers/daemon.ts";
import {
  closedByHelper,
  connectGreeted,
  connectRaw,
  roundTrip,
  senseOf,
  wireCdb,
} from "./helpers/protocol.ts";

const isRoot = Deno.uid() === 0;

function waitLog(d: TestDaemon, re: RegExp): Promise<string> {
  return waitFor(() => d.stderr().match(re)?.[0], { what: `log line ${re}` });
}

/** Connect as uid/gid 65534 from another process: "greeted" or "refused" (EOF first). */
async function connectAsNobody(socket: string): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "prh-nobody-" });
  await Deno.chmod(dir, 0o777);
  try {
    const out = await new Deno.Command("setpriv", {
      args: [
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--",
        DENO,
        "eval",
        "--no-config",
        `const c = await Deno.connect({ transport: "unix", path: Deno.env.get("PRH_SOCK") });
         const b = new Uint8Array(4);
         const n = await c.read(b);
         console.log(n === 4 ? "greeted" : "refused");
         c.close();`,
      ],
      cwd: "/",
      env: { PRH_SOCK: socket, DENO_DIR: dir, NO_COLOR: "1" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(out.stdout).trim();
    assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
    return text;
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** A raw connection that got the greeting (true) or was closed before it (false). */
function greeted(conn: RawConnection): boolean {
  try {
    conn.receive(4);
    return true;
  } catch {
    return false;
  }
}

Deno.test({
  name: "14.4 daemon: one uid gets half the slots by default; another uid still gets in",
  ignore: !isRoot,
  async fn() {
    // --max-connections 4: one uid may hold 2 (the default per-uid limit is half)
    await using d = await startDaemon({ args: ["--max-connections", "4"] });
    // let uid 65534 reach the socket
    await Deno.chmod(d.dir.path, 0o755);
    await Deno.chmod(d.socket, 0o666);
    const mine: RawConnection[] = [];
    try {
      for (let i = 0; i < 4; i++) mine.push(connectRaw(d.socket));
      const outcome = mine.map(greeted);
      assert.deepEqual(outcome, [true, true, false, false], "uid 0 got more than its share");
      await waitLog(
        d,
        /refusing connection \d+: uid 0 has 2 connections open \(--max-connections-per-uid 2\)/,
      );
      // the slots uid 0 could not take are there for someone else
      assert.equal(await connectAsNobody(d.socket), "greeted");
      // a slot of uid 0 comes back when one of its connections closes
      mine[0].close();
      const again = await waitFor(() => {
        const c = connectRaw(d.socket);
        if (greeted(c)) return c;
        c.close();
        return null;
      }, { what: "a uid 0 slot after closing one" });
      mine.push(again);
    } finally {
      for (const c of mine) c.close();
    }
    assert.equal((await d.stop()).code, 0, d.stderr());
  },
});

Deno.test("14.4 daemon: --idle-timeout closes idle connections, not active ones; reconnect works", async () => {
  await using d = await startDaemon({ args: ["-v", "--idle-timeout", "1"] });
  const devnull = openPath("/dev/null", O_RDONLY);
  const idle = connectGreeted(d.socket).conn;
  const silent = connectRaw(d.socket); // reads the greeting, never answers it
  silent.receive(4);
  const active = connectGreeted(d.socket).conn;
  try {
    // the active client keeps sending requests, each answered on the same connection,
    // until the idle one has been closed
    let answered = 0;
    while (!idle.peerClosed(0)) {
      assert.equal(senseOf(roundTrip(active, wireCdb(PR_IN, 8192), [devnull])), "05/20/00");
      answered++;
      assert.ok(answered < 400, "the idle connection was never closed");
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.ok(closedByHelper(silent), "a client that never answered the greeting was kept");
    await waitLog(d, /closing connection \d+: idle for 1 s \(--idle-timeout\)/);
    assert.equal(senseOf(roundTrip(active, wireCdb(PR_IN, 8192), [devnull])), "05/20/00");
    // what QEMU does on its next command: connect again, greet, send
    const next = connectGreeted(d.socket).conn;
    assert.equal(senseOf(roundTrip(next, wireCdb(PR_IN, 8192), [devnull])), "05/20/00");
    next.close();
  } finally {
    closeFd(devnull);
    idle.close();
    silent.close();
    active.close();
  }
  assert.equal((await d.stop()).code, 0, d.stderr());
});
