/**
 * Issue 13 (4, 5): the daemon never aborts when the kernel denies it
 * executable memory. An SELinux domain without `process { execmem }` makes
 * V8's JIT abort the process when an isolate maps code (at start-up, or when
 * the SG_IO Worker starts on the first request). The host has no SELinux, so
 * these tests use the kernel's own switch for the same refusal,
 * prctl(PR_SET_MDWE) (tests/fixtures/mdwe_exec.c): the daemon as its
 * launchers start it (`--jitless`, tools/runtime_flags.ts) must start, serve
 * and run a Worker there, and, as the control that shows the refusal is
 * real, the same runtime with the JIT must die.
 */
import assert from "node:assert/strict";
import { jitStatus } from "../src/jit.ts";
import { DAEMON_V8_FLAGS, v8FlagsArgument } from "../tools/runtime_flags.ts";
import {
  DENO,
  exists,
  MAIN,
  REPO,
  Subprocess,
  TempDir,
  unpackPackage,
  waitFor,
} from "./helpers/daemon.ts";
import { connectGreeted, roundTrip, wireCdb } from "./helpers/protocol.ts";
import { closeFd, O_RDONLY, openPath } from "../ffi/files.ts";

Deno.test("jit: the status line follows what V8 exposes", () => {
  const off = jitStatus({});
  assert.equal(off.jitless, true);
  assert.equal(off.warn, false);
  assert.match(off.line, /JIT off/);
  const on = jitStatus({ WebAssembly: {} });
  assert.equal(on.jitless, false);
  assert.equal(on.warn, true);
  assert.match(on.line, /JIT on/);
});

Deno.test("jit: every launcher's V8 flags include --jitless", () => {
  assert.ok(DAEMON_V8_FLAGS.includes("--jitless"), DAEMON_V8_FLAGS.join(" "));
  assert.match(v8FlagsArgument(), /--jitless/);
});

/** Build tests/fixtures/mdwe_exec.c; null (with the reason) if the kernel has no PR_SET_MDWE. */
function buildMdwe(dir: TempDir): string {
  const bin = dir.join("mdwe_exec");
  const cc = new Deno.Command("gcc", {
    args: ["-O2", "-o", bin, `${REPO}/tests/fixtures/mdwe_exec.c`],
  }).outputSync();
  assert.ok(cc.success, new TextDecoder().decode(cc.stderr));
  const probe = new Deno.Command(bin, { args: ["/bin/true"] }).outputSync();
  assert.equal(
    probe.code,
    0,
    `this kernel cannot refuse executable memory (PR_SET_MDWE, Linux 6.3+): ${
      new TextDecoder().decode(probe.stderr)
    }`,
  );
  return bin;
}

/** Run to exit with a deadline; exit code and output. */
async function runToExit(argv: string[], dir: TempDir, name: string) {
  const proc = Subprocess.spawn(argv, { logFile: dir.join(`${name}.log`) });
  const status = await proc.wait(120_000);
  return { code: status.code, output: proc.output() };
}

/** Start `argv` (a daemon on `sock`), check it serves a request, stop it. */
async function assertServes(argv: string[], sock: string, dir: TempDir, name: string) {
  const proc = Subprocess.spawn(argv, { logFile: dir.join(`${name}.log`) });
  try {
    await waitFor(() => {
      if (proc.exited) throw new Error(`${name} exited:\n${proc.output()}`);
      return exists(sock) && proc.output().includes("listening on");
    }, { what: `${name} to listen`, timeoutMs: 60_000 });
    const { conn } = connectGreeted(sock);
    const fd = openPath("/dev/null", O_RDONLY);
    try {
      // refused (not a SCSI device), but answered: the request path ran
      const reply = roundTrip(conn, wireCdb(0x5e, 8), [fd]);
      assert.equal(reply.kind === "reply" ? reply.status : "closed", 0x02);
    } finally {
      closeFd(fd);
      conn.close();
    }
    assert.match(proc.output(), /V8 JIT off/);
    assert.doesNotMatch(proc.output(), /Fatal error/);
    proc.signal("SIGTERM");
    assert.equal((await proc.wait(30_000)).code, 0, proc.output());
  } finally {
    await proc[Symbol.asyncDispose]();
  }
}

Deno.test("jit: without executable memory, tools/prhelperd starts and serves; the JIT dies", async () => {
  using dir = new TempDir();
  const mdwe = buildMdwe(dir);
  await assertServes(
    [mdwe, `${REPO}/tools/prhelperd`, "-k", dir.join("a.sock")],
    dir.join("a.sock"),
    dir,
    "launcher",
  );
  // control: the same runtime and permission set with the JIT never gets to listen
  const jit = await runToExit(
    [mdwe, DENO, "run", "-P=daemon", "--no-prompt", MAIN, "-k", dir.join("b.sock")],
    dir,
    "jit",
  );
  assert.notEqual(jit.code, 0, jit.output);
  assert.match(jit.output, /Fatal error/);
  assert.ok(!exists(dir.join("b.sock")) || !jit.output.includes("listening on"));
});

Deno.test("jit: without executable memory, an SG_IO Worker starts and runs its job", async () => {
  using dir = new TempDir();
  const mdwe = buildMdwe(dir);
  const probe = `${REPO}/tests/fixtures/executor_probe.ts`;
  const ok = await runToExit(
    [mdwe, DENO, "run", "-A", "--no-prompt", v8FlagsArgument(), probe],
    dir,
    "worker",
  );
  assert.equal(ok.code, 0, ok.output);
  assert.match(ok.output, /probe: errno 25/); // ENOTTY: SG_IO ran on the Worker
  const jit = await runToExit([mdwe, DENO, "run", "-A", "--no-prompt", probe], dir, "worker-jit");
  assert.notEqual(jit.code, 0, jit.output);
  assert.doesNotMatch(jit.output, /probe:/);
});

Deno.test({
  name: "jit: without executable memory, the packaged launcher starts and serves",
  ignore: !exists(`${REPO}/dist`),
  fn: async () => {
    using dir = new TempDir();
    const mdwe = buildMdwe(dir);
    const root = unpackPackage(dir);
    assert.ok(root, "dist/ has no .deb that dpkg-deb unpacks (deno task deb)");
    await assertServes(
      [mdwe, `${root}/usr/bin/prhelperd`, "-k", dir.join("p.sock")],
      dir.join("p.sock"),
      dir,
      "package",
    );
  },
});
