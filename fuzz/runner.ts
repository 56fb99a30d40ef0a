/**
 * Runs fuzz cases against a helper socket, many connections at once, with
 * non-blocking sockets and one poll(2) loop. Every byte the helper sends is
 * checked against the model (cases.ts): the 4-byte greeting 0, then for each
 * request due, a 104-byte header that passes QEMU's asserts (decodeReplyHeader)
 * followed by exactly sz bytes; nothing else; and an end of stream only after
 * every due reply.
 *
 * @module
 */

import { Errno, SysError } from "../ffi/errno.ts";
import { closeFd, makePipe, O_DIRECTORY, O_RDONLY, O_RDWR, openPath } from "../ffi/files.ts";
import { POLLIN, POLLOUT, PollSet } from "../ffi/poll.ts";
import {
  connectUnix,
  recvWithFds,
  sendWithFds,
  shutdownSocket,
  unixSocket,
  unixSocketPair,
} from "../ffi/sockets.ts";
import { formatSense, parseSense, Sense } from "../src/sense.ts";
import { decodeReplyHeader, FEATURES_LEN, REPLY_HEADER_LEN, ScsiStatus } from "../src/wire.ts";
import { type Expectation, expectReplies, type FdKind, fromHex, type FuzzCase } from "./cases.ts";

const O_PATH = 0o10000000;
/** Per-connection receive buffer: check() consumes as it goes, so one reply header + a read fits. */
const RECV_BUF = 16384;

/** fds of every kind, opened once and passed (dup'ed by the kernel) many times. */
export class FdPool {
  readonly #fds = new Map<FdKind, number>();
  readonly #extra: number[] = [];
  readonly #dir: string;

  constructor() {
    this.#dir = Deno.makeTempDirSync({ prefix: "prhelperd-fuzz-fds-" });
    const file = `${this.#dir}/file`;
    Deno.writeFileSync(file, new Uint8Array(4096));
    const [pr, pw] = makePipe();
    const [s1, s2] = unixSocketPair();
    this.#fds.set("file-rw", openPath(file, O_RDWR));
    this.#fds.set("file-ro", openPath(file, O_RDONLY));
    this.#fds.set("pipe-r", pr);
    this.#fds.set("pipe-w", pw);
    this.#fds.set("socket", s1);
    this.#extra.push(s2);
    this.#fds.set("directory", openPath(this.#dir, O_RDONLY | O_DIRECTORY));
    this.#fds.set("devnull-rw", openPath("/dev/null", O_RDWR));
    this.#fds.set("devnull-ro", openPath("/dev/null", O_RDONLY));
    this.#fds.set("opath", openPath(file, O_PATH));
  }

  /** The fd of a kind; "own-socket" is the connection's own socket. */
  fd(kind: FdKind, ownSocket: number): number {
    return kind === "own-socket" ? ownSocket : this.#fds.get(kind)!;
  }

  /** Close every fd and remove the temp dir. */
  close(): void {
    for (const fd of [...this.#fds.values(), ...this.#extra]) closeFd(fd);
    Deno.removeSync(this.#dir, { recursive: true });
  }
}

/** What the runner expects of every reply besides QEMU's asserts. */
export interface ReplyPolicy {
  /**
   * The host has no SCSI device: every request must be refused before SG_IO
   * with CHECK CONDITION 05/20/00 and sz 0. Off, only QEMU's asserts are checked.
   */
  expectRefusal: boolean;
}

/** Counters of a run. */
export interface RunStats {
  cases: number;
  requestsAnswered: number;
  bytesSent: number;
  bytesReceived: number;
  /** Cases whose model ends with a protocol violation (helper must close). */
  violations: number;
  fdsPassed: number;
}

/** Create zeroed counters. */
export function newStats(): RunStats {
  return {
    cases: 0,
    requestsAnswered: 0,
    bytesSent: 0,
    bytesReceived: 0,
    violations: 0,
    fdsPassed: 0,
  };
}

/** A case that broke an invariant. */
export interface CaseFailure {
  index: number;
  case: FuzzCase;
  message: string;
}

interface Live {
  index: number;
  c: FuzzCase;
  exp: Expectation;
  chunks: Uint8Array[];
  fd: number;
  chunk: number;
  chunkOff: number;
  sendDone: boolean;
  /** Reply bytes due: greeting + every expected reply (sz is learnt from headers). */
  parsed: number;
  buf: Uint8Array;
  have: number;
  replyIndex: number;
  /** Bytes of the reply body still due after a header. */
  bodyLeft: number;
  readLimit: number;
  eof: boolean;
  startedAt: number;
  failure: string | null;
  /** The case passes the connection's own socket. */
  ownSocket: boolean;
}

function check(l: Live, policy: ReplyPolicy, stats: RunStats): void {
  // consume complete units from l.buf[0, l.have)
  for (;;) {
    if (l.failure) return;
    if (l.parsed === 0) {
      if (l.have < FEATURES_LEN) return;
      const f = new DataView(l.buf.buffer).getUint32(0);
      if (f !== 0) l.failure = `greeting advertised features 0x${f.toString(16)}`;
      consume(l, FEATURES_LEN);
      continue;
    }
    if (l.bodyLeft > 0) {
      const n = Math.min(l.bodyLeft, l.have);
      if (n === 0) return;
      l.bodyLeft -= n;
      consume(l, n);
      if (l.bodyLeft === 0) l.replyIndex++;
      continue;
    }
    if (l.have === 0) return;
    if (l.replyIndex >= l.exp.replies.length) {
      l.failure = `unsolicited ${l.have} byte(s) after ${l.exp.replies.length} due repl(ies): ${
        hexOf(l.buf.subarray(0, Math.min(l.have, 16)))
      }`;
      return;
    }
    if (l.have < REPLY_HEADER_LEN) return;
    const bounds = l.exp.replies[l.replyIndex];
    const header = l.buf.slice(0, REPLY_HEADER_LEN);
    try {
      const h = decodeReplyHeader(header, bounds);
      if (policy.expectRefusal) {
        const s = parseSense(h.sense);
        if (
          h.status !== ScsiStatus.CHECK_CONDITION || h.dataLength !== 0 || s === null ||
          formatSense(s) !== formatSense(Sense.INVALID_OPCODE)
        ) {
          l.failure =
            `reply ${l.replyIndex}: status 0x${h.status.toString(16)} sz ${h.dataLength} ` +
            `sense ${s ? formatSense(s) : "none"}, expected CHECK CONDITION 05/20/00 sz 0`;
          return;
        }
      }
      stats.requestsAnswered++;
      l.bodyLeft = h.dataLength;
    } catch (e) {
      l.failure = `reply ${l.replyIndex} to opcode 0x${
        bounds.opcode.toString(16)
      } N=${bounds.dataLength}: ${(e as Error).message}`;
      return;
    }
    consume(l, REPLY_HEADER_LEN);
    if (l.bodyLeft === 0) l.replyIndex++;
  }
}

function consume(l: Live, n: number): void {
  l.buf.copyWithin(0, n, l.have);
  l.have -= n;
  l.parsed += n;
}

function hexOf(b: Uint8Array): string {
  return [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
}

/** All due replies have been read (bodies included). */
function complete(l: Live): boolean {
  return l.parsed >= FEATURES_LEN && l.replyIndex >= l.exp.replies.length && l.bodyLeft === 0;
}

/** Options of {@linkcode runCases}. */
export interface RunOptions {
  /** Connections at once. */
  concurrency: number;
  policy: ReplyPolicy;
  stats: RunStats;
  /** A case that takes longer than this is a hang (default 20 s). */
  caseTimeoutMs?: number;
}

/**
 * Run cases against the helper at `socket`. Returns the cases that broke an
 * invariant (empty if all passed). The caller checks the daemon itself
 * (alive, fds, control client) between batches.
 */
export function runCases(
  socket: string,
  cases: { index: number; case: FuzzCase }[],
  options: RunOptions & { pool: FdPool },
): CaseFailure[] {
  const { pool, policy, stats } = options;
  const timeoutMs = options.caseTimeoutMs ?? 20_000;
  const failures: CaseFailure[] = [];
  const live = new Map<number, Live>();
  const ps = new PollSet(options.concurrency + 1);
  let next = 0;

  const finish = (l: Live) => {
    live.delete(l.fd);
    // A socket passed over itself is kept alive by the helper's copy, so close()
    // alone is no disconnect: the helper sees no EOF and frees it only at its
    // --stall-timeout (tests/faults_test.ts checks that). shutdown(2) ends it now.
    if (l.ownSocket && l.c.end.kind !== "half-close") shutdownSocket(l.fd);
    closeFd(l.fd);
    stats.cases++;
    if (l.failure) {
      failures.push({
        index: l.index,
        case: l.c,
        message: `${l.failure} [after ${Date.now() - l.startedAt} ms]`,
      });
    }
  };

  const start = (index: number, c: FuzzCase): Live | null => {
    const fd = unixSocket({ nonblocking: true });
    try {
      connectUnix(fd, socket);
    } catch (e) {
      closeFd(fd);
      if (e instanceof SysError && e.errno === Errno.EAGAIN) return null; // backlog full
      throw e;
    }
    const exp = expectReplies(c);
    if (exp.ending === "violation") stats.violations++;
    const l: Live = {
      index,
      c,
      exp,
      chunks: c.chunks.map((k) => fromHex(k.hex)),
      fd,
      chunk: 0,
      chunkOff: 0,
      sendDone: false,
      parsed: 0,
      buf: new Uint8Array(RECV_BUF),
      have: 0,
      replyIndex: 0,
      bodyLeft: 0,
      readLimit: c.end.kind === "read-then-close" ? c.end.bytes : Infinity,
      eof: false,
      startedAt: Date.now(),
      failure: null,
      ownSocket: c.chunks.some((k) => k.fds.includes("own-socket")),
    };
    live.set(fd, l);
    return l;
  };

  const pump = (l: Live) => {
    // send
    while (!l.sendDone) {
      if (l.chunk >= l.chunks.length) {
        l.sendDone = true;
        if (l.c.end.kind === "half-close") shutdownSocket(l.fd, { how: "write" });
        break;
      }
      const b = l.chunks[l.chunk];
      const fds = l.chunkOff === 0 ? l.c.chunks[l.chunk].fds.map((k) => pool.fd(k, l.fd)) : [];
      let n: number | null;
      try {
        n = sendWithFds(l.fd, b.subarray(l.chunkOff), { fds, dontWait: true });
      } catch (e) {
        // EPIPE/ECONNRESET: the helper closed; what it sent before is still checked
        const code = (e as SysError).errno;
        if (code !== Errno.EPIPE && code !== Errno.ECONNRESET) throw e;
        l.sendDone = true;
        break;
      }
      if (n === null) break;
      stats.bytesSent += n;
      if (l.chunkOff === 0) stats.fdsPassed += fds.length;
      l.chunkOff += n;
      if (l.chunkOff >= b.length) {
        l.chunk++;
        l.chunkOff = 0;
      }
    }
    if (l.sendDone && l.c.end.kind === "close") {
      finish(l);
      return;
    }
    // receive
    for (;;) {
      if (l.eof || l.failure) break;
      let r;
      try {
        r = recvWithFds(l.fd, l.buf, { offset: l.have, dontWait: true });
      } catch (e) {
        if ((e as SysError).errno !== Errno.ECONNRESET) throw e;
        r = { bytes: 0, fds: [], truncated: false };
      }
      if (r === null) break;
      for (const f of r.fds) {
        closeFd(f);
        l.failure = "the helper sent an fd";
      }
      if (r.bytes === 0) {
        l.eof = true;
        break;
      }
      stats.bytesReceived += r.bytes;
      l.have += r.bytes;
      check(l, policy, stats);
      if (l.parsed + l.have >= l.readLimit) break;
    }
    check(l, policy, stats);
    if (l.failure) return finish(l);
    if (l.c.end.kind === "read-then-close") {
      if (l.parsed + l.have >= l.readLimit || complete(l)) return finish(l);
      if (l.eof) {
        l.failure = `end of stream after ${l.parsed + l.have} bytes; ` +
          `${l.exp.replies.length} repl(ies) due, ${l.replyIndex} received`;
        return finish(l);
      }
      return;
    }
    if (l.eof) {
      if (!complete(l) || l.have > 0) {
        l.failure = `end of stream after ${l.replyIndex} of ${l.exp.replies.length} due repl(ies)` +
          (l.have > 0 ? ` and ${l.have} stray byte(s)` : "") + ` (model: ${l.exp.ending}` +
          (l.exp.reason ? ` ${l.exp.reason}` : "") + ")";
      }
      return finish(l);
    }
    if (Date.now() - l.startedAt > timeoutMs) {
      l.failure =
        `no end of stream within ${timeoutMs} ms: ${l.replyIndex} of ${l.exp.replies.length} ` +
        `due repl(ies) received, sent ${l.chunk}/${l.chunks.length} chunks (model: ${l.exp.ending})`;
      finish(l);
    }
  };

  while (next < cases.length || live.size > 0) {
    while (live.size < options.concurrency && next < cases.length) {
      const l = start(cases[next].index, cases[next].case);
      if (l === null) break;
      next++;
      pump(l);
    }
    if (live.size === 0) continue;
    ps.clear();
    for (const l of live.values()) ps.add(l.fd, l.sendDone ? POLLIN : POLLIN | POLLOUT);
    ps.pollSync(50);
    for (let i = 0; i < ps.size; i++) {
      const l = live.get(ps.fd(i));
      if (!l) continue;
      if (ps.revents(i) !== 0 || Date.now() - l.startedAt > timeoutMs) pump(l);
    }
  }
  return failures;
}
