/**
 * sd_notify(3) for a Type=notify service: READY=1, STATUS=…, STOPPING=1 and
 * the watchdog keep-alive, sent as datagrams to `$NOTIFY_SOCKET`.
 *
 * Message formatting and environment parsing are pure functions (unit
 * tested); {@linkcode Notifier} does the sending through ffi/sockets.ts. Outside
 * systemd (no NOTIFY_SOCKET) every method is a no-op.
 *
 * The environment is read, not unset: the daemon runs no child processes, and
 * after a privilege re-exec (src/security/privileges.ts) the same pid must still notify.
 *
 * Only the unit's main process may talk to `$NOTIFY_SOCKET`. A helper that a
 * service starts (libvirtd, Type=notify, spawns one prhelperd per VM with its
 * own environment) inherits the variable but is not the main process: its
 * messages would be refused, each with a warning in the journal, and a
 * READY=1 or STOPPING=1 would speak for the wrong service if NotifyAccess=all.
 * systemd (since v248) tells each process it starts its own pid in
 * `$SYSTEMD_EXEC_PID`; when that names another process, NOTIFY_SOCKET is
 * ignored. (Without SYSTEMD_EXEC_PID, an older systemd or another service
 * manager, the socket is trusted as before.)
 *
 * @module
 */

import { closeFd } from "../ffi/files.ts";
import { sendDatagram, unixSocket } from "../ffi/sockets.ts";

/** What the environment says about the service manager. */
export interface NotifyConfig {
  /** `$NOTIFY_SOCKET` (a path, or `@name` for an abstract socket); null when not under systemd. */
  socket: string | null;
  /** Watchdog interval in microseconds, when the watchdog is on for this process. */
  watchdogUsec: number | null;
  /** Why an inherited NOTIFY_SOCKET is not used (another process is the unit's main one); else null. */
  ignored?: string | null;
}

/** A read-only view of environment variables (Deno.env fits). */
export interface EnvReader {
  get(key: string): string | undefined;
}

/**
 * Parse NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID (as sd_watchdog_enabled(3)),
 * and SYSTEMD_EXEC_PID: a NOTIFY_SOCKET inherited from a service whose main
 * process is another one is ignored.
 */
export function notifyConfig(env: EnvReader, pid: number): NotifyConfig {
  const raw = env.get("NOTIFY_SOCKET");
  let socket = raw !== undefined && (raw.startsWith("/") || raw.startsWith("@")) ? raw : null;
  let ignored: string | null = null;
  const execPid = env.get("SYSTEMD_EXEC_PID");
  // (empty counts as unset: a harness or wrapper that must not pass its own on clears it so)
  if (socket !== null && execPid !== undefined && execPid !== "" && execPid !== String(pid)) {
    ignored = `NOTIFY_SOCKET ignored: inherited from the service whose main process is ` +
      `SYSTEMD_EXEC_PID "${execPid}", not this process (pid ${pid})`;
    socket = null;
  }
  let watchdogUsec: number | null = null;
  const usec = env.get("WATCHDOG_USEC");
  if (usec !== undefined && /^[0-9]+$/.test(usec) && Number(usec) > 0) {
    const wpid = env.get("WATCHDOG_PID");
    if (wpid === undefined || Number(wpid) === pid) watchdogUsec = Number(usec);
  }
  if (socket === null) watchdogUsec = null;
  return { socket, watchdogUsec, ignored };
}

/** The keep-alive period: half the watchdog interval, as systemd recommends (ms, at least 1). */
export function watchdogPeriodMs(watchdogUsec: number): number {
  return Math.max(1, Math.floor(watchdogUsec / 2000));
}

/** One notification: `KEY=value` lines, newline-separated. Values must be one line. */
export function formatNotify(fields: Record<string, string | number>): string {
  return Object.entries(fields).map(([key, value]) => {
    if (!/^[A-Z_][A-Z0-9_]*$/.test(key)) throw new RangeError(`bad sd_notify key "${key}"`);
    const v = String(value);
    if (v.includes("\n")) throw new RangeError(`sd_notify value for ${key} has a newline`);
    return `${key}=${v}`;
  }).join("\n");
}

/** Counters shown in `systemctl status`. */
export interface ServiceCounters {
  /** Connections open now. */
  connections: number;
  /** Requests answered since start. */
  requests: number;
  /** Connections accepted since start (optional). */
  accepted?: number;
}

/** The STATUS= text for the counters. */
export function statusText(c: ServiceCounters): string {
  const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? "" : "s"}`;
  const parts = [
    `${plural(c.connections, "connection")} open`,
    `${plural(c.requests, "request")} served`,
  ];
  if (c.accepted !== undefined) parts.push(`${c.accepted} accepted in total`);
  return parts.join(", ");
}

/** Sends notifications to the service manager; every method is a no-op outside systemd. */
export class Notifier {
  readonly config: NotifyConfig;
  #fd: number | null = null;
  #timer: ReturnType<typeof setInterval> | null = null;
  #lastStatus = "";

  constructor(config: NotifyConfig = notifyConfig(Deno.env, Deno.pid)) {
    this.config = config;
  }

  /** true when there is a service manager to talk to. */
  get enabled(): boolean {
    return this.config.socket !== null;
  }

  /**
   * Send raw fields. Returns false when not under systemd or when sending
   * failed (sd_notify failures are never fatal for a daemon).
   */
  send(fields: Record<string, string | number>): boolean {
    const path = this.config.socket;
    if (path === null) return false;
    try {
      this.#fd ??= unixSocket({ datagram: true });
      sendDatagram(this.#fd, path, new TextEncoder().encode(formatNotify(fields)));
      return true;
    } catch {
      return false;
    }
  }

  /** READY=1 (call once the socket accepts connections), with an initial status. */
  ready(status = "listening"): boolean {
    this.#lastStatus = status;
    return this.send({ READY: 1, STATUS: status });
  }

  /** STATUS=…; repeated identical texts are not sent again. */
  status(text: string): boolean {
    if (text === this.#lastStatus) return false;
    this.#lastStatus = text;
    return this.send({ STATUS: text });
  }

  /** STATUS= from the counters. */
  counters(c: ServiceCounters): boolean {
    return this.status(statusText(c));
  }

  /** STOPPING=1 (call when shutdown begins). Also stops the watchdog timer. */
  stopping(status = "stopping"): boolean {
    this.stopWatchdog();
    this.#lastStatus = status;
    return this.send({ STOPPING: 1, STATUS: status });
  }

  /** One WATCHDOG=1 keep-alive. */
  watchdog(): boolean {
    return this.send({ WATCHDOG: 1 });
  }

  /**
   * Send WATCHDOG=1 every half watchdog interval while the event loop runs, if
   * the service has WatchdogSec= set. The timer does not keep the process alive.
   * `healthy`, if given, is asked each time; a false answer skips the ping.
   */
  startWatchdog(healthy?: () => boolean): boolean {
    const usec = this.config.watchdogUsec;
    if (usec === null || this.config.socket === null || this.#timer !== null) return false;
    this.watchdog();
    const timer = setInterval(() => {
      if (healthy === undefined || healthy()) this.watchdog();
    }, watchdogPeriodMs(usec));
    Deno.unrefTimer(timer);
    this.#timer = timer;
    return true;
  }

  /** Stop the keep-alive timer. */
  stopWatchdog(): void {
    if (this.#timer !== null) clearInterval(this.#timer);
    this.#timer = null;
  }

  /** Stop the timer and close the datagram socket. */
  close(): void {
    this.stopWatchdog();
    if (this.#fd !== null) closeFd(this.#fd);
    this.#fd = null;
  }
}
