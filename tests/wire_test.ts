/**
 * Wire codec: unit tests and fast-check properties (round trips, the reply
 * invariants QEMU asserts on, and the RequestFramer fed arbitrary streams).
 */

import assert from "node:assert/strict";
import fc from "fast-check";
import {
  CDB_LEN,
  cdbDataLength,
  checkCdbFrame,
  checkRequestedFeatures,
  decodeFeatures,
  decodeReplyHeader,
  discardedFds,
  encodeFeatures,
  encodeReply,
  MAX_DATA_LEN,
  PR_IN,
  PR_OUT,
  ProtocolError,
  type Request,
  RequestFramer,
  ScsiStatus,
  SENSE_LEN,
} from "../src/wire.ts";

const NUM_RUNS = 300;

function cdb(opcode: number, length: number, action = 0): Uint8Array {
  const c = new Uint8Array(CDB_LEN);
  c[0] = opcode;
  c[1] = action;
  c[7] = length >> 8;
  c[8] = length & 0xff;
  return c;
}

function greeted(): RequestFramer {
  const f = new RequestFramer();
  f.push(new Uint8Array(4));
  assert.equal(f.phase, "cdb");
  return f;
}

function protocolError(fn: () => unknown): ProtocolError {
  try {
    fn();
  } catch (e) {
    assert.ok(e instanceof ProtocolError, `expected ProtocolError, got ${e}`);
    return e;
  }
  assert.fail("no error thrown");
}

// ------------------------------------------------------------------ features

Deno.test("features: encode is 4 bytes big-endian", () => {
  assert.deepEqual([...encodeFeatures(0x01020304)], [1, 2, 3, 4]);
  assert.deepEqual([...encodeFeatures(0)], [0, 0, 0, 0]);
  assert.deepEqual([...encodeFeatures(0xffffffff)], [255, 255, 255, 255]);
});

Deno.test("features: decode rejects a word that is not 4 bytes", () => {
  assert.throws(() => decodeFeatures(new Uint8Array(3)), RangeError);
  assert.throws(() => decodeFeatures(new Uint8Array(5)), RangeError);
});

Deno.test("features: round trip (property)", () => {
  fc.assert(
    fc.property(fc.nat({ max: 0xffffffff }), (w) => decodeFeatures(encodeFeatures(w)) === w),
    { numRuns: NUM_RUNS },
  );
});

Deno.test("features: decode reads at the view's offset", () => {
  const buf = new Uint8Array([9, 9, 0, 0, 0, 7, 9]);
  assert.equal(decodeFeatures(buf.subarray(2, 6)), 7);
});

Deno.test("features: 0 is accepted, any other bit closes (property)", () => {
  checkRequestedFeatures(0);
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 0xffffffff }), (w) => {
      const e = protocolError(() => checkRequestedFeatures(w));
      assert.equal(e.reason, "unsupported-features");
      assert.match(e.message, /0x[0-9a-f]+/);
    }),
    { numRuns: NUM_RUNS },
  );
});

// ------------------------------------------------------------------ CDB frame

Deno.test("cdb frame: N is BE16 at bytes 7-8, bytes 5-6 ignored", () => {
  const c = cdb(PR_OUT, 24);
  c[5] = 0xff;
  c[6] = 0x01;
  assert.equal(cdbDataLength(c), 24);
  assert.deepEqual(checkCdbFrame(c, 1), { opcode: PR_OUT, dataLength: 24, payloadLength: 24 });
  assert.deepEqual(checkCdbFrame(cdb(PR_IN, 8192), 1), {
    opcode: PR_IN,
    dataLength: 8192,
    payloadLength: 0,
  });
});

Deno.test("cdb frame: each close case has its reason", () => {
  assert.equal(protocolError(() => checkCdbFrame(cdb(PR_IN, 8), 0)).reason, "no-fd");
  assert.equal(protocolError(() => checkCdbFrame(cdb(PR_IN, 8), 2)).reason, "too-many-fds");
  assert.equal(protocolError(() => checkCdbFrame(cdb(0x12, 8), 1)).reason, "bad-opcode");
  assert.equal(protocolError(() => checkCdbFrame(cdb(0xff, 8), 1)).reason, "bad-opcode");
  assert.equal(
    protocolError(() => checkCdbFrame(cdb(PR_IN, 8193), 1)).reason,
    "length-too-large",
  );
  assert.equal(
    protocolError(() => checkCdbFrame(cdb(PR_OUT, 0xffff), 1)).reason,
    "length-too-large",
  );
  assert.equal(
    protocolError(() => checkCdbFrame(new Uint8Array(10), 1)).reason,
    "truncated-cdb",
  );
});

Deno.test("cdb frame: bad-opcode message names the opcode", () => {
  assert.match(protocolError(() => checkCdbFrame(cdb(0x12, 0), 1)).message, /0x12/);
  assert.match(protocolError(() => checkCdbFrame(cdb(PR_IN, 9000), 1)).message, /9000/);
});

// ------------------------------------------------------------------ replies

Deno.test("reply: PR IN GOOD carries data cut to the allocation length", () => {
  const data = new Uint8Array(100).map((_, i) => i);
  const out = encodeReply({ status: ScsiStatus.GOOD, data }, { opcode: PR_IN, dataLength: 40 });
  assert.equal(out.length, 104 + 40);
  const v = new DataView(out.buffer);
  assert.equal(v.getInt32(0), 0);
  assert.equal(v.getInt32(4), 40);
  assert.deepEqual(out.subarray(104), data.subarray(0, 40));
});

Deno.test("reply: PR OUT and non-GOOD never carry data", () => {
  const data = new Uint8Array(8);
  for (
    const [status, opcode] of [[0, PR_OUT], [2, PR_IN], [0x18, PR_IN], [0x102, PR_IN]] as const
  ) {
    const out = encodeReply({ status, data }, { opcode, dataLength: 8 });
    assert.equal(out.length, 104, `status ${status} opcode ${opcode}`);
    assert.equal(new DataView(out.buffer).getInt32(4), 0);
  }
});

Deno.test("reply: only the status' low byte is sent, sense padded or cut to 96", () => {
  const long = new Uint8Array(200).fill(7);
  const out = encodeReply({ status: 0x1102, sense: long }, { opcode: PR_IN, dataLength: 0 });
  assert.equal(new DataView(out.buffer).getInt32(0), 2);
  assert.deepEqual(out.subarray(8, 104), new Uint8Array(96).fill(7));
  const short = encodeReply({ status: 2, sense: new Uint8Array([0x70, 0, 5]) }, {
    opcode: PR_IN,
    dataLength: 0,
  });
  assert.deepEqual([...short.subarray(8, 12)], [0x70, 0, 5, 0]);
  assert.equal(short.length, 104);
});

Deno.test("reply: decodeReplyHeader refuses what QEMU asserts on", () => {
  const header = (status: number, sz: number) => {
    const h = new Uint8Array(104);
    const v = new DataView(h.buffer);
    v.setInt32(0, status);
    v.setInt32(4, sz);
    return h;
  };
  const bad = (h: Uint8Array, opcode: number, n: number) =>
    assert.equal(
      protocolError(() => decodeReplyHeader(h, { opcode, dataLength: n })).reason,
      "bad-reply",
    );
  bad(header(0, 9), PR_IN, 8); // sz > allocation length
  bad(header(0, 1), PR_OUT, 8); // sz for PR OUT
  bad(header(2, 1), PR_IN, 8); // sz with CHECK CONDITION
  bad(header(0, -1), PR_IN, 8);
  bad(header(0, 8193), PR_IN, 8192);
  bad(new Uint8Array(103), PR_IN, 8);
  const ok = decodeReplyHeader(header(0, 8), { opcode: PR_IN, dataLength: 8 });
  assert.equal(ok.dataLength, 8);
  assert.equal(ok.sense.length, SENSE_LEN);
});

const replyArb = fc.record({
  status: fc.oneof(
    fc.constantFrom(0, 2, 8, 0x18, 0x28),
    fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }),
  ),
  sense: fc.option(fc.uint8Array({ maxLength: 130 }), { nil: undefined }),
  data: fc.option(fc.uint8Array({ maxLength: 9000 }), { nil: undefined }),
});
const boundsArb = fc.record({
  opcode: fc.oneof(fc.constantFrom(PR_IN, PR_OUT), fc.nat({ max: 255 })),
  dataLength: fc.oneof(fc.nat({ max: MAX_DATA_LEN }), fc.nat({ max: 0xffff })),
});

Deno.test("reply: encodeReply keeps QEMU's invariants for any input (property)", () => {
  fc.assert(
    fc.property(replyArb, boundsArb, (reply, bounds) => {
      const out = encodeReply(reply, bounds);
      const v = new DataView(out.buffer);
      const status = v.getInt32(0);
      const sz = v.getInt32(4);
      assert.equal(status, reply.status & 0xff);
      assert.equal(out.length, 104 + sz);
      assert.ok(sz >= 0);
      assert.ok(sz <= bounds.dataLength, `sz ${sz} > allocation length ${bounds.dataLength}`);
      assert.ok(sz <= MAX_DATA_LEN);
      if (bounds.opcode !== PR_IN) assert.equal(sz, 0, "sz != 0 for a non-PR-IN request");
      if (status !== ScsiStatus.GOOD) assert.equal(sz, 0, "sz != 0 with a non-GOOD status");
      // round trip through the client's decoder for the two real opcodes
      if (bounds.opcode === PR_IN || bounds.opcode === PR_OUT) {
        const h = decodeReplyHeader(out.subarray(0, 104), bounds);
        assert.equal(h.status, status);
        assert.equal(h.dataLength, sz);
        const sense = new Uint8Array(96);
        if (reply.sense) sense.set(reply.sense.subarray(0, 96));
        assert.deepEqual(h.sense, sense);
        if (sz > 0) assert.deepEqual(out.subarray(104), reply.data!.subarray(0, sz));
      }
      // data is sent whenever it may be
      if (bounds.opcode === PR_IN && status === 0 && reply.data) {
        assert.equal(sz, Math.min(reply.data.length, bounds.dataLength, MAX_DATA_LEN));
      }
    }),
    { numRuns: NUM_RUNS },
  );
});

// ------------------------------------------------------------------ framer (unit)

Deno.test("framer: starts with the greeting and needs 4 bytes", () => {
  const f = new RequestFramer();
  assert.equal(f.phase, "features");
  assert.equal(f.need, 4);
  assert.equal(f.midFrame, false);
  f.push(new Uint8Array([0, 0]));
  assert.equal(f.need, 2);
  assert.equal(f.midFrame, true);
  f.push(new Uint8Array([0, 0]));
  assert.equal(f.phase, "cdb");
  assert.equal(f.need, 16);
});

Deno.test("framer: unsupported features close", () => {
  const f = new RequestFramer();
  const e = protocolError(() => f.push(encodeFeatures(1)));
  assert.equal(e.reason, "unsupported-features");
});

Deno.test("framer: PR IN request with the fd on any chunk", () => {
  for (let split = 1; split < 16; split++) {
    const f = greeted();
    const c = cdb(PR_IN, 8192, 1);
    const first = f.push(c.subarray(0, split), split % 2 ? [] : [42]);
    assert.equal(first.request, null);
    const r = f.push(c.subarray(split), split % 2 ? [42] : []);
    assert.ok(r.request);
    assert.equal(r.request.fd, 42);
    assert.deepEqual(r.request.cdb, c);
    assert.equal(r.request.payload.length, 0);
    assert.deepEqual(r.discard, []);
    assert.equal(f.phase, "cdb");
    assert.equal(f.midFrame, false);
  }
});

Deno.test("framer: PR OUT waits for its payload; an fd with the payload is discarded", () => {
  const f = greeted();
  assert.equal(f.push(cdb(PR_OUT, 24), [5]).request, null);
  assert.equal(f.phase, "payload");
  assert.equal(f.need, 24);
  assert.equal(f.midFrame, true);
  const p = new Uint8Array(24).fill(3);
  const a = f.push(p.subarray(0, 10), [6]);
  assert.deepEqual(a.discard, [6]);
  const b = f.push(p.subarray(10));
  assert.ok(b.request);
  assert.equal(b.request.fd, 5);
  assert.deepEqual(b.request.payload, p);
});

Deno.test("framer: PR OUT with length 0 completes at once", () => {
  const f = greeted();
  const r = f.push(cdb(PR_OUT, 0), [5]);
  assert.ok(r.request);
  assert.equal(r.request.payload.length, 0);
});

Deno.test("framer: an fd with the greeting is discarded", () => {
  const f = new RequestFramer();
  assert.deepEqual(f.push(new Uint8Array(4), [9]).discard, [9]);
  const e = protocolError(() => f.push(cdb(PR_IN, 8)));
  assert.equal(e.reason, "no-fd");
});

Deno.test("framer: two fds, on one chunk or two, close and return both", () => {
  let f = greeted();
  let e = protocolError(() => f.push(cdb(PR_IN, 8), [3, 4]));
  assert.equal(e.reason, "too-many-fds");
  assert.deepEqual(discardedFds(e).sort(), [3, 4]);
  f = greeted();
  f.push(cdb(PR_IN, 8).subarray(0, 4), [3]);
  e = protocolError(() => f.push(cdb(PR_IN, 8).subarray(4), [4]));
  assert.deepEqual(discardedFds(e).sort(), [3, 4]);
});

Deno.test("framer: bad opcode and length close and return the fd", () => {
  for (
    const [c, reason] of [[cdb(0x12, 0), "bad-opcode"], [
      cdb(PR_OUT, 8193),
      "length-too-large",
    ]] as const
  ) {
    const f = greeted();
    const e = protocolError(() => f.push(c, [7]));
    assert.equal(e.reason, reason);
    assert.deepEqual(discardedFds(e), [7]);
  }
});

Deno.test("framer: end of stream inside a frame names the cut", () => {
  let f = greeted();
  assert.deepEqual(f.endOfStream(), { reason: null, discard: [] });
  f = greeted();
  f.push(cdb(PR_IN, 8).subarray(0, 3), [8]);
  assert.deepEqual(f.endOfStream(), { reason: "truncated-cdb", discard: [8] });
  f = greeted();
  f.push(cdb(PR_OUT, 8), [8]);
  f.push(new Uint8Array(3));
  assert.deepEqual(f.endOfStream(), { reason: "short-payload", discard: [8] });
});

Deno.test("framer: pushing more than it needs is a RangeError, not a protocol error", () => {
  const f = new RequestFramer();
  assert.throws(() => f.push(new Uint8Array(5)), RangeError);
  assert.equal(discardedFds(new Error("x")).length, 0);
});

// ------------------------------------------------------------------ framer (properties)

/** A chunk the peer sends: bytes and the number of fds attached to it. */
interface Chunk {
  bytes: Uint8Array;
  fdCount: number;
}

interface Driven {
  requests: Request[];
  discarded: number[];
  error: ProtocolError | null;
  endReason: string | null;
  pushed: number[];
}

/**
 * Feed chunks the way Connection.read does: at most `need` bytes per push,
 * fds attached to the first push of their chunk; fresh fd numbers each time.
 * Anything thrown other than a ProtocolError propagates (and fails the property).
 */
function drive(chunks: Chunk[], eof: boolean): Driven {
  const f = new RequestFramer();
  const out: Driven = { requests: [], discarded: [], error: null, endReason: null, pushed: [] };
  let nextFd = 100;
  for (const chunk of chunks) {
    let fds = Array.from({ length: chunk.fdCount }, () => nextFd++);
    out.pushed.push(...fds);
    let off = 0;
    // a chunk of 0 bytes carrying fds: a recvmsg returns at least 1 byte, so fds ride on the next
    if (chunk.bytes.length === 0) {
      if (fds.length > 0) {
        // the kernel cannot deliver fds without a byte: treat as not sent
        out.pushed.splice(out.pushed.length - fds.length, fds.length);
        nextFd -= fds.length;
      }
      continue;
    }
    while (off < chunk.bytes.length) {
      const n = Math.min(f.need, chunk.bytes.length - off);
      try {
        const r = f.push(chunk.bytes.subarray(off, off + n), fds);
        out.discarded.push(...r.discard);
        if (r.request) out.requests.push(r.request);
      } catch (e) {
        if (!(e instanceof ProtocolError)) throw e;
        out.error = e;
        out.discarded.push(...discardedFds(e));
        out.discarded.push(...f.takePendingFds()); // what Connection.close does
        return out;
      }
      fds = [];
      off += n;
    }
  }
  if (eof) {
    const end = f.endOfStream();
    out.endReason = end.reason;
    out.discarded.push(...end.discard);
  } else {
    out.discarded.push(...f.takePendingFds()); // connection dropped
  }
  return out;
}

function assertAccounted(d: Driven): void {
  const seen = [...d.requests.map((r) => r.fd), ...d.discarded].sort((a, b) => a - b);
  assert.deepEqual(seen, [...d.pushed].sort((a, b) => a - b), "every pushed fd exactly once");
  for (const r of d.requests) {
    assert.ok(r.cdb[0] === PR_IN || r.cdb[0] === PR_OUT);
    assert.equal(r.cdb.length, 16);
    assert.ok(r.frame.dataLength <= MAX_DATA_LEN);
    assert.equal(r.payload.length, r.cdb[0] === PR_OUT ? r.frame.dataLength : 0);
  }
}

function splitArb(total: Uint8Array): fc.Arbitrary<Chunk[]> {
  return fc.array(fc.nat({ max: Math.max(0, total.length) }), { maxLength: 12 }).chain((cuts) => {
    const points = [...new Set([0, ...cuts, total.length])].sort((a, b) => a - b);
    const n = points.length - 1;
    return fc.array(fc.oneof({ weight: 5, arbitrary: fc.constant(0) }, fc.nat({ max: 3 })), {
      minLength: n,
      maxLength: n,
    }).map((fdCounts) =>
      fdCounts.map((fdCount, i) => ({
        bytes: total.subarray(points[i], points[i + 1]),
        fdCount,
      }))
    );
  });
}

/** Byte streams that look like the protocol often enough to reach every phase. */
const streamArb: fc.Arbitrary<Uint8Array> = fc.array(
  fc.oneof(
    fc.uint8Array({ maxLength: 40 }),
    fc.constant(new Uint8Array(4)),
    fc.record({
      opcode: fc.constantFrom(PR_IN, PR_OUT, 0x00, 0xff, 0x12),
      len: fc.oneof(fc.nat({ max: 64 }), fc.constantFrom(8192, 8193, 0xffff)),
    }).map(({ opcode, len }) => cdb(opcode, len)),
  ),
  { maxLength: 8 },
).map((parts) => {
  const total = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) {
    total.set(p, off);
    off += p.length;
  }
  return total;
});

Deno.test("framer: arbitrary streams give Requests or ProtocolErrors and account for every fd (property)", () => {
  fc.assert(
    fc.property(
      streamArb.chain((s) => fc.tuple(splitArb(s), fc.boolean())),
      ([chunks, eof]) => {
        const d = drive(chunks, eof);
        assertAccounted(d);
      },
    ),
    { numRuns: 1000 },
  );
});

/** A valid request sequence: frames, and where in each CDB its fd rides. */
const validArb = fc.array(
  fc.record({
    opcode: fc.constantFrom(PR_IN, PR_OUT),
    action: fc.nat({ max: 31 }),
    len: fc.oneof(fc.nat({ max: 40 }), fc.constantFrom(0, 8192)),
    fdAt: fc.nat({ max: 15 }),
    seed: fc.nat({ max: 255 }),
  }),
  { minLength: 1, maxLength: 6 },
);

Deno.test("framer: a valid sequence split anywhere yields exactly its requests (property)", () => {
  fc.assert(
    fc.property(
      validArb,
      fc.array(fc.nat({ max: 20000 }), { maxLength: 10 }),
      (frames, cutsRaw) => {
        // lay out the stream and the offsets where the fds are attached
        const parts: Uint8Array[] = [new Uint8Array(4)];
        const fdOffsets: number[] = [];
        let off = 4;
        for (const fr of frames) {
          const c = cdb(fr.opcode, fr.len, fr.action);
          c[15] = fr.seed;
          parts.push(c);
          fdOffsets.push(off + fr.fdAt);
          off += 16;
          if (fr.opcode === PR_OUT) {
            parts.push(new Uint8Array(fr.len).fill(fr.seed));
            off += fr.len;
          }
        }
        const total = new Uint8Array(off);
        let o = 0;
        for (const p of parts) {
          total.set(p, o);
          o += p.length;
        }
        // cut at random points and at every fd offset, so each fd starts a chunk
        const cuts = [...new Set([0, ...cutsRaw.map((c) => c % off), ...fdOffsets, off])].sort((
          a,
          b,
        ) => a - b);
        const chunks: Chunk[] = [];
        for (let i = 0; i + 1 < cuts.length; i++) {
          chunks.push({
            bytes: total.subarray(cuts[i], cuts[i + 1]),
            fdCount: fdOffsets.includes(cuts[i]) ? 1 : 0,
          });
        }
        const d = drive(chunks, true);
        assert.equal(d.error, null, d.error?.message);
        assert.equal(d.endReason, null);
        assertAccounted(d);
        assert.equal(d.requests.length, frames.length);
        assert.deepEqual(d.discarded, []);
        d.requests.forEach((r, i) => {
          const fr = frames[i];
          assert.equal(r.fd, d.pushed[i]);
          assert.equal(r.cdb[0], fr.opcode);
          assert.equal(r.cdb[1], fr.action);
          assert.equal(r.cdb[15], fr.seed);
          assert.equal(r.frame.dataLength, fr.len);
          assert.deepEqual(
            r.payload,
            fr.opcode === PR_OUT ? new Uint8Array(fr.len).fill(fr.seed) : new Uint8Array(0),
          );
        });
      },
    ),
    { numRuns: 300 },
  );
});
