/**
 * Issue 15 (3): prhelperd's SELinux policy module (packaging/selinux) builds
 * against the installed reference policy (selinux-policy-dev), the package
 * ships the compiled module, and the package's maintainer scripts load it
 * (and relabel the package's files) only where SELinux is enabled, before
 * the socket starts. The policy itself is exercised under enforcing in the
 * systemd VM (tests/vm/systemd/guest-selinux.sh).
 */
import assert from "node:assert/strict";
import { buildSelinuxModule, SELINUX_MODULE } from "../tools/build_deb.ts";
import { exists, REPO, TempDir, unpackPackage } from "./helpers/daemon.ts";

/** The magic number that opens an SELinux policy package (.pp). */
const PP_MAGIC = 0xf97cff8f;

function assertModule(pp: Uint8Array): void {
  assert.ok(pp.length > 1024, `a .pp of ${pp.length} bytes`);
  assert.equal(new DataView(pp.buffer, pp.byteOffset).getUint32(0, true), PP_MAGIC);
  const text = new TextDecoder("latin1").decode(pp);
  // the policy part names the module and its types; the file contexts part
  // is the .fc as text
  for (const name of ["prhelperd", "prhelperd_t", "prhelperd_exec_t", "prhelperd_runtime_t"]) {
    assert.ok(text.includes(name), `the module has no ${name}`);
  }
  assert.match(text, /\/usr\/bin\/prhelperd\s+--\s+system_u:object_r:prhelperd_exec_t:s0/);
  assert.match(text, /\/usr\/lib\/prhelperd\(\/\.\*\)\?\s+system_u:object_r:prhelperd_exec_t:s0/);
  assert.match(text, /\/run\/prhelperd\\\.sock\s+-s\s+system_u:object_r:prhelperd_runtime_t:s0/);
}

Deno.test("selinux module: packaging/selinux compiles against the installed refpolicy", async () => {
  assertModule(await buildSelinuxModule());
});

/** Run a maintainer script with stub commands that log their arguments. */
function runScript(
  dir: TempDir,
  script: string,
  args: string[],
  selinux: boolean,
): string[] {
  const bin = dir.join(`bin-${selinux}`);
  const log = dir.join(`calls-${selinux}-${args[0]}`);
  Deno.mkdirSync(bin, { recursive: true });
  const stub = (name: string, rc: number, body = "") => {
    Deno.writeTextFileSync(
      `${bin}/${name}`,
      `#!/bin/sh\necho "${name} $*" >> ${log}\n${body}exit ${rc}\n`,
      { mode: 0o755 },
    );
  };
  stub("selinuxenabled", selinux ? 0 : 1);
  // `semodule -l` lists the module as loaded
  stub("semodule", 0, '[ "$1" = -l ] && echo prhelperd\n');
  for (
    const c of [
      "restorecon",
      "udevadm",
      "systemd-sysusers",
      "deb-systemd-helper",
      "deb-systemd-invoke",
      "systemctl",
    ]
  ) stub(c, 0);
  Deno.writeTextFileSync(log, "");
  const out = new Deno.Command("/bin/sh", {
    args: [script, ...args],
    env: { PATH: `${bin}:/usr/bin:/bin` },
    clearEnv: true,
    stdout: "piped",
    stderr: "piped",
  }).outputSync();
  assert.ok(out.success, new TextDecoder().decode(out.stderr));
  return Deno.readTextFileSync(log).split("\n").filter((l) => l !== "");
}

Deno.test({
  name: "selinux module: the .deb ships it; postinst/postrm load and remove it only under SELinux",
  ignore: !exists(`${REPO}/dist`),
  fn: () => {
    using dir = new TempDir();
    const root = unpackPackage(dir);
    assert.ok(root, "dist/ has no .deb that dpkg-deb unpacks (deno task deb)");
    assertModule(Deno.readFileSync(`${root}${SELINUX_MODULE}`));

    const deb = [...Deno.readDirSync(`${REPO}/dist`)].find((e) => e.name.endsWith(".deb"))!;
    const control = dir.join("control");
    const ex = new Deno.Command("dpkg-deb", {
      args: ["-e", `${REPO}/dist/${deb.name}`, control],
    }).outputSync();
    assert.ok(ex.success, "dpkg-deb -e");

    // SELinux enabled: the module is loaded and the files relabelled before
    // the socket starts (systemd labels the socket and picks the daemon's
    // domain when it starts them)
    const on = runScript(dir, `${control}/postinst`, ["configure", ""], true);
    const load = on.indexOf(`semodule -i ${SELINUX_MODULE}`);
    assert.notEqual(load, -1, on.join("\n"));
    const relabel = on.findIndex((l) => l.startsWith("restorecon "));
    assert.ok(relabel > load, on.join("\n"));
    for (const path of ["/usr/bin/prhelperd", "/usr/lib/prhelperd"]) {
      assert.ok(on[relabel].split(" ").includes(path), on[relabel]);
    }
    const start = on.findIndex((l) => l.includes("start prhelperd.socket"));
    if (start !== -1) assert.ok(start > relabel, on.join("\n"));
    // (the host may not run systemd, and then the script starts nothing: the text's order)
    const text = Deno.readTextFileSync(`${control}/postinst`);
    const startAt = text.indexOf("start prhelperd.socket");
    assert.ok(startAt > text.indexOf("restorecon "), text);
    assert.ok(text.indexOf("restorecon ") > text.indexOf("semodule -i "), text);
    // SELinux disabled: neither semodule nor restorecon runs
    const off = runScript(dir, `${control}/postinst`, ["configure", ""], false);
    assert.ok(off.includes("selinuxenabled "), off.join("\n"));
    assert.ok(!off.some((l) => /^(semodule|restorecon) /.test(l)), off.join("\n"));

    // postrm remove: the module goes (when semodule lists it), not on upgrade
    const rm = runScript(dir, `${control}/postrm`, ["remove"], true);
    assert.ok(rm.includes("semodule -r prhelperd"), rm.join("\n"));
    const up = runScript(dir, `${control}/postrm`, ["upgrade", "0.1.0-1"], true);
    assert.ok(!up.some((l) => l.startsWith("semodule -r")), up.join("\n"));
    const offRm = runScript(dir, `${control}/postrm`, ["remove"], false);
    assert.ok(!offRm.some((l) => l.startsWith("semodule")), offRm.join("\n"));
  },
});
