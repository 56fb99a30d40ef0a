/**
 * Issue 18.3: the package grants the packaged daemon (user prhelperd) access
 * to dm-multipath path devices, and only to those, through a udev rule. Its
 * effect on real devices is tested in the systemd VM
 * (tests/vm/systemd/guest-multipath.sh); here: the rule's conditions, and
 * that the built .deb ships it, depends on acl and applies it at install.
 */
import assert from "node:assert/strict";
import { REPO, TempDir, unpackPackage } from "./helpers/daemon.ts";

const RULE = `${REPO}/packaging/prhelperd-multipath.rules`;
const INSTALLED = "usr/lib/udev/rules.d/61-prhelperd-multipath.rules";

/** The rule lines (no comments, no blanks). */
function ruleLines(text: string): string[] {
  return text.split("\n").map((l) => l.trim()).filter((l) => l !== "" && !l.startsWith("#"));
}

Deno.test("multipath udev rule: an ACL for prhelperd on SCSI multipath path disks, removed elsewhere", () => {
  const lines = ruleLines(Deno.readTextFileSync(RULE));
  const grant = lines.filter((l) => l.includes("setfacl -m"));
  assert.equal(grant.length, 1, "one line grants");
  assert.match(grant[0], /ENV\{DM_MULTIPATH_DEVICE_PATH\}=="1"/);
  assert.match(grant[0], /setfacl -m u:prhelperd:rw \$devnode/);
  const revoke = lines.filter((l) => l.includes("setfacl -x"));
  assert.deepEqual(revoke, ['RUN+="/usr/bin/setfacl -x u:prhelperd $devnode"']);
  // the guards before both: block disks named sd*, not partitions, add/change only
  const guards = lines.slice(0, lines.indexOf(grant[0]));
  for (
    const g of [
      'SUBSYSTEM!="block", GOTO="prhelperd_end"',
      'KERNEL!="sd*", GOTO="prhelperd_end"',
      'ENV{DEVTYPE}!="disk", GOTO="prhelperd_end"',
      'ACTION!="add|change", GOTO="prhelperd_end"',
    ]
  ) assert.ok(guards.includes(g), `missing guard ${g}`);
  assert.equal(lines.at(-1), 'LABEL="prhelperd_end"');
  // the grant jumps past the revoke
  assert.match(grant[0], /GOTO="prhelperd_end"$/);
});

Deno.test({
  name: "multipath udev rule: the .deb ships it, depends on acl, and triggers it in postinst",
  ignore: (() => {
    try {
      return ![...Deno.readDirSync(`${REPO}/dist`)].some((e) => e.name.endsWith(".deb"));
    } catch {
      return true;
    }
  })(),
  fn: () => {
    using dir = new TempDir();
    const root = unpackPackage(dir);
    assert.ok(root, "dist/ has no .deb that dpkg-deb unpacks");
    assert.equal(
      Deno.readTextFileSync(`${root}/${INSTALLED}`),
      Deno.readTextFileSync(RULE),
      `${INSTALLED} differs from packaging/prhelperd-multipath.rules`,
    );
    const deb = [...Deno.readDirSync(`${REPO}/dist`)].find((e) => e.name.endsWith(".deb"))!.name;
    const field = (name: string, path: string) =>
      new TextDecoder().decode(
        new Deno.Command("dpkg-deb", { args: ["-f", path, name] }).outputSync().stdout,
      );
    assert.match(field("Depends", `${REPO}/dist/${deb}`), /(^|, )acl(,|$)/m);
    const control = dir.join("control");
    const ex = new Deno.Command("dpkg-deb", { args: ["-e", `${REPO}/dist/${deb}`, control] })
      .outputSync();
    assert.ok(ex.success);
    const postinst = Deno.readTextFileSync(`${control}/postinst`);
    assert.match(
      postinst,
      /udevadm trigger --action=change --subsystem-match=block --property-match=DM_MULTIPATH_DEVICE_PATH=1/,
    );
    // after the user exists
    assert.ok(postinst.indexOf("systemd-sysusers") < postinst.indexOf("udevadm trigger"));
  },
});
