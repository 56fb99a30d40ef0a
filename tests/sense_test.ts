/**
 * Sense data and the SG_IO outcome mapping: qemu-pr-helper's errno and
 * host_status tables, the driver timeout, the device's status and sense
 * passed through, and the deliberate difference (no error is ever GOOD).
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import { Errno } from "../ffi/errno.ts";
import {
  checkCondition,
  DRIVER_TIMEOUT,
  fixedSense,
  formatSense,
  HostStatus,
  mapSgIoOutcome,
  parseSense,
  Sense,
  type SgIoOutcome,
  verdictForErrno,
  verdictForHostStatus,
} from "../src/sense.ts";
import { ScsiStatus, SENSE_LEN } from "../src/wire.ts";

/** `KK/AA/QQ` or "-" for an all-zero/unknown sense, with the status. */
function verdict(v: { status: number; sense: Uint8Array }): string {
  const s = parseSense(v.sense);
  return `0x${v.status.toString(16).padStart(2, "0")} ${s ? formatSense(s) : "-"}`;
}

Deno.test("fixedSense: response code 0x70, key, additional length 10, ASC/ASCQ at 12/13", () => {
  const s = fixedSense({ key: 0x05, asc: 0x20, ascq: 0x00 });
  assert.equal(s.length, SENSE_LEN);
  assert.equal(s[0], 0x70);
  assert.equal(s[2], 0x05);
  assert.equal(s[7], 0x0a);
  assert.equal(s[12], 0x20);
  assert.equal(s[13], 0x00);
  assert.equal(s.subarray(18).some((b) => b !== 0), false);
});

Deno.test("parseSense: fixed, deferred, descriptor, and unknown formats", () => {
  assert.deepEqual(parseSense(fixedSense(Sense.NO_MEDIUM)), Sense.NO_MEDIUM);
  const deferred = fixedSense(Sense.IO_ERROR);
  deferred[0] = 0xf1; // valid bit + deferred
  assert.deepEqual(parseSense(deferred), Sense.IO_ERROR);
  const desc = new Uint8Array(96);
  desc.set([0x72, 0x06, 0x29, 0x00]);
  assert.deepEqual(parseSense(desc), Sense.DEVICE_RESET);
  assert.equal(parseSense(new Uint8Array(96)), null);
});

Deno.test("parseSense(fixedSense(x)) round trip (property)", () => {
  fc.assert(
    fc.property(
      fc.nat({ max: 15 }),
      fc.nat({ max: 255 }),
      fc.nat({ max: 255 }),
      (key, asc, ascq) => {
        assert.deepEqual(parseSense(fixedSense({ key, asc, ascq })), { key, asc, ascq });
      },
    ),
  );
});

Deno.test("formatSense: upper-case hex KK/AA/QQ", () => {
  assert.equal(formatSense(Sense.SPACE_ALLOC_FAILED), "07/27/07");
  assert.equal(formatSense(Sense.NEXUS_LOSS), "0B/29/07");
});

Deno.test("errno table as qemu-pr-helper (ENOTTY and every unlisted errno: 0B/00/06)", () => {
  const table: [number, string][] = [
    [Errno.EDOM, "0x28 -"],
    [Errno.EREMOTEIO, "0x02 04/44/00"],
    [Errno.ENODEV, "0x02 04/44/00"],
    [Errno.ENOMEM, "0x02 04/44/00"],
    [Errno.EBADE, "0x18 -"],
    [Errno.ENODATA, "0x02 03/11/00"],
    [Errno.ENOMEDIUM, "0x02 02/3A/00"],
    [Errno.EINVAL, "0x02 05/24/00"],
    [Errno.ENOSPC, "0x02 07/27/07"],
    [Errno.ENOTTY, "0x02 0B/00/06"],
    [Errno.EPERM, "0x02 0B/00/06"],
    [Errno.EACCES, "0x02 0B/00/06"],
    [Errno.EIO, "0x02 0B/00/06"],
  ];
  for (const [errno, want] of table) {
    assert.equal(verdict(verdictForErrno(errno)), want, `errno ${errno}`);
  }
});

Deno.test("errno: no errno maps to GOOD; sense is always 96 bytes (property)", () => {
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 4095 }), (errno) => {
      const v = verdictForErrno(errno);
      assert.notEqual(v.status, ScsiStatus.GOOD);
      assert.equal(v.sense.length, SENSE_LEN);
      const m = mapSgIoOutcome({ kind: "errno", errno }, 8192);
      assert.equal(m.dataLength, 0);
    }),
  );
});

Deno.test("host_status table as qemu-pr-helper", () => {
  const table: [number, string][] = [
    [HostStatus.NO_CONNECT, "0x02 0B/05/00"],
    [HostStatus.BUS_BUSY, "0x08 -"],
    [HostStatus.TIME_OUT, "0x02 0B/2E/02"],
    [HostStatus.BAD_TARGET, "0x02 0B/08/00"],
    [HostStatus.ABORT, "0x02 0B/2F/02"],
    [HostStatus.RESET, "0x02 06/29/00"],
    [HostStatus.TRANSPORT_DISRUPTED, "0x02 0B/29/07"],
    [HostStatus.TARGET_FAILURE, "0x02 04/44/00"],
    [HostStatus.NEXUS_FAILURE, "0x18 -"],
    [HostStatus.ALLOC_FAILURE, "0x02 07/27/07"],
    [HostStatus.MEDIUM_ERROR, "0x02 03/11/00"],
  ];
  for (const [host, want] of table) {
    assert.equal(verdict(verdictForHostStatus(host)), want, `host 0x${host.toString(16)}`);
  }
});

Deno.test("host_status not in the table (DID_ERROR 0x07, 0x0B, 0x0F...) is an error, not GOOD (improvement)", () => {
  for (const host of [HostStatus.PARITY, HostStatus.ERROR, 0x0b, 0x0f, 0x14, 0xff]) {
    assert.equal(
      verdict(verdictForHostStatus(host)),
      "0x02 0B/08/00",
      `host 0x${host.toString(16)}`,
    );
  }
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 0xffff }), fc.nat({ max: 255 }), (host, status) => {
      const m = mapSgIoOutcome({
        kind: "done",
        status,
        hostStatus: host,
        driverStatus: 0,
        sense: new Uint8Array(96),
        resid: 0,
      }, 8192);
      assert.notEqual(m.status, ScsiStatus.GOOD, `host 0x${host.toString(16)} gave GOOD`);
      assert.equal(m.dataLength, 0);
    }),
  );
});

function done(over: Partial<Extract<SgIoOutcome, { kind: "done" }>>): SgIoOutcome {
  return {
    kind: "done",
    status: 0,
    hostStatus: 0,
    driverStatus: 0,
    sense: new Uint8Array(96),
    resid: 0,
    ...over,
  };
}

Deno.test("driver timeout → BUSY, no data", () => {
  const m = mapSgIoOutcome(done({ driverStatus: DRIVER_TIMEOUT }), 100);
  assert.equal(m.status, ScsiStatus.BUSY);
  assert.equal(m.dataLength, 0);
  // a suggestion byte in the high nibble does not hide it
  assert.equal(mapSgIoOutcome(done({ driverStatus: 0x26 }), 100).status, ScsiStatus.BUSY);
});

Deno.test("order: errno before host_status before driver before device status", () => {
  assert.equal(
    verdict(
      mapSgIoOutcome(done({ hostStatus: HostStatus.BUS_BUSY, driverStatus: 6, status: 2 }), 8),
    ),
    "0x08 -",
  );
  assert.equal(
    verdict(mapSgIoOutcome(done({ hostStatus: HostStatus.RESET, driverStatus: 6 }), 8)),
    "0x02 06/29/00",
  );
});

Deno.test("device status and sense pass through unchanged (fixed and descriptor)", () => {
  const desc = new Uint8Array(96);
  desc.set([0x72, 0x05, 0x24, 0x00, 0, 0, 0, 0]);
  desc[90] = 0x5a; // bytes beyond the descriptor survive too
  const m = mapSgIoOutcome(done({ status: 2, driverStatus: 0x08, sense: desc }), 64);
  assert.equal(m.status, 2);
  assert.deepEqual(m.sense, desc);
  assert.equal(m.dataLength, 0);
  const rc = mapSgIoOutcome(done({ status: ScsiStatus.RESERVATION_CONFLICT }), 64);
  assert.equal(rc.status, 0x18);
  // a longer kernel buffer is cut to 96, a shorter one padded
  const long = new Uint8Array(120).fill(1);
  assert.deepEqual(
    mapSgIoOutcome(done({ status: 2, sense: long }), 8).sense,
    new Uint8Array(96).fill(1),
  );
});

Deno.test("GOOD: data length is transfer length minus resid, clamped (property)", () => {
  fc.assert(
    fc.property(fc.nat({ max: 8192 }), fc.integer({ min: -100, max: 10000 }), (len, resid) => {
      const m = mapSgIoOutcome(done({ resid }), len);
      assert.equal(m.status, 0);
      assert.ok(m.dataLength >= 0 && m.dataLength <= len);
      if (resid >= 0 && resid <= len) assert.equal(m.dataLength, len - resid);
    }),
  );
});

Deno.test("checkCondition builds status 0x02 with fixed sense", () => {
  const v = checkCondition(Sense.ACCESS_DENIED);
  assert.equal(verdict(v), "0x02 05/20/02");
});
