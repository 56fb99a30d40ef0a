/**
 * The pure half of telling multipathd about registrations (issue 18): which
 * of multipathd's commands a PR OUT on a multipath map calls for, before it
 * runs and after it succeeded; the framing of multipathd's socket protocol;
 * and what a reply means. No I/O: src/multipathd.ts talks to the socket,
 * src/multipath.ts sends the commands.
 *
 * With `reservation_key file` in multipath.conf, multipathd keeps each map's
 * key in /etc/multipath/prkeys and, while the map's "PR status" flag is set,
 * registers that key on every path it reinstates (REGISTER AND IGNORE
 * EXISTING KEY, after READ KEYS shows the key registered on another path).
 * libmpathpersist keeps both up to date; this module gives the same commands:
 *
 * | PR OUT                       | before          | after GOOD                          |
 * |------------------------------|-----------------|-------------------------------------|
 * | REGISTER*, key K != 0        | `setprkey` K    | `setprstatus`                       |
 * | REGISTER*, key 0 (unregister)| none            | `unsetprstatus`, `unsetprkey`       |
 * | CLEAR                        | none            | `unsetprstatus`, `unsetprkey`       |
 * | anything else                | none            | none                                |
 *
 * (REGISTER* is REGISTER or REGISTER AND IGNORE EXISTING KEY; K is the
 * parameter list's SERVICE ACTION RESERVATION KEY, written in lowercase hex
 * without `0x`, with `:aptpl` when the list's APTPL bit is set.)
 *
 * Framing, both ways: the length of the text including its terminating NUL
 * as a native 8-byte size_t (little-endian on the architectures Debian
 * ships prhelperd for), then the text and the NUL.
 *
 * @module
 */

import { type PrCommand, PrOutAction, PrOutFlags } from "./cdb.ts";

/** multipathd's abstract socket name (without the leading NUL of the address). */
export const MULTIPATHD_SOCKET = "/org/kernel/linux/storage/multipathd";

/** Longest reply accepted (multipathd's own client takes up to 32 MiB; ours are a few bytes). */
export const MAX_MULTIPATHD_REPLY = 1 << 16;

/** The multipathd commands a PR OUT calls for. */
export interface MultipathdPlan {
  /** Sent (and waited for, within a bound) before the PR OUT runs. */
  before: string[];
  /** Sent after the PR OUT succeeded (after the reply). */
  after: string[];
}

const NOTHING: MultipathdPlan = { before: [], after: [] };

/** Whether `alias` is a dm name multipathd's command parser takes as one word. */
export function isUsableAlias(alias: string): boolean {
  return /^[A-Za-z0-9_.:+@-]{1,127}$/.test(alias);
}

/**
 * The multipathd commands for `command` (a PR OUT) with parameter list
 * `payload` on the map named `options.alias`. Nothing for PR IN, for service
 * actions that do not change this host's registration, for a parameter list
 * shorter than 24 bytes (the PR OUT is refused anyway), or for an alias that
 * is not one word (multipathd could not parse it).
 */
export function multipathdPlan(
  command: PrCommand,
  payload: Uint8Array,
  options: { alias: string },
): MultipathdPlan {
  if (command.direction !== "out" || payload.length < 24) return NOTHING;
  if (!isUsableAlias(options.alias)) return NOTHING;
  const map = `map ${options.alias}`;
  const forget = [`unsetprstatus ${map}`, `unsetprkey ${map}`];
  const sa = command.serviceAction;
  if (sa === PrOutAction.CLEAR) return { before: [], after: forget };
  if (sa !== PrOutAction.REGISTER && sa !== PrOutAction.REGISTER_AND_IGNORE_EXISTING_KEY) {
    return NOTHING;
  }
  const saKey = new DataView(payload.buffer, payload.byteOffset, 24).getBigUint64(8, false);
  if (saKey === 0n) return { before: [], after: forget };
  const aptpl = (payload[20] & PrOutFlags.APTPL) !== 0 ? ":aptpl" : "";
  return {
    before: [`setprkey ${map} key ${saKey.toString(16)}${aptpl}`],
    after: [`setprstatus ${map}`],
  };
}

// ---------------------------------------------------------------- framing

/** One request frame: 8-byte little-endian length (text + NUL), the text, a NUL. */
export function encodeMultipathdFrame(text: string): Uint8Array {
  const body = new TextEncoder().encode(text);
  if (body.includes(0)) throw new RangeError(`multipathd command "${text}" contains a NUL`);
  const frame = new Uint8Array(8 + body.length + 1);
  new DataView(frame.buffer).setBigUint64(0, BigInt(body.length + 1), true);
  frame.set(body, 8);
  return frame;
}

/** Outcome of {@linkcode decodeMultipathdFrame}. */
export type FrameDecode =
  | { kind: "partial" }
  | { kind: "frame"; text: string; size: number }
  | { kind: "bad"; reason: string };

/**
 * Read one frame from the start of `bytes`: `partial` while more bytes are
 * needed, `bad` for a length of 0 or above {@linkcode MAX_MULTIPATHD_REPLY};
 * the text stops at its first NUL. `size` is the bytes the frame took.
 */
export function decodeMultipathdFrame(bytes: Uint8Array, max = MAX_MULTIPATHD_REPLY): FrameDecode {
  if (bytes.length < 8) return { kind: "partial" };
  const length = new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true);
  if (length === 0n || length > BigInt(max)) {
    return { kind: "bad", reason: `frame length ${length} outside 1..${max}` };
  }
  const n = Number(length);
  if (bytes.length < 8 + n) return { kind: "partial" };
  let body = bytes.subarray(8, 8 + n);
  const nul = body.indexOf(0);
  if (nul >= 0) body = body.subarray(0, nul);
  return { kind: "frame", text: new TextDecoder().decode(body), size: 8 + n };
}

/** What multipathd's reply to a command means. */
export type MultipathdVerdict = "ok" | "not-root" | "fail";

/**
 * `ok` for a reply that starts with "ok" (as libmpathpersist judges it),
 * `not-root` for multipathd's "permission deny" (the command came from a
 * peer that was not uid 0 when it connected), `fail` otherwise (unknown
 * map, a key source other than `file`, an unknown command...).
 */
export function judgeMultipathdReply(reply: string): MultipathdVerdict {
  if (reply.startsWith("ok")) return "ok";
  if (reply.startsWith("permission deny")) return "not-root";
  return "fail";
}
