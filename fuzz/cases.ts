/**
 * Fuzz cases: what a hostile client sends (bytes split into chunks, fds of
 * various kinds attached to chunks, and how it disconnects), a seeded
 * generator for them, the reference model of what the helper must answer,
 * and a delta-debugging shrinker. Pure: no I/O here.
 *
 * @module
 */

import {
  CDB_LEN,
  FEATURES_LEN,
  MAX_DATA_LEN,
  PR_IN,
  PR_OUT,
  REPLY_HEADER_LEN,
  type ReplyBounds,
} from "../src/wire.ts";

/** Kinds of fd a fuzz case can pass (the host has no SCSI disk, partition or sg node). */
export const FD_KINDS = [
  "file-rw",
  "file-ro",
  "pipe-r",
  "pipe-w",
  "socket",
  "directory",
  "devnull-rw",
  "devnull-ro",
  "opath",
  "own-socket",
] as const;

/** One kind of fd: see {@linkcode FD_KINDS}. */
export type FdKind = typeof FD_KINDS[number];

/** One sendmsg: bytes (hex) and the fds attached to it. Never empty. */
export interface FuzzChunk {
  hex: string;
  fds: FdKind[];
}

/** How the client ends. */
export type FuzzEnd =
  /** Send everything, shutdown(SHUT_WR), read until EOF: every reply is checked. */
  | { kind: "half-close" }
  /** Send everything and close at once without reading. */
  | { kind: "close" }
  /** Send everything, read this many reply bytes (at most what is due), then close. */
  | { kind: "read-then-close"; bytes: number };

/** A fuzz case, as saved under tests/regressions/. */
export interface FuzzCase {
  chunks: FuzzChunk[];
  end: FuzzEnd;
}

/** How the helper's input ends, according to the model. */
export type ModelEnding =
  /** At a frame boundary: the helper waits for more. */
  | "boundary"
  /** Inside a frame: the helper waits (its stall timeout applies). */
  | "mid-frame"
  /** A frame the helper must close the connection on. */
  | "violation";

/** What the model says the helper must do with a case's bytes. */
export interface Expectation {
  /** One entry per request that must be answered, in order. */
  replies: ReplyBounds[];
  ending: ModelEnding;
  /** Why the helper closes (for "violation"). */
  reason: string | null;
}

/** Hex of bytes. */
export function toHex(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += b.toString(16).padStart(2, "0");
  return s;
}

/** Bytes of hex. */
export function fromHex(hex: string): Uint8Array {
  if (hex.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(hex)) {
    throw new RangeError(`"${hex.slice(0, 40)}" is not an even-length hex string`);
  }
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/**
 * The reference model of the helper's framing, independent of src/wire.ts:
 * 4-byte feature word (must be 0), then 16-byte CDBs. The fds of a chunk
 * arrive with the chunk's first byte (the kernel attaches them to its first
 * skb and recvmsg delivers them with the first read of it, and the helper
 * never reads across a frame boundary), so a CDB owns the fds of the chunks
 * that start inside it. Exactly one fd, opcode 0x5E/0x5F, N = BE16 at CDB
 * bytes 7-8 at most 8192, then N payload bytes for 0x5F: else the helper
 * closes without a reply.
 */
export function expectReplies(c: FuzzCase): Expectation {
  const chunks = c.chunks.map((k) => fromHex(k.hex));
  const total = chunks.reduce((n, b) => n + b.length, 0);
  const bytes = new Uint8Array(total);
  const fdsAt = new Map<number, number>();
  let off = 0;
  chunks.forEach((b, i) => {
    bytes.set(b, off);
    if (c.chunks[i].fds.length > 0) {
      fdsAt.set(off, (fdsAt.get(off) ?? 0) + c.chunks[i].fds.length);
    }
    off += b.length;
  });
  const replies: ReplyBounds[] = [];
  const done = (ending: ModelEnding, reason: string | null = null): Expectation => ({
    replies,
    ending,
    reason,
  });
  if (total === 0) return done("boundary");
  if (total < FEATURES_LEN) return done("mid-frame");
  const features = new DataView(bytes.buffer).getUint32(0);
  if (features !== 0) return done("violation", "unsupported-features");
  let pos = FEATURES_LEN;
  for (;;) {
    if (pos === total) return done("boundary");
    if (total - pos < CDB_LEN) return done("mid-frame");
    let fds = 0;
    for (let i = pos; i < pos + CDB_LEN; i++) fds += fdsAt.get(i) ?? 0;
    const opcode = bytes[pos];
    const n = (bytes[pos + 7] << 8) | bytes[pos + 8];
    if (fds === 0) return done("violation", "no-fd");
    if (fds > 1) return done("violation", "too-many-fds");
    if (opcode !== PR_IN && opcode !== PR_OUT) return done("violation", "bad-opcode");
    if (n > MAX_DATA_LEN) return done("violation", "length-too-large");
    pos += CDB_LEN;
    if (opcode === PR_OUT) {
      if (total - pos < n) return done("mid-frame");
      pos += n;
    }
    replies.push({ opcode, dataLength: n });
  }
}

// ------------------------------------------------------------------ PRNG

/** A small seeded PRNG (sfc32), reproducible across runs and platforms. */
export class Rng {
  #a: number;
  #b: number;
  #c: number;
  #d: number;

  constructor(seed: number, stream = 0) {
    this.#a = 0x9e3779b9;
    this.#b = seed >>> 0;
    this.#c = stream >>> 0;
    this.#d = 1;
    for (let i = 0; i < 15; i++) this.u32();
  }

  /** A uniform 32-bit unsigned integer. */
  u32(): number {
    const t = (((this.#a + this.#b) >>> 0) + this.#d) >>> 0;
    this.#d = (this.#d + 1) >>> 0;
    this.#a = this.#b ^ (this.#b >>> 9);
    this.#b = (this.#c + (this.#c << 3)) >>> 0;
    this.#c = ((this.#c << 21) | (this.#c >>> 11)) >>> 0;
    this.#c = (this.#c + t) >>> 0;
    return t;
  }

  /** An integer in [0, n). */
  int(n: number): number {
    return n <= 1 ? 0 : Math.floor((this.u32() / 0x1_0000_0000) * n);
  }

  /** An integer in [lo, hi]. */
  range(lo: number, hi: number): number {
    return lo + this.int(hi - lo + 1);
  }

  /** true with probability p. */
  chance(p: number): boolean {
    return this.u32() / 0x1_0000_0000 < p;
  }

  /** A random element. */
  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)];
  }

  /** n random bytes. */
  bytes(n: number): Uint8Array<ArrayBuffer> {
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i++) out[i] = this.u32() & 0xff;
    return out;
  }
}

// ------------------------------------------------------------------ generator

const INTERESTING_LENGTHS = [0, 1, 8, 24, 28, 32, 255, 256, 4096, 8191, 8192, 8193, 0xffff];

function dataLength(rng: Rng): number {
  const r = rng.int(100);
  if (r < 30) return rng.pick(INTERESTING_LENGTHS);
  if (r < 65) return rng.range(0, 64);
  if (r < 90) return rng.range(0, MAX_DATA_LEN);
  return rng.int(0x10000);
}

/** One request's bytes, and the offset range [0, 16) where its fds belong. */
function requestBytes(rng: Rng): Uint8Array {
  const cdb = rng.chance(0.5) ? rng.bytes(CDB_LEN) : new Uint8Array(CDB_LEN);
  const r = rng.int(100);
  cdb[0] = r < 45 ? PR_IN : r < 90 ? PR_OUT : rng.u32() & 0xff;
  cdb[1] = rng.chance(0.7) ? rng.int(8) : rng.u32() & 0xff;
  const n = dataLength(rng);
  cdb[7] = n >> 8;
  cdb[8] = n & 0xff;
  let payload = new Uint8Array(0);
  if (cdb[0] === PR_OUT && n <= MAX_DATA_LEN) {
    const len = rng.chance(0.9) ? n : rng.range(0, n + 8);
    payload = rng.chance(0.5) ? rng.bytes(len) : new Uint8Array(len);
  }
  const out = new Uint8Array(CDB_LEN + payload.length);
  out.set(cdb);
  out.set(payload, CDB_LEN);
  return out;
}

function mutate(rng: Rng, bytes: Uint8Array<ArrayBuffer>): Uint8Array<ArrayBuffer> {
  let b = bytes;
  const edits = rng.range(1, 4);
  for (let i = 0; i < edits; i++) {
    const at = rng.int(b.length + 1);
    switch (rng.int(4)) {
      case 0: // flip a byte
        if (b.length > 0) b[Math.min(at, b.length - 1)] ^= 1 << rng.int(8);
        break;
      case 1: { // insert bytes
        const ins = rng.bytes(rng.range(1, 8));
        const nb = new Uint8Array(b.length + ins.length);
        nb.set(b.subarray(0, at));
        nb.set(ins, at);
        nb.set(b.subarray(at), at + ins.length);
        b = nb;
        break;
      }
      case 2: { // delete bytes
        const n = Math.min(rng.range(1, 8), b.length - at);
        if (n > 0) b = new Uint8Array([...b.subarray(0, at), ...b.subarray(at + n)]);
        break;
      }
      default: // set a byte
        if (b.length > 0) b[Math.min(at, b.length - 1)] = rng.u32() & 0xff;
    }
  }
  return b;
}

/**
 * Generate the case with this seed and index. Mostly well-formed streams
 * (so the fuzzer reaches deep states) with random corruption, random splits
 * down to single bytes, 0-3 fds per request of random kinds placed anywhere
 * in the CDB (sometimes in the greeting or payload), and random disconnects.
 */
export function generateCase(seed: number, index: number): FuzzCase {
  const rng = new Rng(seed, index);
  const parts: Uint8Array[] = [];
  /** [start, end) ranges of CDBs in the stream */
  const cdbs: number[] = [];
  let len = 0;
  const push = (b: Uint8Array) => {
    parts.push(b);
    len += b.length;
  };
  if (rng.chance(0.05)) {
    push(rng.bytes(rng.range(0, 64))); // pure noise
  } else {
    const f = new Uint8Array(FEATURES_LEN);
    if (rng.chance(0.05)) new DataView(f.buffer).setUint32(0, rng.u32());
    push(f);
    const requests = rng.pick([0, 1, 1, 1, 2, 2, 3, 4]);
    for (let i = 0; i < requests; i++) {
      cdbs.push(len);
      push(requestBytes(rng));
    }
  }
  let bytes = new Uint8Array(len);
  let o = 0;
  for (const p of parts) {
    bytes.set(p, o);
    o += p.length;
  }
  if (rng.chance(0.1)) bytes = mutate(rng, bytes);
  if (rng.chance(0.15) && bytes.length > 0) bytes = bytes.slice(0, rng.int(bytes.length)); // cut

  // where chunks start; fds go to chunk starts
  const starts = new Set<number>([0]);
  const splitMode = rng.int(4);
  if (splitMode === 1 && bytes.length <= 600) {
    for (let i = 1; i < bytes.length; i++) starts.add(i); // byte by byte
  } else if (splitMode >= 1) {
    const k = rng.range(1, 6);
    for (let i = 0; i < k; i++) starts.add(rng.int(bytes.length));
  }
  const fdPlan = new Map<number, FdKind[]>();
  const addFd = (at: number) => {
    if (at >= bytes.length) return;
    starts.add(at);
    const list = fdPlan.get(at) ?? [];
    list.push(rng.pick(FD_KINDS));
    fdPlan.set(at, list);
  };
  for (const s of cdbs) {
    const r = rng.int(100);
    const count = r < 6 ? 0 : r < 92 ? 1 : rng.range(2, 3);
    const spread = rng.chance(0.8) ? 0 : 15;
    for (let i = 0; i < count; i++) addFd(s + rng.int(spread + 1));
  }
  if (rng.chance(0.05)) addFd(rng.int(Math.max(1, bytes.length))); // a stray fd anywhere
  const sorted = [...starts].filter((s) => s < bytes.length || s === 0).sort((a, b) => a - b);
  const chunks: FuzzChunk[] = [];
  for (let i = 0; i < sorted.length; i++) {
    const a = sorted[i];
    const b = i + 1 < sorted.length ? sorted[i + 1] : bytes.length;
    if (b <= a) continue;
    chunks.push({ hex: toHex(bytes.subarray(a, b)), fds: fdPlan.get(a) ?? [] });
  }
  const e = rng.int(100);
  const end: FuzzEnd = e < 75
    ? { kind: "half-close" }
    : e < 88
    ? { kind: "close" }
    : { kind: "read-then-close", bytes: rng.int(4 + 2 * (REPLY_HEADER_LEN + 64)) };
  return { chunks, end };
}

// ------------------------------------------------------------------ shrinker

function candidates(c: FuzzCase): FuzzCase[] {
  const out: FuzzCase[] = [];
  const with_ = (chunks: FuzzChunk[], end = c.end): FuzzCase => ({ chunks, end });
  if (c.end.kind !== "half-close") out.push(with_(c.chunks, { kind: "half-close" }));
  // drop the tail, then single chunks
  for (let keep = 0; keep < c.chunks.length; keep++) out.push(with_(c.chunks.slice(0, keep)));
  for (let i = 0; i < c.chunks.length; i++) {
    out.push(with_(c.chunks.filter((_, j) => j !== i)));
  }
  // merge neighbours (fewer writes), when the second has no fds
  for (let i = 0; i + 1 < c.chunks.length; i++) {
    if (c.chunks[i + 1].fds.length > 0) continue;
    const merged = { hex: c.chunks[i].hex + c.chunks[i + 1].hex, fds: c.chunks[i].fds };
    out.push(with_([...c.chunks.slice(0, i), merged, ...c.chunks.slice(i + 2)]));
  }
  // fewer fds, simpler fd kinds
  c.chunks.forEach((k, i) => {
    k.fds.forEach((kind, j) => {
      const fds = k.fds.filter((_, x) => x !== j);
      out.push(with_(c.chunks.map((q, y) => y === i ? { ...q, fds } : q)));
      if (kind !== "devnull-rw") {
        const simpler = k.fds.map((f, x): FdKind => x === j ? "devnull-rw" : f);
        out.push(with_(c.chunks.map((q, y) => y === i ? { ...q, fds: simpler } : q)));
      }
    });
  });
  // shorter chunks, zeroed chunks, then zeroed bytes (the first 64 of each chunk)
  c.chunks.forEach((k, i) => {
    const b = fromHex(k.hex);
    const set = (hex: string) =>
      out.push(with_(c.chunks.map((q, y) => y === i ? { ...q, hex } : q)));
    if (b.length > 1) { for (const n of [b.length >> 1, b.length - 1]) set(toHex(b.slice(0, n))); }
    if (b.some((x) => x !== 0)) set(toHex(new Uint8Array(b.length)));
    if (b.length > 64 && b.subarray(16).some((x) => x !== 0)) {
      const z = b.slice();
      z.fill(0, 16);
      set(toHex(z));
    }
    for (let p = 0; p < Math.min(b.length, 64); p++) {
      if (b[p] === 0) continue;
      const z = b.slice();
      z[p] = 0;
      set(toHex(z));
    }
  });
  return out;
}

/** A measure of a case's size: shrinking only accepts strictly smaller cases. */
export function caseSize(c: FuzzCase): number {
  let n = c.end.kind === "half-close" ? 0 : 1;
  for (const k of c.chunks) {
    const b = fromHex(k.hex);
    n += 1000 + b.length * 10 + k.fds.length * 100;
    n += k.fds.filter((f) => f !== "devnull-rw").length;
    for (const x of b) if (x !== 0) n += 1;
  }
  return n;
}

/** Options of {@linkcode shrinkCase}. */
export interface ShrinkOptions {
  /** Most candidate runs (default 400). */
  maxRuns?: number;
  /** Progress callback. */
  onStep?: (c: FuzzCase, runs: number) => void;
}

/**
 * Greedy delta debugging: try smaller variants of a failing case and keep any
 * that still fails, until none does or the budget is spent.
 */
export async function shrinkCase(
  failing: FuzzCase,
  stillFails: (c: FuzzCase) => Promise<boolean>,
  options: ShrinkOptions = {},
): Promise<{ case: FuzzCase; runs: number }> {
  const maxRuns = options.maxRuns ?? 400;
  let best = failing;
  let runs = 0;
  let improved = true;
  while (improved && runs < maxRuns) {
    improved = false;
    const size = caseSize(best);
    for (const cand of candidates(best)) {
      if (caseSize(cand) >= size) continue;
      if (runs >= maxRuns) break;
      runs++;
      if (await stillFails(cand)) {
        best = cand;
        improved = true;
        options.onStep?.(best, runs);
        break;
      }
    }
  }
  return { case: best, runs };
}
