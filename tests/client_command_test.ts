/**
 * `prhelperd client`: sg_persist's command line (parsed as sg_persist
 * parses it), the CDB and parameter list it sends (compared with what the
 * real sg_persist sends, through the SG_IO shim), the reply rendering and
 * exit statuses, and the CLI integration against a running daemon.
 */
import assert from "node:assert/strict";
import { parseArgs } from "../src/cli.ts";
import {
  buildCommand,
  type ClientOptions,
  parseClientArgs,
  parseTransportId,
  renderReply,
  scanHex,
  scanNum,
} from "../src/commands/client_command.ts";
import { HAVE_SHIM_TOOLS, SgPersistShim } from "./helpers/sg_persist_shim.ts";
import { DENO, MAIN, startDaemon, TempDir } from "./helpers/daemon.ts";

const P = { defaultSocket: "/run/test.sock", version: "9.9" };

function run(args: string[]): ClientOptions {
  const r = parseClientArgs(args, P);
  assert.equal(r.kind, "run", r.kind === "exit" ? r.stderr : "");
  return (r as { options: ClientOptions }).options;
}

function exitOf(args: string[]): { code: number; stderr: string } {
  const r = parseClientArgs(args, P);
  assert.equal(r.kind, "exit", `${args.join(" ")} should not run`);
  return r as { code: number; stderr: string };
}

Deno.test("client args: defaults are sg_persist's (PR IN, READ KEYS, 8192, read-write)", () => {
  const r = parseClientArgs(["/dev/sdb"], P);
  assert.equal(r.kind, "run");
  if (r.kind !== "run") return;
  assert.equal(r.options.prIn, true);
  assert.equal(r.options.prinSa, 0);
  assert.equal(r.options.allocationLength, 8192);
  assert.equal(r.options.readonly, false);
  assert.equal(r.options.socket, "/run/test.sock");
  assert.match(r.stderr, /No service action given; assume Persistent Reserve In/);
});

Deno.test("client args: long, short, bundled, abbreviated and underscore forms", () => {
  let o = run(["--out", "--register", "--param-sark=0xAbC", "/dev/sdb", "--socket", "/s"]);
  assert.deepEqual([o.prIn, o.prOutSa, o.paramSark, o.socket], [false, 0, 0xabcn, "/s"]);
  o = run(["-oGS", "123", "/dev/sdb"]);
  assert.deepEqual([o.prOutSa, o.paramSark], [0, 0x123n]);
  o = run(["-oRK0x10", "-T", "5", "/dev/sdb"]);
  assert.deepEqual([o.prOutSa, o.paramRk, o.prOutType], [1, 0x10n, 5]);
  o = run(["--report-cap", "-HHH", "--param_alltgpt", "--device=/dev/sg3"]);
  assert.deepEqual([o.prinSa, o.hex, o.allTgPt, o.device], [2, 3, true, "/dev/sg3"]);
  o = run(["-s", "--alloc-length=100", "--json", "--timeout", "2.5", "/dev/sdb"]);
  assert.deepEqual([o.prinSa, o.allocationLength, o.json, o.timeoutMs], [3, 0x100, true, 2500]);
  o = run(["-r", "--maxlen=4k", "-y", "/dev/sdb"]);
  assert.deepEqual([o.prinSa, o.allocationLength, o.readonly], [1, 4096, true]);
  o = run([
    "--out",
    "--register-move",
    "-K",
    "1",
    "-S",
    "2",
    "-Q",
    "a",
    "-U",
    "-X",
    "sas,5001405aaaaaaaa2",
    "d",
  ]);
  assert.deepEqual([o.prOutSa, o.relativeTargetPort, o.unreg, o.transportIds.length], [
    7,
    10,
    true,
    1,
  ]);
});

Deno.test("client args: sg_persist's errors and exit statuses (1 syntax, 31 contradict)", () => {
  assert.equal(exitOf([]).code, 1); // no device
  assert.match(exitOf([]).stderr, /No device name given/);
  assert.equal(exitOf(["--bogus", "d"]).code, 1);
  assert.equal(exitOf(["--re", "d"]).code, 1); // ambiguous prefix
  assert.equal(exitOf(["-K", "zz", "d"]).code, 1);
  assert.match(exitOf(["-K", "zz", "d"]).stderr, /bad argument to '--param-rk'/);
  assert.equal(exitOf(["--alloc-length=2001", "d"]).code, 1);
  assert.equal(exitOf(["-Q", "10000", "d"]).code, 1);
  assert.equal(exitOf(["d", "e"]).code, 1);
  assert.equal(exitOf(["-i", "-o", "-G", "d"]).code, 31);
  assert.equal(exitOf(["--register", "d"]).code, 31); // PR OUT action without --out
  assert.equal(exitOf(["--out", "d"]).code, 31); // --out without an action
  assert.equal(exitOf(["--out", "-G", "-R", "d"]).code, 31);
  assert.equal(exitOf(["-k", "-r", "d"]).code, 31);
  assert.equal(exitOf(["-o", "-G", "-U", "d"]).code, 31);
  assert.equal(exitOf(["-o", "-M", "d"]).code, 31); // register-move needs one transport id
  assert.equal(exitOf(["--timeout=0", "d"]).code, 1);
  assert.equal(exitOf(["-X", "sas,123", "d"]).code, 1);
  assert.equal(exitOf(["-h"]).code, 0);
  assert.match(exitOf(["-hh"]).stderr, /PR Out TYPE field value meanings/);
  assert.equal(exitOf(["-V"]).stderr, "version: 9.9\n");
  const warn = parseClientArgs(["-o", "-R", "-K", "1", "d"], P);
  assert.ok(warn.kind === "run" && warn.stderr.includes("--prout-type probably needs"));
});

Deno.test("client args: sscanf-like numbers", () => {
  assert.equal(scanHex("0x1f", 64), 0x1fn);
  assert.equal(scanHex("  1Fzz", 64), 0x1fn);
  assert.equal(scanHex("-1", 64), 0xffffffffffffffffn);
  assert.equal(scanHex("xyz", 64), null);
  assert.equal(scanNum("8192"), 8192);
  assert.equal(scanNum("2000h"), 8192);
  assert.equal(scanNum("0x2000"), 8192);
  assert.equal(scanNum("8k"), 8192);
  assert.equal(scanNum("eight"), null);
});

Deno.test("client: TransportID forms", () => {
  const sas = parseTransportId("sas,5001405AAAAAAAA2");
  assert.equal(sas.length, 24);
  assert.deepEqual([...sas.subarray(0, 12)], [
    6,
    0,
    0,
    0,
    0x50,
    0x01,
    0x40,
    0x5a,
    0xaa,
    0xaa,
    0xaa,
    0xa2,
  ]);
  const iqn = parseTransportId("iqn.2003-01.org.example:vm1");
  assert.equal(iqn[0], 5);
  assert.equal(iqn.length, 4 + iqn[3]);
  assert.equal(iqn[3] % 4, 0);
  const hex = parseTransportId("6,0,0,0,50,1");
  assert.deepEqual([...hex.subarray(0, 6)], [6, 0, 0, 0, 0x50, 1]);
  assert.throws(() => parseTransportId("6,0,x"), /error at pos/);
});

Deno.test({
  name: "client: the CDB and parameter list equal what sg_persist sends",
  ignore: !HAVE_SHIM_TOOLS,
  fn() {
    using shim = new SgPersistShim();
    const cases: string[][] = [
      ["-k"],
      ["-r"],
      ["-c"],
      ["-s"],
      ["-s", "--alloc-length=40"],
      ["-o", "-G", "-S", "0xaaa1"],
      ["-o", "-G", "-K", "0xaaa1", "-S", "0xbbb2", "-Z", "-Y"],
      ["-o", "-I", "-S", "0x1234567890abcdef"],
      ["-o", "-R", "-K", "0xaaa1", "-T", "5"],
      ["-o", "-L", "-K", "0xaaa1", "-T", "1"],
      ["-o", "-C", "-K", "0xaaa1"],
      ["-o", "-P", "-K", "0xaaa1", "-S", "0xbbb2", "-T", "8"],
      ["-o", "-A", "-K", "0xaaa1", "-S", "0xbbb2", "-T", "6"],
      ["-o", "-z", "-K", "0xaaa1", "-T", "3"],
      ["-o", "-G", "-S", "1", "-X", "sas,5001405aaaaaaaa2"],
      ["-o", "-G", "-S", "1", "-X", "iqn.2003-01.org.example:vm1"],
      ["-o", "-G", "-S", "1", "-X", "6,0,0,0,50,1,40,5a"],
      ["-o", "-G", "-S", "1", "-X", "fcp,21000024ff3c5a10"],
      ["-o", "-M", "-K", "1", "-S", "2", "-Q", "2", "-U", "-X", "sas,5001405aaaaaaaa2"],
      ["-o", "-M", "-K", "1", "-S", "2", "-Z", "-X", "iqn.2003-01.org.example:vm2"],
    ];
    for (const args of cases) {
      const real = shim.run(args, new Uint8Array([0, 8, 0, 0, 0, 0, 0, 0]));
      assert.equal(real.code, 0, `${args.join(" ")}: ${real.stderr}`);
      const { cdb, payload } = buildCommand(run([...args, "/dev/null"]));
      const ours = new Uint8Array([...cdb.subarray(0, 10), ...payload]);
      assert.deepEqual([...ours], [...real.sent], args.join(" "));
    }
  },
});

function reply(status: number, senseBytes: number[] = [], data: number[] = []) {
  const sense = new Uint8Array(96);
  sense.set(senseBytes);
  return { status, sense, data: new Uint8Array(data) };
}
const UA = [0x70, 0, 0x06, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x2a, 0x03];

Deno.test("client: replies become sg_persist's output and exit statuses", () => {
  const keys = run(["-k", "d"]);
  let out = renderReply(keys, reply(0, [], [0, 0, 0, 2, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0xaa, 0xa1]));
  assert.deepEqual(out, {
    code: 0,
    stdout: "  PR generation=0x2, 1 registered reservation key follows:\n    0xaaa1\n",
    stderr: "",
  });
  out = renderReply(run(["-o", "-R", "-K", "1", "-T", "1", "d"]), reply(0x18));
  assert.equal(out.code, 24);
  assert.match(out.stderr, /PR out \(Reserve\): Reservation conflict/);
  out = renderReply(keys, reply(0x02, UA));
  assert.equal(out.code, 6);
  assert.match(out.stderr, /PR in \(Read keys\): Unit attention/);
  out = renderReply(keys, reply(0x02, [0x70, 0, 5, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x20, 0x02]));
  assert.equal(out.code, 5);
  assert.match(out.stderr, /05\/20\/02/);
  const json = JSON.parse(renderReply(run(["-k", "--json", "d"]), reply(0x02, UA)).stdout);
  assert.equal(json.exitStatus, 6);
  assert.equal(json.sense.text, "06/2A/03");
  assert.equal(json.data, null);
  const good = JSON.parse(
    renderReply(run(["-r", "--json", "d"]), reply(0, [], [0, 0, 0, 1, 0, 0, 0, 0])).stdout,
  );
  assert.deepEqual(good.data, {
    serviceAction: "read-reservation",
    generation: 1,
    additionalLength: 0,
    reservation: null,
  });
});

Deno.test("cli: `client` and `check` are tools; the daemon's own parsing is unchanged", () => {
  assert.deepEqual(parseArgs(["client", "-k", "/dev/sdb"]), {
    kind: "tool",
    tool: "client",
    args: ["-k", "/dev/sdb"],
  });
  assert.equal(parseArgs(["check", "/dev/sdb"]).kind, "tool");
  const d = parseArgs(["-k", "/tmp/x.sock", "-v"]);
  assert.equal(d.kind, "daemon");
  assert.equal(d.kind === "daemon" && d.options.socket, "/tmp/x.sock");
  const help = parseArgs(["--help"]);
  assert.ok(help.kind === "exit" && help.stdout.includes("prhelperd client"));
});

async function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(DENO, {
    args: ["run", "-P=daemon", "--no-prompt", MAIN, ...args],
    stdout: "piped",
    stderr: "piped",
    env: { RUST_BACKTRACE: "0", NO_COLOR: "1" },
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

Deno.test("client through a running daemon: /dev/null is refused, exit 9 like sg_persist", async () => {
  await using daemon = await startDaemon();
  const r = await cli(["client", "--socket", daemon.socket, "-c", "/dev/null"]);
  assert.equal(r.code, 9, r.stderr);
  assert.match(r.stderr, /PR in \(Report capabilities\): command not supported/);
  assert.match(r.stderr, /05\/20\/00/);
  const j = await cli([
    "client",
    "--socket",
    daemon.socket,
    "-o",
    "-G",
    "-S",
    "1",
    "--json",
    "/dev/null",
  ]);
  assert.equal(j.code, 9);
  assert.equal(JSON.parse(j.stdout).sense.text, "05/20/00");
});

Deno.test("client without a helper: OS error exit status (50 + errno)", async () => {
  using dir = new TempDir();
  const r = await cli(["client", "--socket", dir.join("none.sock"), "-k", "/dev/null"]);
  assert.equal(r.code, 52); // ENOENT
  assert.match(r.stderr, /cannot talk to the helper at .*none\.sock/);
  const nodev = await cli(["client", "--socket", dir.join("none.sock"), dir.join("nodev")]);
  assert.equal(nodev.code, 52);
  assert.match(nodev.stderr, /error opening file .*nodev \(rw\): ENOENT/);
});
