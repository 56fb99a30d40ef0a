/**
 * Raw protocol helpers for daemon tests: connect and greet, send well-formed
 * or malformed frames, read a reply as raw bytes or see that the helper
 * closed, and make fds of each kind (/dev/null, regular file, pipe, socket,
 * directory). Synchronous, with a timeout on every wait.
 *
 * @module
 */

import {
  closeFd,
  makePipe,
  O_DIRECTORY,
  O_RDONLY,
  O_RDWR,
  O_WRONLY,
  openPath,
} from "../../ffi/files.ts";
import { libc } from "../../ffi/libc.ts";
import { POLLIN, PollSet } from "../../ffi/poll.ts";
import { recvWithFds, unixSocketPair } from "../../ffi/sockets.ts";
import {
  CDB_LEN,
  encodeFeatures,
  HelperConnectionError,
  parseSense,
  PR_IN,
  PR_OUT,
  RawConnection,
  REPLY_HEADER_LEN,
} from "../../mod.ts";

/** Wait limit for one read or write in tests (a guard against hangs). */
export const IO_TIMEOUT_MS = 10_000;

/** Connect without greeting. */
export function connectRaw(path: string): RawConnection {
  return RawConnection.connect(path, { timeoutMs: IO_TIMEOUT_MS });
}

/** Connect, read the helper's feature word, answer `requested` (default 0). */
export function connectGreeted(
  path: string,
  options: { requested?: number } = {},
): { conn: RawConnection; helperFeatures: Uint8Array } {
  const conn = connectRaw(path);
  try {
    const helperFeatures = conn.receive(4);
    conn.send(encodeFeatures(options.requested ?? 0));
    return { conn, helperFeatures };
  } catch (e) {
    conn.close();
    throw e;
  }
}

/** A 16-byte wire CDB: opcode, service action, BE16 length at bytes 7–8. */
export function wireCdb(opcode: number, length: number, serviceAction = 0): Uint8Array {
  const cdb = new Uint8Array(CDB_LEN);
  cdb[0] = opcode;
  cdb[1] = serviceAction;
  cdb[7] = (length >> 8) & 0xff;
  cdb[8] = length & 0xff;
  return cdb;
}

/** A raw reply: the bytes read, or that the helper closed instead. */
export type RawReply =
  | { kind: "reply"; status: number; sz: number; sense: Uint8Array; bytes: Uint8Array }
  | { kind: "closed" };

/**
 * Read one reply as raw bytes: the 104-byte header, then sz bytes. EOF before
 * a complete header is `closed`. sz is taken as the helper sent it (bounded by
 * 8192 so a bad value cannot make the test read forever).
 */
export function readReply(conn: RawConnection): RawReply {
  let header: Uint8Array;
  try {
    header = conn.receive(REPLY_HEADER_LEN);
  } catch (e) {
    if (e instanceof HelperConnectionError && /closed the connection after 0 /.test(e.message)) {
      return { kind: "closed" };
    }
    throw e;
  }
  const v = new DataView(header.buffer);
  const status = v.getInt32(0);
  const sz = v.getInt32(4);
  const data = sz > 0 && sz <= 8192 ? conn.receive(sz) : new Uint8Array(0);
  const bytes = new Uint8Array(header.length + data.length);
  bytes.set(header);
  bytes.set(data, header.length);
  return { kind: "reply", status, sz, sense: header.slice(8, 104), bytes };
}

/** Send a request (CDB with `fds`, then the payload) and read the reply. */
export function roundTrip(
  conn: RawConnection,
  cdb: Uint8Array,
  fds: readonly number[],
  payload?: Uint8Array,
): RawReply {
  conn.send(cdb, fds);
  if (payload && payload.length > 0) conn.send(payload);
  return readReply(conn);
}

/** `KK/AA/QQ` of a reply's sense, or "-" if it has none. */
export function senseOf(reply: RawReply): string {
  if (reply.kind !== "reply") return "closed";
  const s = parseSense(reply.sense);
  if (s === null) return "-";
  const h = (n: number) => n.toString(16).toUpperCase().padStart(2, "0");
  return `${h(s.key)}/${h(s.asc)}/${h(s.ascq)}`;
}

/** Compact description of a reply: `status=0x02 sz=0 sense=05/20/00`, or `closed`. */
export function describe(reply: RawReply): string {
  if (reply.kind === "closed") return "closed";
  return `status=0x${reply.status.toString(16).padStart(2, "0")} sz=${reply.sz} sense=${
    senseOf(reply)
  }`;
}

/**
 * true if the helper closed this connection (EOF) within `waitMs`, without
 * sending anything first. Bytes that arrive instead are an error.
 */
export function closedByHelper(conn: RawConnection, waitMs = IO_TIMEOUT_MS): boolean {
  const ps = new PollSet(1);
  ps.add(conn.fd, POLLIN);
  if (ps.pollSync(waitMs) === 0) return false;
  const probe = new Uint8Array(1);
  let got;
  try {
    got = recvWithFds(conn.fd, probe, { dontWait: true });
  } catch {
    return true; // ECONNRESET: also a close
  }
  if (got === null) return false;
  for (const f of got.fds) closeFd(f);
  if (got.bytes > 0) throw new Error("the helper sent data where a close was expected");
  return true;
}

/** shutdown(SHUT_WR): tell the helper we will send nothing more (it sees EOF). */
export function halfClose(conn: RawConnection): void {
  libc.shutdown(conn.fd, 1);
}

/** The kinds of fd the host can pass (no SCSI device here). */
export type FdKind =
  | "/dev/null"
  | "/dev/null (read-only)"
  | "regular file"
  | "regular file (read-only)"
  | "pipe (read end)"
  | "pipe (write end)"
  | "socket"
  | "directory";

/** Open fds of every kind; close them all with dispose. */
export class FdSet implements Disposable {
  readonly fds: Map<FdKind, number> = new Map();

  constructor(dir: string) {
    const file = `${dir}/regular-file`;
    Deno.writeTextFileSync(file, "some data\n");
    this.fds.set("/dev/null", openPath("/dev/null", O_RDWR));
    this.fds.set("/dev/null (read-only)", openPath("/dev/null", O_RDONLY));
    this.fds.set("regular file", openPath(file, O_RDWR));
    this.fds.set("regular file (read-only)", openPath(file, O_RDONLY));
    const [r, w] = makePipe();
    this.fds.set("pipe (read end)", r);
    this.fds.set("pipe (write end)", w);
    const [a, b] = unixSocketPair();
    closeFd(b);
    this.fds.set("socket", a);
    this.fds.set("directory", openPath(dir, O_RDONLY | O_DIRECTORY));
  }

  /** The fd of a kind. */
  get(kind: FdKind): number {
    return this.fds.get(kind)!;
  }

  /** Close every fd. */
  [Symbol.dispose](): void {
    for (const fd of this.fds.values()) {
      try {
        closeFd(fd);
      } catch { /* closed */ }
    }
    this.fds.clear();
  }
}

export { O_WRONLY, PR_IN, PR_OUT };
