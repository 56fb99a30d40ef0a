/** PR CDB builders and parsers, and parameter-list encoders. */

import assert from "node:assert/strict";
import fc from "fast-check";
import {
  parsePrCdb,
  PrInAction,
  prInCdb,
  PrOutAction,
  prOutCdb,
  PrOutFlags,
  prOutParameters,
  PrType,
  registerAndMoveParameters,
  sasTransportId,
} from "../src/cdb.ts";
import { cdbDataLength, PR_IN, PR_OUT } from "../src/wire.ts";

Deno.test("prInCdb: 16 bytes, opcode, action, BE16 allocation length at 7-8", () => {
  const c = prInCdb(PrInAction.READ_RESERVATION, 0x1234);
  assert.equal(c.length, 16);
  assert.deepEqual([...c], [0x5e, 1, 0, 0, 0, 0, 0, 0x12, 0x34, 0, 0, 0, 0, 0, 0, 0]);
  assert.throws(() => prInCdb(0, -1), RangeError);
  assert.throws(() => prInCdb(0, 0x10000), /65536/);
});

Deno.test("prOutCdb: scope/type in byte 2, BE32 parameter length in 5-8", () => {
  const c = prOutCdb(PrOutAction.RESERVE, 24, { scope: 0, type: PrType.WRITE_EXCLUSIVE });
  assert.deepEqual([...c.subarray(0, 10)], [0x5f, 1, 0x01, 0, 0, 0, 0, 0, 24, 0]);
  const big = prOutCdb(PrOutAction.REGISTER, 0x00010018);
  assert.deepEqual([...big.subarray(5, 9)], [0, 1, 0, 0x18]);
  // the wire length (QEMU's rule) is the low 16 bits
  assert.equal(cdbDataLength(big), 0x18);
  assert.throws(() => prOutCdb(0, -1), RangeError);
});

Deno.test("parsePrCdb: names, scope, type, length, 10-byte device CDB", () => {
  const p = parsePrCdb(prOutCdb(PrOutAction.PREEMPT_AND_ABORT, 24, {
    scope: 0,
    type: PrType.EXCLUSIVE_ACCESS_REGISTRANTS_ONLY,
  }));
  assert.equal(p.direction, "out");
  assert.equal(p.serviceActionName, "PREEMPT AND ABORT");
  assert.equal(p.type, 6);
  assert.equal(p.length, 24);
  assert.equal(p.deviceCdb.length, 10);
  const q = parsePrCdb(prInCdb(PrInAction.READ_FULL_STATUS, 8192));
  assert.equal(q.direction, "in");
  assert.equal(q.serviceActionName, "READ FULL STATUS");
  assert.equal(q.scope, 0);
  assert.equal(q.type, 0);
  assert.equal(parsePrCdb(prInCdb(0x1f, 0)).serviceActionName, "service action 0x1f");
  assert.throws(() => parsePrCdb(new Uint8Array(16)), /0x0/);
});

Deno.test("parsePrCdb inverts the builders (property)", () => {
  fc.assert(
    fc.property(fc.nat({ max: 31 }), fc.nat({ max: 0xffff }), (sa, len) => {
      const p = parsePrCdb(prInCdb(sa, len));
      assert.equal(p.serviceAction, sa);
      assert.equal(p.length, len);
      assert.equal(p.deviceCdb[0], PR_IN);
    }),
  );
  fc.assert(
    fc.property(
      fc.nat({ max: 31 }),
      fc.nat({ max: 0xffff }),
      fc.nat({ max: 15 }),
      fc.nat({ max: 15 }),
      (sa, len, scope, type) => {
        const p = parsePrCdb(prOutCdb(sa, len, { scope, type }));
        assert.deepEqual([p.serviceAction, p.length, p.scope, p.type], [sa, len, scope, type]);
        assert.equal(p.deviceCdb[0], PR_OUT);
      },
    ),
  );
});

Deno.test("prOutParameters: keys, flags, TransportID list", () => {
  const p = prOutParameters({
    key: 0x0102030405060708n,
    serviceActionKey: -1n,
    flags: PrOutFlags.APTPL | PrOutFlags.ALL_TG_PT,
  });
  assert.equal(p.length, 24);
  assert.deepEqual([...p.subarray(0, 8)], [1, 2, 3, 4, 5, 6, 7, 8]);
  assert.deepEqual([...p.subarray(8, 16)], new Array(8).fill(0xff));
  assert.equal(p[20], 0x05);
  const tid = sasTransportId(0x5001405abcdef000n);
  assert.equal(tid.length, 24);
  assert.equal(tid[0], 0x06);
  const q = prOutParameters({ flags: PrOutFlags.SPEC_I_PT, transportIds: [tid, tid] });
  assert.equal(q.length, 24 + 4 + 48);
  assert.equal(new DataView(q.buffer).getUint32(24), 48);
  assert.deepEqual(q.subarray(28, 52), tid);
});

Deno.test("registerAndMoveParameters: layout", () => {
  const tid = sasTransportId(1n);
  const p = registerAndMoveParameters({
    key: 1n,
    serviceActionKey: 2n,
    unregister: true,
    aptpl: true,
    relativeTargetPort: 0x0203,
    transportId: tid,
  });
  assert.equal(p.length, 48);
  assert.equal(p[7], 1);
  assert.equal(p[15], 2);
  assert.equal(p[17], 0x03);
  assert.deepEqual([...p.subarray(18, 20)], [2, 3]);
  assert.equal(new DataView(p.buffer).getUint32(20), 24);
});
