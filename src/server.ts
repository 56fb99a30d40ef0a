/**
 * The event loop: one synchronous poll(2) on the main thread over the
 * listening socket, the SG_IO executor's completion pipe and every connection
 * that is waiting for input or for its reply to drain. Reads and writes are
 * non-blocking; SG_IO runs on Workers (src/executor.ts) and comes back through
 * the completion pipe, so a request costs the same thread switches as in a C
 * helper with a thread pool. A connection with a request in flight is not
 * polled, so its next frame stays in the socket until the reply is written.
 *
 * The poll never blocks longer than {@linkcode YIELD_MS}; the loop then (and at
 * least that often under load) yields to Deno's event loop, where signals and
 * timers (sd_notify) run.
 *
 * @module
 */

import type { SysError } from "../ffi/errno.ts";
import { POLLERR, POLLHUP, POLLIN, POLLNVAL, POLLOUT, PollSet } from "../ffi/poll.ts";
import { acceptConnection, peerCred, peerSecurityContext, shutdownSocket } from "../ffi/sockets.ts";
import { Connection } from "./connection.ts";
import { FdCloser } from "./fd_closer.ts";
import { ConnectionLimits, describeRefusal } from "./conn_limits.ts";
import { logger } from "./log.ts";
import { type HandlerContext, handleRequest, type Peer } from "./request_handler.ts";
import { encodeReply, type Request, ScsiStatus } from "./wire.ts";
import { checkCondition, Sense } from "./sense.ts";

/** Options of {@linkcode Server}. */
export interface ServerOptions {
  /** A listening, non-blocking AF_UNIX stream socket. */
  listenFd: number;
  handler: HandlerContext;
  /** Connections beyond this are accepted, logged and closed at once. */
  maxConnections: number;
  /** A peer that stalls inside a frame, or does not read its reply, for this long is dropped. */
  stallTimeoutMs: number;
  /** A connection at a frame boundary that sent nothing for this long is closed (0/absent: never). */
  idleTimeoutMs?: number;
  /** Connections one uid may hold (absent: maxConnections). */
  maxConnectionsPerUid?: number;
  /** Connections one per-VM security context may hold (absent: maxConnections). */
  maxConnectionsPerContext?: number;
  /** Decide whether a peer may use the helper at all: a reason to refuse, or null. */
  admit?: (peer: Peer) => string | null;
  /**
   * Closes every client fd and connection socket off the loop thread
   * (default: the server's own, stopped when {@linkcode Server.run} returns).
   */
  closer?: FdCloser;
  /** Called after each change of the counters (for sd_notify STATUS=). */
  onStats?: (stats: ServerStats) => void;
}

/** Counters of a running server. */
export interface ServerStats {
  connections: number;
  requests: number;
  accepted: number;
  refused: number;
}

const log = logger("server");
const ACCEPT_BACKOFF_MS = 200;
/** Longest time the loop keeps Deno's event loop waiting (signals, timers). */
export const YIELD_MS = 100;

/**
 * One turn of Deno's event loop. A timer, because only a full turn polls the
 * signal streams (a MessageChannel message is delivered without one).
 */
function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

/** The helper's accept/serve loop. */
export class Server {
  readonly #opts: ServerOptions;
  readonly #conns = new Map<number, Connection>();
  readonly #poll = new PollSet(256);
  #stopping = false;
  #acceptPausedUntil = 0;
  #nextConnection = 1;
  #inFlight = 0;
  readonly #limits: ConnectionLimits;
  /** When each connection last showed activity (accepted, read, answered). */
  readonly #lastActive = new WeakMap<Connection, number>();
  #nextIdleScan = 0;
  readonly #stats: ServerStats = { connections: 0, requests: 0, accepted: 0, refused: 0 };

  /** Client fds and sockets are closed here, never on the loop (finding 14.3). */
  readonly #closer: FdCloser;
  readonly #release = (fd: number) => this.#closer.close(fd);

  constructor(options: ServerOptions) {
    this.#opts = options;
    this.#closer = options.closer ?? new FdCloser();
    this.#limits = new ConnectionLimits({
      perUid: options.maxConnectionsPerUid ?? options.maxConnections,
      perContext: options.maxConnectionsPerContext ?? options.maxConnections,
    });
    options.handler.executor.driven = true;
  }

  /** Current counters. */
  get stats(): ServerStats {
    return { ...this.#stats, connections: this.#conns.size };
  }

  /** Requests being executed right now. */
  get inFlight(): number {
    return this.#inFlight;
  }

  /**
   * Stop accepting; requests in flight complete and their replies are
   * written; idle connections are dropped. {@linkcode Server.run} then returns.
   */
  stop(): void {
    this.#stopping = true;
  }

  /** Serve until {@linkcode Server.stop} and the drain are done. */
  async run(): Promise<void> {
    const executor = this.#opts.handler.executor;
    // the fd closer's Worker (about 20 ms): no client is served before it is there
    if (!await this.#closer.ready()) {
      log.error("the fd closer did not start in time; client fds wait for it (or are closed here)");
    }
    let lastYield = Date.now();
    let failures = 0;
    try {
      for (;;) {
        let ready = 0;
        try {
          let now = Date.now();
          if (this.#stopping) this.#dropIdle();
          this.#expireStalled(now);
          this.#expireIdle(now);
          if (this.#stopping && this.#conns.size === 0 && this.#inFlight === 0) break;
          const timeout = this.#buildPollSet(now);
          const budget = Math.max(0, YIELD_MS - (now - lastYield));
          ready = this.#poll.pollSync(timeout < 0 ? budget : Math.min(timeout, budget));
          now = Date.now();
          if (ready > 0) this.#dispatchEvents(now, executor.completionFd);
          failures = 0;
        } catch (e) {
          // A bug or an unexpected errno must not take every client down with
          // the daemon: log it, back off briefly, and go on serving.
          failures++;
          if (failures <= 10 || failures % 1000 === 0) {
            log.error("event loop error ({n} in a row): {error}", {
              n: failures,
              error: (e as Error).stack ?? String(e),
            });
          }
          ready = 0;
        }
        if (ready === 0 || Date.now() - lastYield >= YIELD_MS) {
          await (failures > 0 ? sleep(Math.min(100, failures)) : yieldToEventLoop());
          lastYield = Date.now();
        }
      }
    } finally {
      for (const c of this.#conns.values()) c.close();
      if (this.#opts.closer === undefined) this.#closer.stop();
      this.#conns.clear();
    }
  }

  #buildPollSet(now: number): number {
    const ps = this.#poll;
    ps.clear();
    ps.add(this.#opts.handler.executor.completionFd, POLLIN);
    let timeout = -1;
    for (const c of this.#conns.values()) {
      if (c.writing) ps.add(c.fd, POLLOUT);
      else if (!c.busy) ps.add(c.fd, POLLIN);
      else continue;
      if (c.waitingSince !== 0) {
        const left = Math.max(0, c.waitingSince + this.#opts.stallTimeoutMs - now);
        timeout = timeout < 0 ? left : Math.min(timeout, left);
      }
    }
    // last, so that connections that ended in this round free their slot first
    if (!this.#stopping) {
      if (now >= this.#acceptPausedUntil) ps.add(this.#opts.listenFd, POLLIN);
      else {
        const left = this.#acceptPausedUntil - now;
        timeout = timeout < 0 ? left : Math.min(timeout, left);
      }
    }
    return timeout;
  }

  #dispatchEvents(now: number, completionFd: number): void {
    const ps = this.#poll;
    for (let i = 0; i < ps.size; i++) {
      const ev = ps.revents(i);
      if (ev === 0) continue;
      const fd = ps.fd(i);
      if (fd === completionFd) {
        this.#opts.handler.executor.drain();
      } else if (fd === this.#opts.listenFd) {
        this.#acceptAll(now);
      } else {
        const c = this.#conns.get(fd);
        if (!c || c.closed) continue;
        if (ev & POLLNVAL) this.#drop(c, "invalid fd");
        else if (c.writing) this.#flush(c, now);
        else if (ev & (POLLIN | POLLHUP | POLLERR)) this.#read(c, now);
      }
    }
  }

  #acceptAll(now: number): void {
    for (let n = 0; n < 64; n++) {
      let fd: number | null;
      try {
        fd = acceptConnection(this.#opts.listenFd);
      } catch (e) {
        const err = e as SysError;
        log.warning("accept failed ({code}); pausing accepts for {ms} ms", {
          code: err.code ?? String(e),
          ms: ACCEPT_BACKOFF_MS,
        });
        this.#acceptPausedUntil = now + ACCEPT_BACKOFF_MS;
        return;
      }
      if (fd === null) return;
      this.#admit(fd, now);
    }
  }

  #admit(fd: number, now: number): void {
    const id = this.#nextConnection++;
    let peer: Peer;
    try {
      const cred = peerCred(fd);
      peer = { ...cred, context: peerSecurityContext(fd), connection: id };
    } catch (e) {
      log.warning("closing connection {id}: cannot read peer credentials: {error}", {
        id,
        error: String(e),
      });
      this.#refuse(fd);
      this.#stats.refused++;
      return;
    }
    const fields = {
      id,
      pid: peer.pid,
      uid: peer.uid,
      gid: peer.gid,
      context: peer.context ?? "-",
    };
    if (this.#conns.size >= this.#opts.maxConnections) this.#reapGone(now);
    if (this.#conns.size >= this.#opts.maxConnections) {
      log.warning("refusing connection {id}: {max} connections open (--max-connections)", {
        ...fields,
        max: this.#opts.maxConnections,
      });
      this.#refuse(fd);
      this.#stats.refused++;
      return;
    }
    const refusal = this.#opts.admit?.(peer) ?? null;
    if (refusal !== null) {
      log.warning("refusing connection {id}: {reason}", { ...fields, reason: refusal });
      this.#refuse(fd);
      this.#stats.refused++;
      return;
    }
    // per uid and per VM context (src/conn_limits.ts), after freeing hung-up slots
    let over = this.#limits.check(peer);
    if (over !== null) {
      this.#reapGone(now);
      over = this.#limits.check(peer);
    }
    if (over !== null) {
      log.warning("refusing connection {id}: {reason}", {
        ...fields,
        reason: describeRefusal(over),
      });
      this.#refuse(fd);
      this.#stats.refused++;
      return;
    }
    const c = new Connection(fd, peer, { release: this.#release });
    this.#conns.set(fd, c);
    this.#limits.add(peer);
    this.#lastActive.set(c, now);
    this.#stats.accepted++;
    log.debug("connection {id} accepted", fields);
    this.#flush(c, now);
    this.#notify();
  }

  /**
   * Close a connection that is refused at accept: EOF for the peer at once
   * (it waits for a greeting), the close itself on the closer (the socket may
   * hold fds in flight, and dropping them is a close too).
   */
  #refuse(fd: number): void {
    shutdownSocket(fd);
    this.#release(fd);
  }

  /**
   * At the connection limit: before refusing a newcomer, handle connections
   * whose peer has already hung up in this same poll round, so their slots count as free.
   */
  #reapGone(now: number): void {
    const idle = [...this.#conns.values()].filter((c) => !c.busy && !c.writing);
    const ps = new PollSet(idle.length + 1);
    for (const c of idle) ps.add(c.fd, POLLIN);
    if (ps.pollSync(0) <= 0) return;
    idle.forEach((c, i) => {
      if (ps.revents(i) !== 0 && !c.closed) this.#read(c, now);
    });
  }

  #read(c: Connection, now: number): void {
    this.#lastActive.set(c, now);
    const r = c.read(now);
    switch (r.kind) {
      case "wait":
        return;
      case "eof":
        log.debug("connection {id} closed by peer", { id: c.peer.connection, pid: c.peer.pid });
        this.#drop(c, null);
        return;
      case "close":
        this.#drop(c, `protocol: ${r.reason}`);
        return;
      case "request":
        if (this.#stopping) {
          // arrived after the stop: answer as a busy device would, so nothing is lost silently
          this.#release(r.request.fd);
          c.queue(encodeReply({ status: ScsiStatus.BUSY }, r.request.frame));
          this.#flush(c, now);
          return;
        }
        c.busy = true;
        this.#inFlight++;
        this.#serve(c, r.request);
    }
  }

  #serve(c: Connection, request: Request): void {
    let answered = false;
    const answer = (bytes: Uint8Array) => {
      if (answered) return;
      answered = true;
      this.#release(request.fd);
      this.#inFlight--;
      c.busy = false;
      c.requests++;
      this.#lastActive.set(c, Date.now());
      this.#stats.requests++;
      if (!c.closed) {
        c.queue(bytes);
        this.#flush(c, Date.now());
      }
      this.#notify();
    };
    try {
      handleRequest(this.#opts.handler, { peer: c.peer, request }, (reply) => {
        let bytes: Uint8Array;
        try {
          bytes = encodeReply(reply, request.frame);
        } catch (e) {
          log.error("cannot encode reply: {error}", { error: String(e), id: c.peer.connection });
          bytes = encodeReply(checkCondition(Sense.LUN_COMM_FAILURE), request.frame);
        }
        answer(bytes);
      });
    } catch (e) {
      log.error("request failed unexpectedly: {error}", {
        error: String(e),
        id: c.peer.connection,
      });
      answer(encodeReply(checkCondition(Sense.LUN_COMM_FAILURE), request.frame));
    }
  }

  #flush(c: Connection, now: number): void {
    try {
      const done = c.flush(now);
      if (done && this.#stopping && !c.busy) this.#drop(c, null);
    } catch (e) {
      this.#drop(c, `write: ${(e as SysError).code ?? e}`);
    }
  }

  #dropIdle(): void {
    for (const c of this.#conns.values()) {
      if (!c.busy && !c.writing) this.#drop(c, null);
    }
  }

  #expireStalled(now: number): void {
    // runs every iteration: no copy of the map (deleting the current entry is safe in a Map walk)
    for (const c of this.#conns.values()) {
      if (c.waitingSince !== 0 && now - c.waitingSince >= this.#opts.stallTimeoutMs) {
        this.#drop(
          c,
          `stalled for ${this.#opts.stallTimeoutMs} ms ${
            c.writing ? "not reading its reply" : "inside a frame"
          }`,
        );
      }
    }
  }

  /**
   * --idle-timeout: close connections at a frame boundary (nothing half-sent,
   * nothing being answered or written) that showed no activity for that long.
   * QEMU reconnects on its next command. Scanned at most once a second.
   */
  #expireIdle(now: number): void {
    const ms = this.#opts.idleTimeoutMs ?? 0;
    if (ms <= 0 || this.#stopping || now < this.#nextIdleScan) return;
    this.#nextIdleScan = now + Math.min(1000, ms);
    const idle = [...this.#conns.values()].filter((c) =>
      !c.busy && !c.writing && c.waitingSince === 0 &&
      now - (this.#lastActive.get(c) ?? now) >= ms
    );
    if (idle.length === 0) return;
    // bytes that arrived since the last poll are a request to serve, not idleness
    const ps = new PollSet(idle.length);
    for (const c of idle) ps.add(c.fd, POLLIN);
    ps.pollSync(0);
    idle.forEach((c, i) => {
      if (ps.revents(i) !== 0 || c.closed) return;
      log.debug("closing connection {id}: idle for {s} s (--idle-timeout)", {
        id: c.peer.connection,
        s: ms / 1000,
        pid: c.peer.pid,
        uid: c.peer.uid,
      });
      this.#drop(c, null);
    });
  }

  #drop(c: Connection, reason: string | null): void {
    if (this.#conns.get(c.fd) === c) this.#limits.remove(c.peer);
    if (reason !== null) {
      log.info("closing connection {id}: {reason}", {
        id: c.peer.connection,
        reason,
        pid: c.peer.pid,
        uid: c.peer.uid,
      });
    }
    this.#conns.delete(c.fd);
    c.close();
    this.#notify();
  }

  #notify(): void {
    this.#opts.onStats?.(this.stats);
  }
}
