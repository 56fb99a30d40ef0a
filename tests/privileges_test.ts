import assert from "node:assert/strict";
import {
  type Credentials,
  decodeStage2,
  encodeStage2,
  NO_RAWIO_WARNING,
  parseStatus,
  planPrivileges,
  PrivilegeError,
  RAWIO,
  resolveGroup,
  resolveUser,
  splitNul,
  stage2Environment,
} from "../src/security/privileges.ts";
import { Cap, capBit } from "../ffi/privileges.ts";

const ALL = (1n << 41n) - 1n;
const ids = (v: number) => ({ real: v, effective: v, saved: v });

function creds(
  over: Omit<Partial<Credentials>, "uid" | "gid"> & { uid?: number; gid?: number } = {},
): Credentials {
  const { uid = 0, gid = 0, ...rest } = over;
  return {
    uid: ids(uid),
    gid: ids(gid),
    groups: [],
    caps: { effective: ALL, permitted: ALL, inheritable: 0n },
    bounding: ALL,
    noNewPrivs: false,
    ...rest,
  } as Credentials;
}

Deno.test("privileges: root re-executes, with or without -u", () => {
  assert.deepEqual(planPrivileges(creds(), { uid: 0, gid: 0 }, false), {
    action: "reexec",
    keepRawio: true,
    warnings: [],
  });
  assert.equal(planPrivileges(creds(), { uid: 65534, gid: 65534 }, false).action, "reexec");
});

Deno.test("privileges: already minimal (systemd ambient) stays in place", () => {
  const c = creds({
    uid: 990,
    gid: 990,
    caps: { effective: RAWIO, permitted: RAWIO, inheritable: RAWIO },
    bounding: RAWIO,
    noNewPrivs: true,
  });
  assert.deepEqual(planPrivileges(c, { uid: 990, gid: 990 }, false), {
    action: "keep",
    warnings: [],
  });
  // Without no_new_privs (set per thread), it re-executes to get it on all threads.
  assert.equal(
    planPrivileges({ ...c, noNewPrivs: false }, { uid: 990, gid: 990 }, false).action,
    "reexec",
  );
});

Deno.test("privileges: systemd's User= leaves the primary group as supplementary: fine", () => {
  const c = creds({
    uid: 997,
    gid: 997,
    groups: [997],
    caps: { effective: RAWIO, permitted: RAWIO, inheritable: RAWIO },
    bounding: RAWIO,
    noNewPrivs: true,
  });
  assert.deepEqual(planPrivileges(c, { uid: 997, gid: 997 }, false), {
    action: "keep",
    warnings: [],
  });
});

Deno.test("privileges: no CAP_SYS_RAWIO gives the warning", () => {
  const none = { effective: 0n, permitted: 0n, inheritable: 0n };
  const p = planPrivileges(
    creds({ uid: 1000, gid: 1000, caps: none, noNewPrivs: true }),
    { uid: 1000, gid: 1000 },
    false,
  );
  assert.deepEqual(p, { action: "keep", warnings: [NO_RAWIO_WARNING] });
  const q = planPrivileges(
    creds({ uid: 1000, gid: 1000, caps: none }),
    { uid: 1000, gid: 1000 },
    false,
  );
  assert.deepEqual(q, { action: "reexec", keepRawio: false, warnings: [NO_RAWIO_WARNING] });
});

Deno.test("privileges: extra capabilities of a non-root user are dropped by re-exec", () => {
  const extra = RAWIO | capBit(12);
  const p = planPrivileges(
    creds({ uid: 5, gid: 5, caps: { effective: extra, permitted: extra, inheritable: extra } }),
    { uid: 5, gid: 5 },
    false,
  );
  assert.equal(p.action, "reexec");
});

Deno.test("privileges: impossible changes fail with a clear message", () => {
  const none = { effective: 0n, permitted: 0n, inheritable: 0n };
  const p = planPrivileges(
    creds({ uid: 1000, gid: 1000, caps: none }),
    { uid: 0, gid: 1000 },
    false,
  );
  assert.equal(p.action, "fail");
  assert.match((p as { message: string }).message, /CAP_SETUID/);
  const g = planPrivileges(
    creds({ uid: 1000, gid: 1000, caps: { ...none, effective: capBit(Cap.SETUID) } }),
    { uid: 1000, gid: 5 },
    false,
  );
  assert.equal(g.action, "fail");
  // Supplementary groups that cannot be dropped, nothing else asked: a warning only.
  const k = planPrivileges(
    creds({ uid: 1000, gid: 1000, caps: none, groups: [24, 25], noNewPrivs: true }),
    { uid: 1000, gid: 1000 },
    false,
  );
  assert.equal(k.action, "keep");
  assert.match((k as { warnings: string[] }).warnings[0], /24,25/);
});

Deno.test("privileges: stage 2 never loops", () => {
  const p = planPrivileges(creds(), { uid: 0, gid: 0 }, true);
  assert.equal(p.action, "fail");
  assert.match((p as { message: string }).message, /refusing to loop/);
});

Deno.test("privileges: parseStatus", () => {
  const s = parseStatus(
    "Name:\tdeno\nUmask:\t0022\nUid:\t65534\t65534\t65534\t65534\nGid:\t65534\t65534\t65534\t65534\n" +
      "Groups:\t\nNoNewPrivs:\t1\nCapInh:\t0000000000020000\nCapPrm:\t0000000000020000\n" +
      "CapEff:\t0000000000020000\nCapBnd:\t0000000000000000\nCapAmb:\t0000000000020000\n",
  );
  assert.equal(s.name, "deno");
  assert.deepEqual(s.uid, [65534, 65534, 65534, 65534]);
  assert.deepEqual(s.groups, []);
  assert.equal(s.capEff, RAWIO);
  assert.equal(s.capBnd, 0n);
  assert.equal(s.noNewPrivs, true);
});

Deno.test("privileges: stage-2 payload and environment", () => {
  const p = { cwd: "/", fds: { listen: 3, pidfile: 7 } };
  assert.deepEqual(decodeStage2(encodeStage2(p)), p);
  assert.throws(() => decodeStage2("{"), PrivilegeError);
  assert.throws(() => decodeStage2('{"v":1,"cwd":"/","fds":{"x":-1}}'), PrivilegeError);
  const env = stage2Environment(
    [
      "PATH=/bin",
      "LISTEN_PID=4",
      "LISTEN_FDS=1",
      "LISTEN_FDNAMES=x",
      "NOTIFY_SOCKET=/run/n",
      "A=b=c",
    ],
    p,
  );
  assert.deepEqual(env.slice(0, 3), ["PATH=/bin", "NOTIFY_SOCKET=/run/n", "A=b=c"]);
  assert.match(env[3], /^PRHELPERD_STAGE2=\{/);
  assert.deepEqual(splitNul("a\0b\0"), ["a", "b"]);
});

Deno.test("privileges: resolveUser / resolveGroup (names first, then numbers)", () => {
  assert.deepEqual(resolveUser("nobody"), { uid: 65534, gid: 65534 });
  assert.deepEqual(resolveUser("65534"), { uid: 65534, gid: 65534 });
  assert.deepEqual(resolveUser("4242424"), { uid: 4242424, gid: null });
  assert.throws(
    () => resolveUser("no-such-user-prhelperd"),
    /invalid user 'no-such-user-prhelperd'/,
  );
  assert.throws(() => resolveUser(""), PrivilegeError);
  assert.equal(resolveGroup("root"), 0);
  assert.equal(resolveGroup("4242"), 4242);
  assert.throws(() => resolveGroup("no-such-group-prhelperd"), /invalid group/);
});

// ---------------------------------------------------------------- real processes

const isRoot = Deno.uid() === 0;
const probe = new URL("./fixtures/privileges_probe.ts", import.meta.url).pathname;

interface ProbeOut {
  pid: number;
  stage2: boolean;
  fdOpen: boolean;
  result: { mode: string; uid: number; gid: number; rawio: boolean; warning?: string };
  dumpable: boolean;
  threads: {
    tid: string;
    name: string;
    uid: number[];
    gid: number[];
    groups: number[];
    capPrm: string;
    capEff: string;
    capBnd: string;
    capAmb: string;
    noNewPrivs: boolean;
  }[];
}

async function runProbe(prefix: string[], args: string[]): Promise<ProbeOut> {
  const argv = [...prefix, Deno.execPath(), "run", "-A", "--no-check", probe, ...args];
  const out = await new Deno.Command(argv[0], {
    args: argv.slice(1),
    stdout: "piped",
    stderr: "piped",
    env: { RUST_BACKTRACE: "0" },
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  return JSON.parse(text.trim().split("\n").at(-1)!);
}

function assertEveryThread(o: ProbeOut, uid: number, gid: number, bnd: string) {
  assert.ok(o.threads.length >= 5, `only ${o.threads.length} threads`);
  assert.ok(o.threads.some((t) => t.name.startsWith("V8")), "no V8 platform thread seen");
  for (const t of o.threads) {
    const where = `thread ${t.tid} (${t.name})`;
    assert.deepEqual(t.uid, [uid, uid, uid, uid], where);
    assert.deepEqual(t.gid, [gid, gid, gid, gid], where);
    assert.deepEqual(t.groups, [], where);
    assert.equal(t.capPrm, "20000", where);
    assert.equal(t.capEff, "20000", where);
    assert.equal(t.capBnd, bnd, where);
    assert.equal(t.noNewPrivs, true, where);
  }
  assert.equal(o.dumpable, false);
  assert.equal(o.fdOpen, true, "kept fd lost");
}

Deno.test({
  name: "privileges (root): -u nobody -g nogroup re-executes; every thread is 65534, RAWIO only",
  ignore: !isRoot,
  fn: async () => {
    const o = await runProbe([], ["nobody", "nogroup"]);
    assert.equal(o.stage2, true);
    assert.equal(o.result.mode, "reexecuted");
    assert.equal(o.result.rawio, true);
    assertEveryThread(o, 65534, 65534, "0");
  },
});

Deno.test({
  name: "privileges (root): without -u keeps uid 0 but only CAP_SYS_RAWIO",
  ignore: !isRoot,
  fn: async () => {
    const o = await runProbe([], []);
    assert.equal(o.result.mode, "reexecuted");
    assertEveryThread(o, 0, 0, "0");
  },
});

Deno.test({
  name: "privileges: ambient CAP_SYS_RAWIO as systemd gives it (setpriv): no re-exec",
  ignore: !isRoot,
  fn: async () => {
    const setpriv = [
      "setpriv",
      "--reuid=65534",
      "--regid=65534",
      "--clear-groups",
      "--inh-caps=+sys_rawio",
      "--ambient-caps=+sys_rawio",
      "--bounding-set=-all,+sys_rawio",
      "--no-new-privs",
    ];
    const o = await runProbe(setpriv, []);
    assert.equal(o.stage2, false);
    assert.equal(o.result.mode, "in-place");
    assert.equal(o.result.warning, undefined);
    assertEveryThread(o, 65534, 65534, "20000");
  },
});

Deno.test({
  name: "privileges: unprivileged user without CAP_SYS_RAWIO warns",
  ignore: !isRoot,
  fn: async () => {
    const o = await runProbe(
      ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--no-new-privs"],
      [],
    );
    assert.equal(o.result.rawio, false);
    assert.match(o.result.warning ?? "", /CAP_SYS_RAWIO/);
  },
});
