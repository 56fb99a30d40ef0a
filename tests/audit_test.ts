// Unit tests of the audit record (src/security/audit.ts).

import assert from "node:assert/strict";
import fc from "fast-check";
import {
  auditProperties,
  buildAuditRecord,
  describeResult,
  formatAudit,
  formatFields,
  parseVpdPg80,
  parseVpdPg83Naa,
  prTypeName,
  readDeviceIdentity,
} from "../src/security/audit.ts";
import { parseSense } from "../src/sense.ts";

// VPD pages as LIO returns them (serial 5a1d0e8c-…, NAA 6001405…).
const PG80 = new Uint8Array([
  0x00,
  0x80,
  0x00,
  0x24,
  ...new TextEncoder().encode("5a1d0e8c-0000-4000-8000-00000000c0de"),
]);
const NAA = [
  0x60,
  0x01,
  0x40,
  0x55,
  0xa1,
  0xd0,
  0xe8,
  0xc0,
  0x00,
  0x04,
  0x00,
  0x80,
  0x00,
  0x00,
  0x00,
  0x00,
];
const PG83 = new Uint8Array([
  0x00,
  0x83,
  0x00,
  4 + 8 + 4 + 16,
  // T10 vendor id designator (type 1), 8 bytes
  0x02,
  0x01,
  0x00,
  0x08,
  ...new TextEncoder().encode("LIO-ORG "),
  // NAA designator (type 3), LU association, 16 bytes
  0x01,
  0x03,
  0x00,
  0x10,
  ...NAA,
]);

const PR_OUT_REGISTER = new Uint8Array([0x5f, 0x00, 0x00, 0, 0, 0, 0, 0, 24, 0]);
const PR_OUT_RESERVE_WERO = new Uint8Array([0x5f, 0x01, 0x05, 0, 0, 0, 0, 0, 24, 0]);

Deno.test("type names", () => {
  assert.equal(prTypeName(5), "Write Exclusive, Registrants Only");
  assert.equal(prTypeName(2), "reserved (2)");
});

Deno.test("VPD 80h serial and 83h NAA parsing", () => {
  assert.equal(parseVpdPg80(PG80), "5a1d0e8c-0000-4000-8000-00000000c0de");
  assert.equal(parseVpdPg80(new Uint8Array([0, 0x83, 0, 0])), null);
  assert.equal(parseVpdPg80(new Uint8Array([0, 0x80, 0, 4, 0x20, 0x20, 0x20, 0x20])), null);
  assert.equal(parseVpdPg83Naa(PG83), "naa.60014055a1d0e8c00004008000000000");
  // truncated page: no NAA, no crash
  assert.equal(parseVpdPg83Naa(PG83.subarray(0, 20)), null);
  assert.equal(parseVpdPg83Naa(new Uint8Array([0, 0x80, 0, 0])), null);
});

Deno.test("property: the VPD parsers never throw", () => {
  fc.assert(fc.property(fc.uint8Array({ maxLength: 80 }), (bytes) => {
    parseVpdPg80(bytes);
    parseVpdPg83Naa(bytes);
    if (bytes.length > 1) {
      bytes[1] = 0x83;
      parseVpdPg83Naa(bytes);
    }
  }));
});

Deno.test("sense key/ASC/ASCQ of an audit record, from fixed and descriptor sense", () => {
  const fixed = new Uint8Array(18);
  fixed[0] = 0x70;
  fixed[2] = 0x05;
  fixed[12] = 0x20;
  fixed[13] = 0x02;
  assert.deepEqual(parseSense(fixed), { key: 5, asc: 0x20, ascq: 2 });
  assert.deepEqual(parseSense(new Uint8Array([0x72, 0x06, 0x2a, 0x03])), {
    key: 6,
    asc: 0x2a,
    ascq: 3,
  });
  assert.equal(parseSense(new Uint8Array(18)), null);
});

Deno.test("record, properties and the key=value line", () => {
  const rec = buildAuditRecord({
    peer: { pid: 812, uid: 64055, gid: 108, context: "system_u:system_r:svirt_t:s0:c1,c2" },
    device: { kind: "block", major: 8, minor: 0 },
    cdb: PR_OUT_RESERVE_WERO,
    result: { status: 0x18 },
    identity: { serial: "5a1d0e8c-0000-4000-8000-00000000c0de", naa: "naa.6001405", wwid: null },
  });
  assert.equal(rec.serviceActionName, "RESERVE");
  assert.equal(rec.scope, 0);
  assert.equal(rec.type, 5);
  const props = auditProperties(rec);
  assert.equal(props.result, "RESERVATION_CONFLICT");
  assert.equal(props.type_name, "WE_RO");
  assert.equal(props.status, 0x18);
  assert.equal(props.dev, "8:0");
  assert.equal(
    formatAudit(rec),
    "prhelperd audit: event=pr-out peer_pid=812 peer_uid=64055 peer_gid=108 " +
      "peer_context=system_u:system_r:svirt_t:s0:c1,c2 dev=8:0 dev_kind=block " +
      "dev_serial=5a1d0e8c-0000-4000-8000-00000000c0de dev_naa=naa.6001405 sa=1 sa_name=RESERVE " +
      "scope=0 type=5 type_name=WE_RO status=24 result=RESERVATION_CONFLICT",
  );
});

Deno.test("record: CHECK CONDITION with sense, SG_IO errors, unknown identity", () => {
  const rec = buildAuditRecord({
    peer: { pid: 1, uid: 0, gid: 0, context: null },
    device: { kind: "char", major: 21, minor: 1 },
    cdb: PR_OUT_REGISTER,
    result: { status: 2, sense: { key: 5, asc: 0x24, ascq: 0 } },
    identity: { serial: null, naa: null, wwid: "t10.LIO-ORG" },
  });
  const line = formatAudit(rec);
  assert.match(line, /dev=21:1 dev_kind=char dev_naa=t10\.LIO-ORG sa=0 sa_name=REGISTER /);
  assert.match(line, /status=2 sense=05\/24\/00 result=CHECK_CONDITION$/);
  assert.doesNotMatch(line, /peer_context|dev_serial/);
  assert.equal(describeResult({ error: "EIO" }), "error:EIO");
  const move = buildAuditRecord({
    peer: { pid: 1, uid: 0, gid: 0, context: "unconfined (enforce)" },
    device: { kind: "block", major: 8, minor: 16 },
    cdb: new Uint8Array([0x5f, 0x07, 0x03, 0, 0, 0, 0, 0, 24, 0]),
    result: { error: "EIO" },
    identity: { serial: null, naa: null, wwid: null },
  });
  assert.match(
    formatAudit(move),
    /peer_context="unconfined \(enforce\)" .*sa_name=REGISTER_AND_MOVE scope=0 type=3 type_name=EA result=error:EIO$/,
  );
  assert.throws(
    () =>
      buildAuditRecord({
        peer: { pid: 1, uid: 0, gid: 0, context: null },
        device: { kind: "block", major: 8, minor: 0 },
        cdb: new Uint8Array([0x5e, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
        result: { status: 0 },
        identity: { serial: null, naa: null, wwid: null },
      }),
    /CDB 5e 0… is not PR OUT/,
  );
});

Deno.test("formatFields quotes what would break parsing", () => {
  assert.equal(
    formatFields({ a: "x", b: "two words", c: 'q"uote', d: "a=b", e: "", f: "\n", g: null, h: 7 }),
    'a=x b="two words" c="q\\"uote" d="a=b" e="" f="\\x0a" h=7',
  );
});

Deno.test("property: formatFields output splits back into its fields", () => {
  const parse = (line: string): Record<string, string> => {
    const out: Record<string, string> = {};
    const re = /([a-z_]+)=(?:"((?:[^"\\]|\\.)*)"|(\S*))/g;
    for (const m of line.matchAll(re)) {
      out[m[1]] = m[2] !== undefined
        ? m[2].replace(
          /\\x([0-9a-f]{2})|\\(.)/g,
          (_, h, c) => h ? String.fromCharCode(parseInt(h, 16)) : c,
        )
        : m[3];
    }
    return out;
  };
  fc.assert(fc.property(
    fc.dictionary(fc.stringMatching(/^[a-z_]{1,6}$/), fc.string({ maxLength: 12 })),
    (fields) => assert.deepEqual(parse(formatFields(fields)), { ...fields }),
  ));
});

Deno.test("readDeviceIdentity on a device without SCSI sysfs attributes: all null", () => {
  // /dev/null is char 1:3; it has no device/vpd_* in sysfs
  assert.deepEqual(readDeviceIdentity("char", { major: 1, minor: 3 }), {
    serial: null,
    naa: null,
    wwid: null,
  });
});
