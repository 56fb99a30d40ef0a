/**
 * multipathd's socket, the I/O half (the commands and the framing are in
 * src/multipathd_plan.ts): one command per connection, as multipathd's own
 * client does, on a non-blocking socket with a deadline. The daemon's
 * exchanges wait in poll(2) on Deno's blocking thread pool, so a multipathd
 * that accepts and never answers costs a pool thread for the timeout, never
 * the event loop; `prhelperd check` waits on its own thread.
 *
 * {@linkcode MultipathdNotifier} sends the commands for one map in order,
 * and logs one warning per map when multipathd is absent or refuses them.
 * See docs/DESIGN.md, "Multipath".
 *
 * @module
 */

import { closeFd } from "../ffi/files.ts";
import { POLLIN, POLLOUT, PollSet } from "../ffi/poll.ts";
import { connectAbstract, recvWithFds, sendWithFds, unixSocket } from "../ffi/sockets.ts";
import { logger } from "./log.ts";
import {
  decodeMultipathdFrame,
  encodeMultipathdFrame,
  judgeMultipathdReply,
  MULTIPATHD_SOCKET,
} from "./multipathd_plan.ts";

const log = logger("multipathd");

/** Default deadline of one exchange (multipathd's own client waits 4 s). */
export const MULTIPATHD_TIMEOUT_MS = 2000;

/** The outcome of one command. */
export type MultipathdOutcome =
  | { kind: "ok" | "fail" | "not-root"; reply: string }
  /** Nobody listens (multipathd stopped, or another network namespace), or the backlog is full. */
  | { kind: "unreachable"; error: string }
  /** No complete reply within the deadline. */
  | { kind: "timeout" }
  /** The connection broke, or the reply was not a frame. */
  | { kind: "broken"; error: string };

/** Options of {@linkcode askMultipathd} and {@linkcode askMultipathdSync}. */
export interface AskOptions {
  /** Abstract socket name (default multipathd's, {@linkcode MULTIPATHD_SOCKET}). */
  socketName?: string;
  /** Deadline of the whole exchange, connect to reply (default {@linkcode MULTIPATHD_TIMEOUT_MS}). */
  timeoutMs?: number;
}

/** What the exchange waits for next: poll events and the time left, or the outcome. */
type Step = { fd: number; wait: number; ms: number } | { outcome: MultipathdOutcome };

/** The exchange as steps; the driver polls between them (on this thread or the pool). */
function* exchange(command: string, options: AskOptions): Generator<Step, void, void> {
  const deadline = Date.now() + (options.timeoutMs ?? MULTIPATHD_TIMEOUT_MS);
  const frame = encodeMultipathdFrame(command);
  let fd: number;
  try {
    fd = unixSocket({ nonblocking: true });
  } catch (e) {
    yield { outcome: { kind: "broken", error: String(e) } };
    return;
  }
  try {
    try {
      connectAbstract(fd, options.socketName ?? MULTIPATHD_SOCKET);
    } catch (e) {
      yield { outcome: { kind: "unreachable", error: (e as Error).message } };
      return;
    }
    let sent = 0;
    let got = new Uint8Array(256);
    let have = 0;
    for (;;) {
      const left = deadline - Date.now();
      if (left <= 0) {
        yield { outcome: { kind: "timeout" } };
        return;
      }
      yield { fd, wait: sent < frame.length ? POLLOUT : POLLIN, ms: left };
      if (sent < frame.length) {
        sent += sendWithFds(fd, frame.subarray(sent), { dontWait: true }) ?? 0;
        continue;
      }
      if (have === got.length) {
        const bigger = new Uint8Array(got.length * 2);
        bigger.set(got);
        got = bigger;
      }
      const r = recvWithFds(fd, got, { offset: have, dontWait: true });
      if (r === null) continue;
      for (const extra of r.fds) closeFd(extra);
      if (r.bytes === 0) {
        yield { outcome: { kind: "broken", error: "multipathd closed the connection" } };
        return;
      }
      have += r.bytes;
      const decoded = decodeMultipathdFrame(got.subarray(0, have));
      if (decoded.kind === "bad") {
        yield { outcome: { kind: "broken", error: decoded.reason } };
        return;
      }
      if (decoded.kind === "frame") {
        const text = decoded.text.trimEnd();
        yield { outcome: { kind: judgeMultipathdReply(text), reply: text } };
        return;
      }
    }
  } catch (e) {
    yield { outcome: { kind: "broken", error: (e as Error).message } };
  } finally {
    closeFd(fd);
  }
}

/**
 * Send `command` to multipathd and wait for its reply, in poll(2) on Deno's
 * blocking thread pool. Never rejects.
 */
export async function askMultipathd(
  command: string,
  options: AskOptions = {},
): Promise<MultipathdOutcome> {
  const steps = exchange(command, options);
  const ps = new PollSet(1);
  try {
    for (let next = steps.next(); !next.done; next = steps.next()) {
      const step = next.value;
      if ("outcome" in step) return step.outcome;
      ps.clear();
      ps.add(step.fd, step.wait);
      await ps.pollAsync(step.ms);
    }
  } catch (e) {
    return { kind: "broken", error: String(e) };
  } finally {
    steps.return(); // closes the socket
  }
  return { kind: "broken", error: "the exchange ended without an outcome" };
}

/** {@linkcode askMultipathd} waiting on this thread (for `prhelperd check`). */
export function askMultipathdSync(command: string, options: AskOptions = {}): MultipathdOutcome {
  const steps = exchange(command, options);
  const ps = new PollSet(1);
  try {
    for (let next = steps.next(); !next.done; next = steps.next()) {
      const step = next.value;
      if ("outcome" in step) return step.outcome;
      ps.clear();
      ps.add(step.fd, step.wait);
      ps.pollSync(step.ms);
    }
  } catch (e) {
    return { kind: "broken", error: String(e) };
  } finally {
    steps.return(); // closes the socket
  }
  return { kind: "broken", error: "the exchange ended without an outcome" };
}

/** A short description of an outcome that is not `ok`, for logs and findings. */
export function describeOutcome(outcome: MultipathdOutcome): string {
  switch (outcome.kind) {
    case "ok":
      return "accepted";
    case "fail":
      return `refused: "${outcome.reply}"`;
    case "not-root":
      return `refused: "${outcome.reply}" (multipathd takes these commands from uid 0 only)`;
    case "unreachable":
      return `not reachable (${outcome.error})`;
    case "timeout":
      return "no reply in time";
    case "broken":
      return `exchange failed (${outcome.error})`;
  }
}

/** Options of {@linkcode MultipathdNotifier}. */
export interface MultipathdNotifierOptions extends AskOptions {
  /** How one command is sent (tests); default {@linkcode askMultipathd}. */
  ask?: (command: string, options: AskOptions) => Promise<MultipathdOutcome>;
}

/**
 * Sends multipathd the commands that keep its view of this host's
 * registrations current: per map in order (one map's commands never overtake
 * each other), each with the exchange's deadline. When multipathd is absent
 * or refuses a command for a map, one warning for that map, until
 * multipathd takes one of its commands again; the PR command itself is never
 * failed for it.
 */
export class MultipathdNotifier {
  readonly #options: AskOptions;
  readonly #ask: (command: string, options: AskOptions) => Promise<MultipathdOutcome>;
  readonly #queues = new Map<string, Promise<void>>();
  readonly #warned = new Set<string>();

  /** A notifier on multipathd's socket (or `options.socketName`). */
  constructor(options: MultipathdNotifierOptions = {}) {
    this.#options = { socketName: options.socketName, timeoutMs: options.timeoutMs };
    this.#ask = options.ask ?? askMultipathd;
  }

  /** Longest one command may take. */
  get timeoutMs(): number {
    return this.#options.timeoutMs ?? MULTIPATHD_TIMEOUT_MS;
  }

  /**
   * Queue `commands` for map `alias`; resolves when they were sent (or given
   * up: after one that finds multipathd unreachable, the rest are not sent).
   * Never rejects.
   */
  tell(alias: string, commands: readonly string[]): Promise<void> {
    if (commands.length === 0) return Promise.resolve();
    const previous = this.#queues.get(alias) ?? Promise.resolve();
    const mine = previous.then(() => this.#send(alias, commands));
    this.#queues.set(alias, mine);
    void mine.then(() => {
      if (this.#queues.get(alias) === mine) this.#queues.delete(alias);
    });
    return mine;
  }

  /** Maps with a warning out (multipathd has not taken their commands since). */
  get warnedMaps(): string[] {
    return [...this.#warned];
  }

  async #send(alias: string, commands: readonly string[]): Promise<void> {
    for (const command of commands) {
      let outcome: MultipathdOutcome;
      try {
        outcome = await this.#ask(command, this.#options);
      } catch (e) {
        outcome = { kind: "broken", error: String(e) };
      }
      if (outcome.kind === "ok") {
        log.debug('multipathd took "{command}"', { command, map: alias });
        if (this.#warned.delete(alias)) {
          log.info("multipathd takes the commands for map {map} again", { map: alias });
        }
        continue;
      }
      if (!this.#warned.has(alias)) {
        this.#warned.add(alias);
        log.warning(
          'multipathd did not take "{command}" for map {map}: {why}; the PR command itself ' +
            "succeeded, but a path of {map} that fails and comes back will not be registered " +
            "again by multipathd (docs/DESIGN.md, Multipath); not repeated for this map",
          { command, map: alias, why: describeOutcome(outcome) },
        );
      } else {
        log.debug('multipathd did not take "{command}": {why}', {
          command,
          map: alias,
          why: describeOutcome(outcome),
        });
      }
      if (outcome.kind !== "fail") return;
    }
  }
}
