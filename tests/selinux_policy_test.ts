// The binary-policy reader and the kernel's ioctl extended-permission decision
// (src/security/selinux_policy.ts), finding 14.6: the daemon's SELinux question must
// include `allowxperm` rules, which the kernel applies to SG_IO (0x2285) and
// /sys/fs/selinux/access does not report. The images are checkpolicy's
// (tests/fixtures/selinux/xperm_policy.conf, build.sh), not written by us.

import assert from "node:assert/strict";
import {
  type BinaryPolicy,
  decideIoctlXperm,
  parseBinaryPolicy,
  PolicyFormatError,
  SG_IO_COMMAND,
} from "../src/security/selinux_policy.ts";

const fixture = (name: string) =>
  Deno.readFileSync(new URL(`./fixtures/selinux/${name}`, import.meta.url));
const V33 = fixture("xperm_policy.33");
const V30 = fixture("xperm_policy.30");

function sgIo(p: BinaryPolicy, sourceType: string, targetType: string, tclass: string) {
  return decideIoctlXperm(p, { sourceType, targetType, tclass, command: SG_IO_COMMAND });
}

for (const [name, image, version] of [["33", V33, 33], ["30", V30, 30]] as const) {
  Deno.test(`14.6: checkpolicy's version ${name} image parses to its end, names and rules intact`, () => {
    const p = parseBinaryPolicy(image);
    assert.equal(p.version, version);
    assert.equal(p.mls, true);
    assert.equal(p.sections.end, image.length);
    assert.deepEqual(
      [...p.classes.keys()].sort(),
      ["blk_file", "chr_file", "fd", "process", "security", "tcp_socket"],
    );
    for (const t of ["svirt_t", "other_t", "svirt_image_t", "fixed_disk_t", "domain", "image"]) {
      assert.ok(p.types.has(t), t);
    }
    // an alias carries its primary type's value
    assert.equal(p.types.get("virt_image_alias_t"), p.types.get("svirt_image_t"));
    assert.ok(p.attributes.has(p.types.get("domain")!));
    assert.ok(!p.attributes.has(p.types.get("svirt_t")!));
    assert.deepEqual(
      Object.fromEntries([...p.booleans].map(([n, b]) => [n, b.state])),
      { xperm_switch: false, ioctl_switch: true },
    );
    // allowxperm × 3 (one a driver range) and one dontauditxperm
    assert.deepEqual(p.ioctlXperms.map((x) => x.rule).sort(), [
      "allowxperm",
      "allowxperm",
      "allowxperm",
      "dontauditxperm",
    ]);
    const svirt = p.types.get("svirt_t")!;
    assert.ok(p.typeAttributes(svirt).has(p.types.get("domain")!));
    assert.ok(p.typeAttributes(svirt).has(svirt));
    assert.throws(() => p.typeAttributes(0), /type value 0 is not in 1\.\./);
  });

  Deno.test(`14.6: the SG_IO decision of version ${name} follows the kernel's rules`, () => {
    const p = parseBinaryPolicy(image);
    // a function rule for TCGETS only: SG_IO's driver 0x22 is not listed
    assert.deepEqual(sgIo(p, "svirt_t", "svirt_image_t", "blk_file"), {
      kind: "denied",
      rules: 1,
      why: "no xperm rule names ioctl driver 0x22 (command 0x2285)",
    });
    // a function rule listing 0x2285
    assert.deepEqual(sgIo(p, "svirt_t", "svirt_image_t", "chr_file"), {
      kind: "allowed",
      rules: 1,
    });
    // the alias is the same type
    assert.equal(sgIo(p, "svirt_t", "virt_image_alias_t", "chr_file").kind, "allowed");
    // a driver rule (0x2200-0x22ff) on an attribute source applies to every domain
    assert.equal(sgIo(p, "svirt_t", "fixed_disk_t", "chr_file").kind, "allowed");
    assert.equal(sgIo(p, "other_t", "fixed_disk_t", "chr_file").kind, "allowed");
    // a dontauditxperm rule alone switches filtering on: nothing is allowed
    assert.equal(sgIo(p, "other_t", "svirt_image_t", "blk_file").kind, "denied");
    // no xperm rule for the triple: the ioctl permission alone decides
    assert.deepEqual(sgIo(p, "other_t", "fixed_disk_t", "blk_file"), { kind: "no-rules" });
    assert.deepEqual(sgIo(p, "kernel_t", "svirt_image_t", "blk_file"), { kind: "no-rules" });
    // the listed functions and only those
    const q = { sourceType: "svirt_t", targetType: "svirt_image_t", tclass: "chr_file" };
    assert.equal(decideIoctlXperm(p, { ...q, command: 0x2282 }).kind, "allowed");
    assert.equal(decideIoctlXperm(p, { ...q, command: 0x2286 }).kind, "denied");
    assert.equal(decideIoctlXperm(p, { ...q, command: 0x5401 }).kind, "denied");
    const b = { ...q, tclass: "blk_file" };
    assert.equal(decideIoctlXperm(p, { ...b, command: 0x5401 }).kind, "allowed");
  });
}

Deno.test("14.6: unknown names and commands are errors that name them (the daemon refuses then)", () => {
  const p = parseBinaryPolicy(V33);
  assert.throws(() => sgIo(p, "nobody_t", "svirt_image_t", "blk_file"), /type "nobody_t"/);
  assert.throws(() => sgIo(p, "svirt_t", "nothing_t", "blk_file"), /type "nothing_t"/);
  assert.throws(() => sgIo(p, "svirt_t", "svirt_image_t", "sock_file"), /class "sock_file"/);
  assert.throws(
    () =>
      decideIoctlXperm(p, {
        sourceType: "svirt_t",
        targetType: "svirt_image_t",
        tclass: "blk_file",
        command: 0x12345,
      }),
    /ioctl command 74565 is not a 16-bit value/,
  );
});

Deno.test("14.6: every truncation of the image is a PolicyFormatError, never a partial policy", () => {
  for (let n = 0; n < V33.length; n++) {
    assert.throws(() => parseBinaryPolicy(V33.subarray(0, n)), PolicyFormatError, `length ${n}`);
  }
});

Deno.test("14.6: foreign or unknown images are refused with the reason", () => {
  const extra = new Uint8Array(V33.length + 1);
  extra.set(V33);
  assert.throws(() => parseBinaryPolicy(extra), /1 bytes after the last section/);
  const bad = (at: number, value: number) => {
    const b = V33.slice();
    new DataView(b.buffer).setUint32(at, value, true);
    return b;
  };
  assert.throws(() => parseBinaryPolicy(bad(0, 0xf97cff8d)), /magic 0xf97cff8d/);
  assert.throws(() => parseBinaryPolicy(bad(16, 36)), /policy version 36 is outside 24\.\.35/);
  assert.throws(() => parseBinaryPolicy(bad(16, 23)), /policy version 23 is outside/);
  assert.throws(() => parseBinaryPolicy(bad(24, 7)), /table sizes \(7,9\) are not \(8,9\)/);
  const xen = V33.slice();
  xen.set(new TextEncoder().encode("XenFlask"), 8);
  assert.throws(() => parseBinaryPolicy(xen), /target "XenFlask" is not "SE Linux"/);
});

/** A copy of `image` with `insert` spliced in at `at`. */
function splice(image: Uint8Array, at: number, insert: Uint8Array): Uint8Array {
  const out = new Uint8Array(image.length + insert.length);
  out.set(image.subarray(0, at));
  out.set(insert, at);
  out.set(image.subarray(at), at + insert.length);
  return out;
}

/** Little-endian bytes of u32 or u16 values. */
function le(words: { u16?: number[]; u32?: number[] }[]): Uint8Array {
  const parts: number[] = [];
  for (const w of words) {
    for (const v of w.u32 ?? []) {
      parts.push(v & 0xff, (v >>> 8) & 0xff, (v >>> 16) & 0xff, v >>> 24);
    }
    for (const v of w.u16 ?? []) parts.push(v & 0xff, v >>> 8);
  }
  return new Uint8Array(parts);
}

Deno.test("14.6: version 35 (a neveraudit map after the permissive map) parses the same", () => {
  const p33 = parseBinaryPolicy(V33);
  // header: magic, len, "SE Linux", version, config, sym_num, ocon_num; then 2 ebitmaps
  const view = new DataView(V33.buffer, V33.byteOffset);
  let at = 32;
  for (let i = 0; i < 2; i++) at += 12 + 12 * view.getUint32(at + 8, true);
  const v35 = splice(V33, at, le([{ u32: [64, 0, 0] }]));
  new DataView(v35.buffer).setUint32(16, 35, true);
  const p = parseBinaryPolicy(v35);
  assert.equal(p.version, 35);
  assert.equal(p.ioctlXperms.length, p33.ioctlXperms.length);
  assert.equal(sgIo(p, "svirt_t", "svirt_image_t", "blk_file").kind, "denied");
});

Deno.test("14.6: version 34 conditional xperm rules count only in the enabled branch", () => {
  const p33 = parseBinaryPolicy(V33);
  const T = (n: string) => p33.types.get(n)!;
  const C = (n: string) => p33.classes.get(n)!;
  // allowxperm other_t fixed_disk_t:blk_file ioctl 0x22<fn> (an IOCTLFUNCTION entry)
  const xpermEntry = (fn: number) => {
    const map = new Array<number>(8).fill(0);
    map[fn >>> 5] = (1 << (fn & 31)) >>> 0;
    return new Uint8Array([
      ...le([{ u16: [T("other_t"), T("fixed_disk_t"), C("blk_file"), 0x0100] }]),
      0x01,
      0x22,
      ...le([{ u32: map }]),
    ]);
  };
  // a node on ioctl_switch (true): cur_state 1, expression [COND_BOOL ioctl_switch],
  // then the true list and the false list
  const on = p33.booleans.get("ioctl_switch")!;
  assert.equal(on.state, true);
  const node = (trueFn: number | null, falseFn: number | null) =>
    new Uint8Array([
      ...le([{ u32: [1, 1, 1, on.value] }]),
      ...le([{ u32: [trueFn === null ? 0 : 1] }]),
      ...(trueFn === null ? [] : xpermEntry(trueFn)),
      ...le([{ u32: [falseFn === null ? 0 : 1] }]),
      ...(falseFn === null ? [] : xpermEntry(falseFn)),
    ]);
  const withNode = (bytes: Uint8Array) => {
    const at = p33.sections.condList;
    const img = splice(V33, at + 4, bytes);
    const v = new DataView(img.buffer);
    v.setUint32(16, 34, true);
    v.setUint32(at, v.getUint32(at, true) + 1, true);
    return parseBinaryPolicy(img);
  };
  // enabled branch lists SG_IO (function 0x85): filtering on, SG_IO allowed
  assert.equal(
    sgIo(withNode(node(0x85, null)), "other_t", "fixed_disk_t", "blk_file").kind,
    "allowed",
  );
  // enabled branch lists 0x2286 only: SG_IO denied
  assert.equal(
    sgIo(withNode(node(0x86, null)), "other_t", "fixed_disk_t", "blk_file").kind,
    "denied",
  );
  // the rule sits in the disabled (false) branch: no rules
  assert.equal(
    sgIo(withNode(node(null, 0x86)), "other_t", "fixed_disk_t", "blk_file").kind,
    "no-rules",
  );
  // a recorded state that contradicts the expression is refused, not trusted
  const wrong = node(0x85, null);
  wrong[0] = 0;
  assert.throws(() => withNode(wrong), /recorded state 0 differs from its expression/);
  // and conditional xperms are refused before version 34
  const img = splice(V33, p33.sections.condList + 4, node(0x85, null));
  const v = new DataView(img.buffer);
  v.setUint32(p33.sections.condList, v.getUint32(p33.sections.condList, true) + 1, true);
  assert.throws(() => parseBinaryPolicy(img), /conditional xperm entry in a version 33 policy/);
});
