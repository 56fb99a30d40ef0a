// tests/vm/guest/driver/xperm_policy.ts - for 72-selinux-xperm.sh (finding
// 14.6): a copy of a binary policy with `allowxperm` rules added, as a policy
// module would add them (the guest has no checkmodule/semodule).
//
//   deno run -A xperm_policy.ts IN OUT RULE...
//     RULE = SOURCE_TYPE,TARGET_TYPE,CLASS,CMD   allowxperm SOURCE TARGET:CLASS ioctl CMD
//
// Each rule becomes one avtab entry (AVTAB_XPERMS_ALLOWED, IOCTLFUNCTION,
// driver = CMD >> 8, the bit of CMD & 0xff), inserted after the avtab's count,
// which grows by the number of rules. The kernel validates the result when
// it is loaded (load_policy); it is also read back here with the daemon's
// parser, and the SG_IO decision of every rule's triple is printed.
import {
  decideIoctlXperm,
  parseBinaryPolicy,
  SG_IO_COMMAND,
} from "../../../../src/security/selinux_policy.ts";

const [inPath, outPath, ...rules] = Deno.args;
if (!inPath || !outPath || rules.length === 0) {
  console.error("usage: xperm_policy.ts IN OUT SOURCE,TARGET,CLASS,CMD...");
  Deno.exit(2);
}
const image = Deno.readFileSync(inPath);
const policy = parseBinaryPolicy(image);
const lookup = (map: ReadonlyMap<string, number>, name: string, what: string) => {
  const v = map.get(name);
  if (v === undefined) throw new Error(`${what} "${name}" is not in ${inPath}`);
  return v;
};

const entries = rules.map((rule) => {
  const [source, target, tclass, cmdText] = rule.split(",");
  const cmd = Number(cmdText);
  if (!Number.isInteger(cmd) || cmd < 0 || cmd > 0xffff) throw new Error(`bad command in ${rule}`);
  const e = new Uint8Array(8 + 2 + 32);
  const v = new DataView(e.buffer);
  v.setUint16(0, lookup(policy.types, source, "type"), true);
  v.setUint16(2, lookup(policy.types, target, "type"), true);
  v.setUint16(4, lookup(policy.classes, tclass, "class"), true);
  v.setUint16(6, 0x0100, true); // AVTAB_XPERMS_ALLOWED
  e[8] = 0x01; // AVTAB_XPERMS_IOCTLFUNCTION
  e[9] = cmd >>> 8;
  const fn = cmd & 0xff;
  v.setUint32(10 + 4 * (fn >>> 5), (1 << (fn & 31)) >>> 0, true);
  return e;
});
const added = entries.reduce((n, e) => n + e.length, 0);
const at = policy.sections.avtab;
const out = new Uint8Array(image.length + added);
out.set(image.subarray(0, at + 4));
let w = at + 4;
for (const e of entries) {
  out.set(e, w);
  w += e.length;
}
out.set(image.subarray(at + 4), w);
const view = new DataView(out.buffer);
view.setUint32(at, view.getUint32(at, true) + entries.length, true);

const check = parseBinaryPolicy(out);
console.log(
  `${outPath}: version ${check.version}, ${check.avtabEntries} avtab entries ` +
    `(${policy.avtabEntries} + ${entries.length}), ${check.ioctlXperms.length} ioctl xperm rules`,
);
for (const rule of rules) {
  const [sourceType, targetType, tclass] = rule.split(",");
  const d = decideIoctlXperm(check, { sourceType, targetType, tclass, command: SG_IO_COMMAND });
  console.log(`  allowxperm ${rule}: SG_IO on ${targetType}:${tclass} -> ${JSON.stringify(d)}`);
}
Deno.writeFileSync(outPath, out);
