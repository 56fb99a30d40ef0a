/**
 * The real daemon's credentials, thread by thread, in the ways it is started:
 * as root with -u/-g, as libvirt starts it (root, `-k SOCK` only), under
 * systemd socket activation, and from the unpacked Debian package. Plus its
 * sd_notify conversation. Root-only tests are skipped for other users.
 */

import assert from "node:assert/strict";
import { closeFd, readFd } from "../ffi/files.ts";
import { bindUnix, unixSocket } from "../ffi/sockets.ts";
import { parseStatus, type StatusCreds } from "../src/security/privileges.ts";
import { userByName } from "../ffi/privileges.ts";
import {
  DENO,
  exists,
  MAIN,
  REPO,
  sleep,
  startDaemon,
  Subprocess,
  TempDir,
  unpackPackage,
  waitFor,
} from "./helpers/daemon.ts";
import { connectGreeted } from "./helpers/protocol.ts";
import { v8FlagsArgument } from "../tools/runtime_flags.ts";

const isRoot = Deno.uid() === 0;
const RAWIO = 1n << 17n;
/**
 * Where root without -u ends up: the `prhelperd` user if this host has it
 * (issue 14, 14.8; tests/default_user_daemon_test.ts tests both cases), else uid 0.
 */
const DEFAULT_IDS = (() => {
  const u = userByName("prhelperd");
  return u === null ? { uid: 0, gid: 0 } : { uid: u.uid, gid: u.gid };
})();

/** Every thread of `pid`, from /proc/PID/task/TID/status. */
function threadCreds(pid: number): (StatusCreds & { tid: string })[] {
  return [...Deno.readDirSync(`/proc/${pid}/task`)].map((e) => ({
    tid: e.name,
    ...parseStatus(Deno.readTextFileSync(`/proc/${pid}/task/${e.name}/status`)),
  }));
}

/** Assert uid/gid, no groups, CapEff = CapPrm = RAWIO, CapBnd, NoNewPrivs on every thread. */
function assertThreads(pid: number, uid: number, gid: number, capBnd: bigint): void {
  const threads = threadCreds(pid);
  assert.ok(threads.length >= 5, `only ${threads.length} threads`);
  assert.ok(threads.some((t) => t.name.startsWith("V8")), "no V8 platform thread listed");
  for (const t of threads) {
    const where = `thread ${t.tid} (${t.name})`;
    assert.deepEqual(t.uid, [uid, uid, uid, uid], `Uid of ${where}`);
    assert.deepEqual(t.gid, [gid, gid, gid, gid], `Gid of ${where}`);
    assert.deepEqual(t.groups, [], `Groups of ${where}`);
    assert.equal(t.capEff, RAWIO, `CapEff of ${where}`);
    assert.equal(t.capPrm, RAWIO, `CapPrm of ${where}`);
    assert.equal(t.capBnd, capBnd, `CapBnd of ${where}`);
    assert.equal(t.noNewPrivs, true, `NoNewPrivs of ${where}`);
  }
  // not dumpable: /proc/PID is then owned by root whatever the uid
  assert.equal(Deno.statSync(`/proc/${pid}/status`).uid, 0);
}

/** Connect, check the 4-byte greeting (features 0), close. */
function assertGreeting(socket: string): void {
  const { conn, helperFeatures } = connectGreeted(socket);
  conn.close();
  assert.deepEqual([...helperFeatures], [0, 0, 0, 0]);
}

Deno.test({
  name: "privileges (root): -u nobody -g nogroup: every thread 65534, CAP_SYS_RAWIO only",
  ignore: !isRoot,
  fn: async () => {
    await using d = await startDaemon({ args: ["-u", "nobody", "-g", "nogroup", "-v"] });
    assertGreeting(d.socket);
    assertThreads(d.pid, 65534, 65534, 0n);
    assert.match(d.stderr(), /running as uid 65534 gid 65534, CAP_SYS_RAWIO effective/);
    // The Workers that run SG_IO exist now and were checked with the rest.
    assert.ok(threadCreds(d.pid).length >= 6);
    assert.equal((await d.stop()).code, 0, d.stderr());
  },
});

Deno.test({
  name: "privileges (root): -u 65534 (numbers) uses the user's primary group",
  ignore: !isRoot,
  fn: async () => {
    await using d = await startDaemon({ args: ["-u", "65534"] });
    assertGreeting(d.socket);
    assertThreads(d.pid, 65534, 65534, 0n);
    assert.equal((await d.stop()).code, 0, d.stderr());
  },
});

Deno.test({
  name: "privileges (root): an unknown -u exits 1 with 'invalid user'",
  ignore: !isRoot,
  fn: async () => {
    using dir = new TempDir();
    const proc = Subprocess.spawn(
      [DENO, "run", "-P=daemon", "--no-prompt", MAIN, "-k", dir.join("s"), "-u", "no-such-user-x"],
      { logFile: dir.join("log") },
    );
    const status = await proc.wait();
    assert.equal(status.code, 1);
    assert.match(proc.output(), /invalid user 'no-such-user-x'/);
  },
});

Deno.test({
  name: "libvirt: `prhelperd -k SOCK` as root from / ends with only CAP_SYS_RAWIO (uid: see 14.8)",
  ignore: !isRoot,
  fn: async () => {
    using dir = new TempDir();
    const sock = dir.join("pr-helper0.sock");
    // libvirt: cwd /, stdin /dev/null, stderr captured, no other option.
    const proc = Subprocess.spawn(
      [
        "sh",
        "-c",
        'cd / && exec "$@"',
        "sh",
        DENO,
        "run",
        "--config",
        `${REPO}/deno.json`,
        "-P=daemon",
        "--no-prompt",
        MAIN,
        "-k",
        sock,
      ],
      { logFile: dir.join("log") },
    );
    try {
      // libvirt waits for the socket file to appear, then connects
      await waitFor(() => {
        if (proc.exited) throw new Error(`exited:\n${proc.output()}`);
        return exists(sock);
      }, { what: "the socket file" });
      assertGreeting(sock);
      assertThreads(proc.pid, DEFAULT_IDS.uid, DEFAULT_IDS.gid, 0n);
      proc.signal("SIGTERM");
      assert.equal((await proc.wait()).code, 0, proc.output());
      // as root it removes its socket; switched to prhelperd, the 0700 test directory is
      // closed to it (libvirt removes a stale socket itself before starting a helper)
      if (DEFAULT_IDS.uid === 0) assert.equal(exists(sock), false, "socket file removed on exit");
    } finally {
      await proc[Symbol.asyncDispose]();
    }
  },
});

Deno.test({
  name: "socket activation (root): LISTEN_FDS/LISTEN_FDNAMES fd survives the -u nobody re-exec",
  ignore: !isRoot,
  fn: async () => {
    await using d = await startDaemon({
      activation: true,
      args: ["-u", "nobody", "-g", "nogroup", "-v"],
    });
    // The first connection makes systemd-socket-activate exec the daemon.
    assertGreeting(d.socket);
    const pid = d.pid;
    await waitFor(() => d.stderr().includes("listening on fd 3"), { what: "listening line" });
    assert.match(d.stderr(), /listening on fd 3 \(socket activation/);
    assertGreeting(d.socket);
    assertThreads(pid, 65534, 65534, 0n);
    assert.equal((await d.stop()).code, 0, d.stderr());
  },
});

/** The unpacked package's launcher, if `deno task deb` has been run. */
function unpackedPackage(dir: TempDir): string | null {
  const root = unpackPackage(dir);
  return root === null ? null : `${root}/usr/bin/prhelperd`;
}

Deno.test({
  name: "package: the unpacked .deb launcher runs as libvirt runs it (root, -k) and drops",
  ignore: !isRoot || !exists(`${REPO}/dist`),
  fn: async () => {
    using dir = new TempDir();
    const launcher = unpackedPackage(dir);
    if (launcher === null) return; // no package built
    const sock = dir.join("pkg.sock");
    const proc = Subprocess.spawn(["sh", "-c", 'cd / && exec "$@"', "sh", launcher, "-k", sock], {
      logFile: dir.join("log"),
    });
    try {
      await waitFor(() => {
        if (proc.exited) throw new Error(`exited:\n${proc.output()}`);
        return exists(sock);
      }, { what: "the packaged daemon's socket" });
      assertGreeting(sock);
      assertThreads(proc.pid, DEFAULT_IDS.uid, DEFAULT_IDS.gid, 0n);
      // the launcher's V8 flags reach the running (re-executed) daemon
      const argv = Deno.readTextFileSync(`/proc/${proc.pid}/cmdline`).split("\0");
      assert.ok(argv.includes(v8FlagsArgument()), `daemon argv: ${argv.join(" ")}`);
      await sleep(1000); // the SG_IO Worker started at start-up has loaded (or failed) by now
      assert.doesNotMatch(proc.output(), /Module not found|sgio_worker/);
      proc.signal("SIGTERM");
      assert.equal((await proc.wait()).code, 0, proc.output());
    } finally {
      await proc[Symbol.asyncDispose]();
    }
  },
});

Deno.test({
  name: "package: the bundle loads its SG_IO Worker as sgio_worker.js, which loads and runs",
  ignore: !exists(`${REPO}/dist`),
  fn: async () => {
    using dir = new TempDir();
    const launcher = unpackedPackage(dir);
    if (launcher === null) return;
    const lib = dir.join("root/usr/lib/prhelperd");
    assert.match(Deno.readTextFileSync(`${lib}/prhelperd.js`), /"\.\/sgio_worker\.js"/);
    // Load the bundled Worker module with the packaged runtime and the launcher's
    // permissions: a missing module or import fails within the wait.
    const script = dir.join("worker_probe.js");
    Deno.writeTextFileSync(
      script,
      `const w = new Worker(new URL("./sgio_worker.js", "file://${lib}/prhelperd.js"), { type: "module" });
w.onerror = (e) => { e.preventDefault(); console.log("ERROR " + e.message); Deno.exit(1); };
setTimeout(() => { console.log("LOADED"); Deno.exit(0); }, 3000);`,
    );
    const launcherText = Deno.readTextFileSync(launcher);
    const ffi = launcherText.match(/"--allow-ffi=([^"]+)"/)?.[1];
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

Deno.test("sd_notify: the daemon sends READY=1, STATUS=, WATCHDOG=1 and STOPPING=1", async () => {
  using dir = new TempDir();
  const notifyPath = dir.join("notify");
  const rx = unixSocket({ datagram: true, nonblocking: true });
  bindUnix(rx, notifyPath);
  const got: string[] = [];
  const drain = () => {
    const buf = new Uint8Array(4096);
    for (let n = readFd(rx, buf); n !== null; n = readFd(rx, buf)) {
      got.push(new TextDecoder().decode(buf.subarray(0, n)));
    }
    return got;
  };
  try {
    await using d = await startDaemon({
      // SYSTEMD_EXEC_PID cleared: a test run inside a systemd unit must not pass its own on
      env: { NOTIFY_SOCKET: notifyPath, WATCHDOG_USEC: "400000", SYSTEMD_EXEC_PID: "" },
    });
    await waitFor(() => drain().some((m) => m.startsWith("READY=1")), { what: "READY=1" });
    assertGreeting(d.socket);
    await waitFor(() => drain().some((m) => /^STATUS=.*connection/.test(m)), {
      what: "STATUS= with the counters",
    });
    await sleep(500);
    assert.ok(drain().filter((m) => m === "WATCHDOG=1").length >= 2, got.join(" | "));
    assert.equal((await d.stop()).code, 0, d.stderr());
    drain();
    assert.ok(got.some((m) => m.startsWith("STOPPING=1")), got.join(" | "));
    const ready = got.findIndex((m) => m.startsWith("READY=1"));
    const stopping = got.findIndex((m) => m.startsWith("STOPPING=1"));
    assert.ok(ready < stopping);
  } finally {
    closeFd(rx);
  }
});
