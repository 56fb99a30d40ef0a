/**
 * Logging: LogTape with one sink that writes lines to stderr. Under systemd
 * (JOURNAL_STREAM names our stderr) each line starts with the sd-daemon
 * priority prefix `<N>` that journald turns into PRIORITY=N.
 *
 * Verbosity follows qemu-pr-helper: 0 (-q) errors and warnings, 1 (default)
 * adds info, 2 (-v) debug, 3 (-vv) trace.
 *
 * @module
 */

import {
  configure,
  getLogger,
  type Logger,
  type LogLevel,
  type LogRecord,
  reset,
} from "@logtape/logtape";
import { closeFd, fstatFd, sendDatagram, statPath, unixSocket } from "../ffi/libc.ts";

const PRIORITY: Record<LogLevel, number> = {
  fatal: 2,
  error: 3,
  warning: 4,
  info: 6,
  debug: 7,
  trace: 7,
};

const LEVEL_BY_VERBOSITY: LogLevel[] = ["warning", "info", "debug", "trace"];

/** true if stderr is the stream systemd named in JOURNAL_STREAM (`dev:ino`). */
export function stderrIsJournal(journalStream: string | undefined): boolean {
  if (!journalStream) return false;
  const [dev, ino] = journalStream.split(":");
  try {
    const st = fstatFd(2);
    return st.dev === BigInt(dev) && st.ino === BigInt(ino);
  } catch {
    return false;
  }
}

function formatValue(v: unknown): string {
  const s = typeof v === "string" ? v : typeof v === "bigint" ? `${v}` : JSON.stringify(v);
  return /[\s"=]/.test(s ?? "") ? JSON.stringify(s) : String(s);
}

/** One log line (without a trailing newline). */
export function formatLine(record: LogRecord, journal: boolean): string {
  let msg = record.message.map((m) => typeof m === "string" ? m : formatValue(m)).join("");
  const raw = typeof record.rawMessage === "string"
    ? record.rawMessage
    : record.rawMessage.join("");
  for (const [k, v] of Object.entries(record.properties)) {
    if (!raw.includes(`{${k}}`) && v !== undefined) msg += ` ${k}=${formatValue(v)}`;
  }
  const prefix = journal ? `<${PRIORITY[record.level]}>` : "";
  const level = journal ? "" : `${record.level.toUpperCase()} `;
  return `${prefix}${level}${record.category.join(".")}: ${msg}`;
}

/** journald's native protocol socket. */
export const JOURNAL_SOCKET = "/run/systemd/journal/socket";

/**
 * A journald native-protocol entry for a record: MESSAGE, PRIORITY,
 * SYSLOG_IDENTIFIER, and each property as PRHELPERD_<NAME> (so audit records
 * can be queried field by field: `journalctl PRHELPERD_SA_NAME=REGISTER`).
 * Values are single-line; newlines are replaced.
 */
export function journalEntry(record: LogRecord): Uint8Array {
  const lines = [
    `MESSAGE=${formatLine(record, false).replace(/^[A-Z]+ /, "")}`,
    `PRIORITY=${PRIORITY[record.level]}`,
    "SYSLOG_IDENTIFIER=prhelperd",
    `PRHELPERD_CATEGORY=${record.category.join(".")}`,
  ];
  for (const [k, v] of Object.entries(record.properties)) {
    if (v === undefined) continue;
    const name = `PRHELPERD_${k.toUpperCase().replace(/[^A-Z0-9_]/g, "_")}`;
    const value = typeof v === "string" ? v : typeof v === "bigint" ? `${v}` : JSON.stringify(v);
    lines.push(`${name}=${String(value).replace(/[\r\n]+/g, " ")}`);
  }
  return new TextEncoder().encode(lines.join("\n").replace(/\n?$/, "\n"));
}

/** Sends records to journald natively; null when the socket is not there. */
function openJournal(): ((entry: Uint8Array) => boolean) | null {
  if (statPath(JOURNAL_SOCKET)?.kind !== "socket") return null;
  let fd: number;
  try {
    fd = unixSocket({ datagram: true });
  } catch {
    return null;
  }
  addEventListener("unload", () => closeFd(fd));
  return (entry) => {
    try {
      sendDatagram(fd, JOURNAL_SOCKET, entry);
      return true;
    } catch {
      return false;
    }
  };
}

/** Options of {@linkcode setupLogging}. */
export interface LoggingOptions {
  /** 0 quiet .. 3 trace. */
  verbosity: number;
  /** Write `<N>` prefixes (stderr is the journal). */
  journal: boolean;
}

const encoder = new TextEncoder();

/** Configure LogTape once for the process; logs go to stderr. */
export async function setupLogging(options: LoggingOptions): Promise<void> {
  const level = LEVEL_BY_VERBOSITY[Math.max(0, Math.min(3, options.verbosity))];
  // under systemd, audit records also go to journald as structured fields
  const journal = options.journal ? openJournal() : null;
  await configure({
    reset: true,
    sinks: {
      stderr(record: LogRecord) {
        if (journal !== null && record.category[1] === "audit" && journal(journalEntry(record))) {
          return;
        }
        try {
          Deno.stderr.writeSync(encoder.encode(formatLine(record, options.journal) + "\n"));
        } catch {
          // stderr gone (e.g. closed by a daemonizing parent): nothing to report to
        }
      },
    },
    loggers: [
      { category: ["prhelperd"], lowestLevel: level, sinks: ["stderr"] },
      { category: ["logtape", "meta"], lowestLevel: "warning", sinks: ["stderr"] },
    ],
  });
}

/** Drop the logging configuration (tests). */
export async function resetLogging(): Promise<void> {
  await reset();
}

/** The logger of a part of the daemon, e.g. `logger("conn")`. */
export function logger(...category: string[]): Logger {
  return getLogger(["prhelperd", ...category]);
}

/**
 * Keeps one noisy source (e.g. a client sending bad requests in a loop) from
 * flooding the log: per key, `burst` lines pass, then one per `intervalMs`
 * carrying the number of lines suppressed since the last one.
 */
export class LogThrottle {
  readonly #burst: number;
  readonly #intervalMs: number;
  readonly #maxKeys: number;
  readonly #state = new Map<string, { count: number; last: number; suppressed: number }>();

  constructor(options: { burst: number; intervalMs: number; maxKeys?: number }) {
    this.#burst = options.burst;
    this.#intervalMs = options.intervalMs;
    this.#maxKeys = options.maxKeys ?? 4096;
  }

  /** Whether to log now for `key`, and how many lines were suppressed before this one. */
  take(key: string, now: number = Date.now()): { log: boolean; suppressed: number } {
    let s = this.#state.get(key);
    if (s === undefined) {
      if (this.#state.size >= this.#maxKeys) {
        this.#state.delete(this.#state.keys().next().value!);
      }
      s = { count: 0, last: 0, suppressed: 0 };
      this.#state.set(key, s);
    }
    s.count++;
    if (s.count <= this.#burst || now - s.last >= this.#intervalMs) {
      const suppressed = s.suppressed;
      s.suppressed = 0;
      s.last = now;
      return { log: true, suppressed };
    }
    s.suppressed++;
    return { log: false, suppressed: s.suppressed };
  }
}
