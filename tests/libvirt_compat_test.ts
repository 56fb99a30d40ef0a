/**
 * What libvirt and QEMU expect of a qemu-pr-helper drop-in (issue 15, item 4),
 * tested against the daemon as it runs:
 * - the pidfile lock is an fcntl(2) record lock, which libvirt's check
 *   (virPidFileAcquirePath: F_SETLK on byte 0) sees; flock(2) would not
 *   conflict with it, so libvirt would think a live helper dead;
 * - a pidfile fd that libvirt locked and left open across execve stays open
 *   and locked for the helper's whole life (also across the daemon's own
 *   re-exec), and the lock goes with the process;
 * - a NOTIFY_SOCKET inherited from another service (libvirtd is Type=notify
 *   and passes its environment on) is not written to;
 * - qemu-pr-helper's leniencies: -q with -v, extra positional arguments;
 * - no "experimental" Deno warning on the launchers' stderr.
 */
import assert from "node:assert/strict";
import {
  closeFd,
  O_RDWR,
  openPath,
  readFd,
  tryLockExclusive,
  writeLockHolder,
} from "../ffi/files.ts";
import { bindUnix, unixSocket } from "../ffi/sockets.ts";
import { parseArgs } from "../src/cli.ts";
import {
  daemonCommand,
  DENO,
  exists,
  REPO,
  runDaemonToExit,
  sleep,
  startDaemon,
  Subprocess,
  TempDir,
  TestDaemon,
  unpackPackage,
  waitFor,
  waitReady,
} from "./helpers/daemon.ts";
import { connectGreeted } from "./helpers/protocol.ts";

const LOCKED_EXEC = `${REPO}/tests/helpers/exec_locked_pidfile.ts`;

/** libvirt's liveness check: can a classic write lock on byte 0 be taken? (then released) */
function libvirtSeesLock(pidfile: string): boolean {
  const fd = openPath(pidfile, O_RDWR);
  try {
    return !tryLockExclusive(fd, { owner: "process", start: 0, length: 1 });
  } finally {
    closeFd(fd); // drops the lock if it was taken
  }
}

function holderOf(pidfile: string): number | null {
  const fd = openPath(pidfile, O_RDWR);
  try {
    return writeLockHolder(fd, { owner: "process", start: 0, length: 1 });
  } finally {
    closeFd(fd);
  }
}

Deno.test("libvirt: the -f pidfile lock is seen by an fcntl lock check from another process", async () => {
  using dir = new TempDir();
  const pidfile = dir.join("pr-helper0.pid");
  await using d = await startDaemon({ args: ["-f", pidfile] });
  assert.equal(Deno.readTextFileSync(pidfile).trim(), String(d.pid));
  assert.notEqual(holderOf(pidfile), null, "F_GETLK sees no lock on the pidfile");
  assert.equal(libvirtSeesLock(pidfile), true, "libvirt's F_SETLK on byte 0 succeeded");
  // and flock-style lockers are not the point: a second prhelperd still fails on the lock
  const second = await runDaemonToExit(["-k", dir.join("other.sock"), "-f", pidfile]);
  assert.equal(second.code, 1, second.output);
  assert.match(second.output, /is locked by another instance/);
  assert.equal((await d.stop()).code, 0, d.stderr());
  assert.equal(exists(pidfile), false, "pidfile removed on exit");
});

Deno.test("libvirt: a pidfile locked by the parent and inherited across execve stays locked while the helper lives", async () => {
  using dir = new TempDir();
  const pidfile = dir.join("pr-helper0.pid");
  const socket = dir.join("pr-helper0.sock");
  const argv = [DENO, "run", "-A", LOCKED_EXEC, pidfile, ...daemonCommand(["-k", socket])];
  const proc = Subprocess.spawn(argv, { logFile: dir.join("daemon.log") });
  const d = new TestDaemon(proc, socket, new TempDir());
  try {
    await waitReady(d);
    // serving means the daemon's own re-exec is behind it
    connectGreeted(socket).conn.close();
    assert.equal(Deno.readTextFileSync(pidfile).trim(), String(d.pid));
    assert.equal(holderOf(pidfile), d.pid, "the helper does not hold the inherited lock");
    assert.equal(libvirtSeesLock(pidfile), true);
    const fds = [...Deno.readDirSync(`/proc/${d.pid}/fd`)].map((e) =>
      Deno.readLinkSync(`/proc/${d.pid}/fd/${e.name}`)
    );
    assert.ok(fds.includes(pidfile), `the inherited pidfile fd was closed: ${fds.join(" ")}`);
    // libvirt's virPidFileForceCleanupPath: the lock is held, so SIGTERM; then the lock frees
    assert.equal((await d.stop()).code, 0, d.stderr());
    assert.equal(holderOf(pidfile), null, "lock still held after the helper exited");
    assert.equal(exists(socket), false, "socket left behind");
    assert.equal(exists(`${socket}.lock`), false, "socket lock file left behind");
  } finally {
    await d[Symbol.asyncDispose]();
  }
});

/** Datagram receiver standing in for systemd's notify socket. */
function notifyReceiver(path: string): { drain(): string[]; close(): void } {
  const rx = unixSocket({ datagram: true, nonblocking: true });
  bindUnix(rx, path);
  const got: string[] = [];
  return {
    drain() {
      const buf = new Uint8Array(4096);
      for (let n = readFd(rx, buf); n !== null; n = readFd(rx, buf)) {
        got.push(new TextDecoder().decode(buf.subarray(0, n)));
      }
      return got;
    },
    close: () => closeFd(rx),
  };
}

Deno.test("libvirt: NOTIFY_SOCKET inherited from another service's main process is left alone", async () => {
  using dir = new TempDir();
  const rx = notifyReceiver(dir.join("notify"));
  try {
    // libvirtd (pid 1 here: certainly not the daemon) passed its environment on
    await using d = await startDaemon({
      env: { NOTIFY_SOCKET: dir.join("notify"), SYSTEMD_EXEC_PID: "1", WATCHDOG_USEC: "400000" },
    });
    connectGreeted(d.socket).conn.close();
    await sleep(1500); // past the 1 s STATUS= coalescing and several watchdog periods
    assert.equal((await d.stop()).code, 0, d.stderr());
    assert.deepEqual(rx.drain(), [], "the helper wrote to another service's notify socket");
  } finally {
    rx.close();
  }
});

Deno.test("libvirt: NOTIFY_SOCKET is used when SYSTEMD_EXEC_PID names the daemon itself", async () => {
  using dir = new TempDir();
  const notify = dir.join("notify");
  const rx = notifyReceiver(notify);
  const socket = dir.join("prh.sock");
  // the shell's pid is the daemon's: it execs
  const argv = [
    "/bin/sh",
    "-c",
    'SYSTEMD_EXEC_PID=$$ exec "$@"',
    "sh",
    ...daemonCommand(["-k", socket]),
  ];
  const proc = Subprocess.spawn(argv, {
    logFile: dir.join("daemon.log"),
    env: { NOTIFY_SOCKET: notify },
  });
  const d = new TestDaemon(proc, socket, new TempDir());
  try {
    await waitReady(d);
    await waitFor(() => rx.drain().some((m) => m.startsWith("READY=1")), { what: "READY=1" });
    assert.equal((await d.stop()).code, 0, d.stderr());
  } finally {
    await d[Symbol.asyncDispose]();
    rx.close();
  }
});

Deno.test("libvirt: -q with -v is accepted, as qemu-pr-helper accepts it", () => {
  const level = (args: string[]) => {
    const r = parseArgs(args);
    assert.equal(r.kind, "daemon", JSON.stringify(r));
    return r.kind === "daemon" ? r.options.verbosity : -1;
  };
  assert.equal(level([]), 1);
  assert.equal(level(["-q"]), 0);
  assert.equal(level(["-q", "-v"]), 1);
  assert.equal(level(["-v", "-q", "-v"]), 2);
  assert.equal(level(["-v", "-v", "-v", "-v"]), 3);
});

Deno.test("libvirt: extra positional arguments are ignored, as qemu-pr-helper ignores them", async () => {
  const r = parseArgs(["-k", "/run/x.sock", "extra", "more"]);
  assert.equal(r.kind, "daemon");
  if (r.kind === "daemon") {
    assert.equal(r.options.socket, "/run/x.sock");
    assert.deepEqual(r.options.ignoredArgs, ["extra", "more"]);
  }
  await using d = await startDaemon({ args: ["-q", "-v", "left-over"] });
  connectGreeted(d.socket).conn.close();
  assert.equal((await d.stop()).code, 0, d.stderr());
  assert.match(d.stderr(), /arguments "left-over" ignored/);
});

Deno.test("libvirt: no 'experimental' Deno warning from tools/prhelperd or the package launcher", async () => {
  const run = async (cmd: string) => {
    const out = await new Deno.Command(cmd, {
      args: ["--version"],
      env: { NO_COLOR: "1" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
    assert.equal(out.code, 0, `${cmd}: ${text}`);
    assert.match(text, /^prhelperd \d+\.\d+\.\d+$/m, cmd);
    assert.doesNotMatch(text, /experimental|Warning/i, `${cmd} printed: ${text}`);
  };
  await run(`${REPO}/tools/prhelperd`);
  using dir = new TempDir();
  const root = unpackPackage(dir);
  if (root !== null) await run(`${root}/usr/bin/prhelperd`);
  else console.warn("no dist/*.deb built (deno task deb): package launcher not checked");
});
