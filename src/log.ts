/**
 * Logging: LogTape with one sink that writes lines to stderr. Under systemd
 * (JOURNAL_STREAM names our stderr) each line starts with the sd-daemon
 * priority prefix `<N>` that journald turns into PRIORITY=N.
 *
 * Verbosity follows qemu-pr-helper: 0 (-q) errors and warnings, 1 (default)
 * adds info, 2 (-v) debug, 3 (-vv) trace.
 *
 * Rate limits (issue 14, finding 5): journald drops a service's messages past
 * its rate limit (10,000 per 30 s by default), whatever they are, so a client
 * looping on bad requests could push PR OUT audit records out of the journal.
 * Every line goes through a {@linkcode LogGate} first: audit records spend
 * their own budget, which nothing else can spend; every other line (the
 * per-client ones: refused requests and connections, closes, AVC-like lines)
 * spends one global budget, on top of any per-key throttle
 * ({@linkcode LogThrottle}); the daemon's own start and stop lines are not
 * limited. What was left out is reported every
 * {@linkcode SUMMARY_INTERVAL_MS} in one "suppressed" line per budget.
 *
 * @module
 */

import { configure, getLogger, type Logger, type LogLevel, type LogRecord } from "@logtape/logtape";
import { closeFd, fstatFd, statPath } from "../ffi/files.ts";
import { sendDatagram, unixSocket } from "../ffi/sockets.ts";

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

// ---------------------------------------------------------------- rate limits

/** A token bucket: `burst` lines at once, then `perSecond` on average. */
export interface BudgetOptions {
  burst: number;
  perSecond: number;
}

/**
 * The budgets: 200 + 20/s for all per-client lines together, 1,000 + 100/s
 * for audit records. At most 800 + 4,000 lines per 30 s, well within
 * journald's default 10,000, so journald never has to drop an audit record
 * because of a flood of refusals.
 */
export const LOG_BUDGETS: { general: BudgetOptions; audit: BudgetOptions } = {
  general: { burst: 200, perSecond: 20 },
  audit: { burst: 1000, perSecond: 100 },
};

/** How often suppressed lines are reported. */
export const SUMMARY_INTERVAL_MS = 5000;

/** The category of the "suppressed" summary lines (never limited). */
export const SUMMARY_CATEGORY: readonly string[] = ["prhelperd", "log"];

/** A token bucket counting what it refused (pure; the caller gives the time). */
export class LineBudget {
  readonly burst: number;
  readonly perSecond: number;
  #tokens: number;
  #last: number | null = null;
  #suppressed = 0;

  constructor(options: BudgetOptions) {
    if (!(options.burst >= 1) || !(options.perSecond > 0)) {
      throw new RangeError(
        `log budget burst ${options.burst} / rate ${options.perSecond} must be positive`,
      );
    }
    this.burst = options.burst;
    this.perSecond = options.perSecond;
    this.#tokens = options.burst;
  }

  /** Spend one line at `now` (ms); false if the budget is empty (the line is counted). */
  take(now: number): boolean {
    if (this.#last !== null && now > this.#last) {
      this.#tokens = Math.min(
        this.burst,
        this.#tokens + (now - this.#last) * this.perSecond / 1000,
      );
    }
    if (this.#last === null || now > this.#last) this.#last = now;
    if (this.#tokens >= 1) {
      this.#tokens -= 1;
      return true;
    }
    this.#suppressed++;
    return false;
  }

  /** Lines refused since the last call; resets the count. */
  takeSuppressed(): number {
    const n = this.#suppressed;
    this.#suppressed = 0;
    return n;
  }
}

/** Which budget a record spends. */
export type LogStream = "audit" | "lifecycle" | "general";

/**
 * `audit` for audit records; `lifecycle` for the daemon's own lines at info
 * and above (start-up, stop: a handful per run) and the summaries; `general`
 * for everything else, i.e. every line a client can cause.
 */
export function logStream(record: Pick<LogRecord, "category" | "level">): LogStream {
  const part = record.category[1];
  if (part === "audit") return "audit";
  if (part === SUMMARY_CATEGORY[1]) return "lifecycle";
  if (part === "daemon" && PRIORITY[record.level] <= PRIORITY.info) return "lifecycle";
  return "general";
}

/** What a {@linkcode LogGate} left out since the last report. */
export interface SuppressedReport {
  general: number;
  audit: number;
  /** Milliseconds covered by the report. */
  sinceMs: number;
}

/** The per-process gate every log line passes (see the module comment). */
export class LogGate {
  readonly general: LineBudget;
  readonly audit: LineBudget;
  #lastReport: number | null = null;

  constructor(options: { general?: BudgetOptions; audit?: BudgetOptions } = {}) {
    this.general = new LineBudget(options.general ?? LOG_BUDGETS.general);
    this.audit = new LineBudget(options.audit ?? LOG_BUDGETS.audit);
  }

  /** Whether `record` may be written at `now` (ms). */
  admit(record: Pick<LogRecord, "category" | "level">, now: number): boolean {
    switch (logStream(record)) {
      case "audit":
        return this.audit.take(now);
      case "general":
        return this.general.take(now);
      default:
        return true;
    }
  }

  /** What was suppressed since the last call (or since `now` on the first). */
  report(now: number): SuppressedReport {
    const sinceMs = now - (this.#lastReport ?? now);
    this.#lastReport = now;
    return {
      general: this.general.takeSuppressed(),
      audit: this.audit.takeSuppressed(),
      sinceMs,
    };
  }
}

/**
 * Log what `gate` suppressed since its last report: a warning for per-client
 * lines, an error for audit records (the journal then lacks some PR OUT
 * records). Nothing when nothing was suppressed.
 */
export function reportSuppressed(gate: LogGate, now: number = Date.now()): void {
  const r = gate.report(now);
  const log = getLogger([...SUMMARY_CATEGORY]);
  const seconds = Math.max(1, Math.round(r.sinceMs / 1000));
  if (r.general > 0) {
    log.warning(
      "log rate limit: {suppressed} lines suppressed in the last {seconds} s " +
        "(refusals, closes, AVC-like lines; at most {burst} at once, then {rate}/s)",
      {
        suppressed: r.general,
        seconds,
        burst: gate.general.burst,
        rate: gate.general.perSecond,
      },
    );
  }
  if (r.audit > 0) {
    log.error(
      "audit rate limit: {suppressed} audit records not logged in the last {seconds} s " +
        "(at most {burst} at once, then {rate}/s)",
      { suppressed: r.audit, seconds, burst: gate.audit.burst, rate: gate.audit.perSecond },
    );
  }
}

// ---------------------------------------------------------------- the sink

/** Options of {@linkcode createLogSink}. */
export interface LogSinkOptions {
  /** Write `<N>` prefixes (stderr is the journal). */
  journal: boolean;
  /** Writes one line (without its newline); default stderr. */
  write?: (line: string) => void;
  /** Sends an audit record to journald natively; false if it could not. */
  native?: ((entry: Uint8Array) => boolean) | null;
  /** The rate limits; default a new {@linkcode LogGate}. */
  gate?: LogGate;
  /** Milliseconds now; default Date.now. */
  clock?: () => number;
}

const encoder = new TextEncoder();

function writeStderr(line: string): void {
  try {
    Deno.stderr.writeSync(encoder.encode(line + "\n"));
  } catch {
    // stderr gone (e.g. closed by a daemonizing parent): nothing to report to
  }
}

/** The daemon's LogTape sink: the gate, then journald (audit records) or a line. */
export function createLogSink(options: LogSinkOptions): (record: LogRecord) => void {
  const gate = options.gate ?? new LogGate();
  const clock = options.clock ?? Date.now;
  const write = options.write ?? writeStderr;
  const native = options.native ?? null;
  return (record: LogRecord) => {
    if (!gate.admit(record, clock())) return;
    if (native !== null && record.category[1] === "audit" && native(journalEntry(record))) return;
    write(formatLine(record, options.journal));
  };
}

/** Options of {@linkcode setupLogging}. */
export interface LoggingOptions {
  /** 0 quiet .. 3 trace. */
  verbosity: number;
  /** Write `<N>` prefixes (stderr is the journal). */
  journal: boolean;
}

let summaryTimer: ReturnType<typeof setInterval> | null = null;

/** Configure LogTape once for the process; logs go to stderr. */
export async function setupLogging(options: LoggingOptions): Promise<void> {
  const level = LEVEL_BY_VERBOSITY[Math.max(0, Math.min(3, options.verbosity))];
  const gate = new LogGate();
  await configure({
    reset: true,
    sinks: {
      // under systemd, audit records also go to journald as structured fields
      stderr: createLogSink({
        journal: options.journal,
        native: options.journal ? openJournal() : null,
        gate,
      }),
    },
    loggers: [
      { category: ["prhelperd"], lowestLevel: level, sinks: ["stderr"] },
      { category: ["logtape", "meta"], lowestLevel: "warning", sinks: ["stderr"] },
    ],
  });
  if (summaryTimer !== null) clearInterval(summaryTimer);
  summaryTimer = setInterval(() => reportSuppressed(gate), SUMMARY_INTERVAL_MS);
  Deno.unrefTimer(summaryTimer);
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
