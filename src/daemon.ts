/**
 * The daemon's life: logging, the listening socket, the pidfile, privileges,
 * the SG_IO Workers, signals, the serve loop, and a clean exit.
 *
 * @module
 */

import { ensureSignalIgnored, getNofileLimit, setNofileLimit } from "../ffi/process.ts";
import type { DaemonOptions } from "./cli.ts";
import { DEFAULT_SOCKET, DEFAULT_USER, VERSION } from "./cli.ts";
import { fdsNeeded } from "./conn_limits.ts";
import { SgIoExecutor } from "./executor.ts";
import { jitStatus } from "./jit.ts";
import { MultipathHandler } from "./multipath.ts";
import { MultipathdNotifier } from "./multipathd.ts";
import { DETACH_ENV, detachAndWait, detachedReadyFd, reportReady } from "./daemonize.ts";
import {
  adoptActivatedSocket,
  adoptListener,
  listenAtPath,
  type Listener,
  parseActivation,
} from "./listener.ts";
import { logger, setupLogging, stderrIsJournal } from "./log.ts";
import { acquirePidfile, adoptPidfile, type Pidfile } from "./pidfile.ts";
import { dropPrivileges, PrivilegeError, stage2Fds } from "./security/privileges.ts";
import { Notifier } from "./sd_notify.ts";
import { Server, type ServerStats } from "./server.ts";
import { createSecurity, type Security } from "./security/mod.ts";
import { StartupError } from "./startup_error.ts";

const log = logger("daemon");

/**
 * Signals that terminate a process by default but that the daemon ignores.
 * SIGUSR1 is not among them: src/ignore_sigusr1.ts sets it to SIG_IGN and
 * blocks it from the first module on.
 */
const IGNORED_SIGNALS: readonly Deno.Signal[] = ["SIGUSR2", "SIGALRM"];
const SIGUSR1 = 10;

function env(name: string): string | undefined {
  try {
    return Deno.env.get(name);
  } catch {
    return undefined; // not in the permission set: treated as unset
  }
}

/**
 * Raise the soft RLIMIT_NOFILE to the hard limit: each client needs an fd or
 * two. The hard limit is the operator's; if it cannot hold --max-connections,
 * say so (at info: a helper libvirt starts for one VM never gets near it).
 */
function raiseFdLimit(maxConnections: number): void {
  try {
    const { soft, hard } = getNofileLimit();
    if (soft < hard) setNofileLimit(hard, hard);
    const need = fdsNeeded(maxConnections);
    if (hard < BigInt(need)) {
      log.info(
        "RLIMIT_NOFILE {limit} is below the {need} fds that --max-connections {max} needs: " +
          "past that, accepts wait (EMFILE) until fds free up; for a shared helper raise " +
          "LimitNOFILE= (ulimit -Hn) or lower --max-connections",
        { limit: String(hard), need, max: maxConnections },
      );
    }
  } catch (e) {
    log.warning("cannot raise RLIMIT_NOFILE: {error}", { error: String(e) });
  }
}

function openListener(options: DaemonOptions): Listener {
  const activation = parseActivation({
    LISTEN_PID: env("LISTEN_PID"),
    LISTEN_FDS: env("LISTEN_FDS"),
    LISTEN_FDNAMES: env("LISTEN_FDNAMES"),
  }, Deno.pid);
  if (activation === null) return listenAtPath(options.socket ?? DEFAULT_SOCKET);
  if (options.socket !== null) {
    throw new StartupError(
      "-k/--socket cannot be used together with socket activation (LISTEN_FDS)",
    );
  }
  const listener = adoptActivatedSocket(activation);
  for (const name of ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"]) {
    try {
      Deno.env.delete(name);
    } catch { /* not permitted: harmless */ }
  }
  return listener;
}

/** The peer policy and SELinux hooks; a bad setting is a {@linkcode StartupError}. */
function openSecurity(options: DaemonOptions): Security {
  try {
    return createSecurity({
      selinux: options.selinux,
      apparmor: options.apparmor,
      apparmorUnconfined: options.apparmorUnconfined,
      allowUsers: options.allowUsers ?? undefined,
      allowGroups: options.allowGroups ?? undefined,
      refuseRoot: options.refuseRoot,
    });
  } catch (e) {
    throw new StartupError((e as Error).message);
  }
}

/** STATUS= to the service manager at most once a second, with the latest counters. */
class StatusThrottle {
  readonly #notifier: Notifier;
  #timer: ReturnType<typeof setTimeout> | null = null;
  #latest: ServerStats | null = null;

  constructor(notifier: Notifier) {
    this.#notifier = notifier;
  }

  /** Report `stats` within a second (a no-op outside systemd). */
  later(stats: ServerStats): void {
    this.#latest = stats;
    if (this.#timer !== null || !this.#notifier.enabled) return;
    this.#timer = setTimeout(() => {
      this.#timer = null;
      if (this.#latest !== null) this.#notifier.counters(this.#latest);
    }, 1000);
    Deno.unrefTimer(this.#timer);
  }

  /** Drop a pending report. */
  close(): void {
    if (this.#timer !== null) clearTimeout(this.#timer);
  }
}

/** Drop privileges (re-executing), a refusal as a {@linkcode StartupError}; log the result. */
function dropAndReport(options: DaemonOptions, keepFds: Record<string, number>): void {
  let dropped;
  try {
    dropped = dropPrivileges({
      user: options.user ?? undefined,
      group: options.group ?? undefined,
      defaultUser: DEFAULT_USER,
      keepFds,
      // also when nothing is to drop: the new image has SIGUSR1 blocked on every thread
      reexecAnyway: true,
    });
  } catch (e) {
    if (e instanceof PrivilegeError) throw new StartupError(e.message);
    throw e;
  }
  if (dropped.warning) log.warning("{warning}", { warning: dropped.warning });
  if (dropped.note) log.info("{note}", { note: dropped.note });
  log.info("running as uid {uid} gid {gid}, CAP_SYS_RAWIO {rawio}", {
    uid: dropped.uid,
    gid: dropped.gid,
    rawio: dropped.rawio ? "effective" : "MISSING",
  });
}

/**
 * SIGTERM, SIGINT and SIGHUP stop `server` (draining); the signals in
 * IGNORED_SIGNALS are logged and ignored; SIGUSR1 is kept ignored. Returns
 * the function that removes these handlers.
 */
function watchSignals(server: Server, notifier: Notifier): () => void {
  const stop = (signal: string) => () => {
    log.info("{signal}: stopping; {inFlight} request(s) in flight", {
      signal,
      inFlight: server.inFlight,
    });
    notifier.stopping(`stopping (${signal}), ${server.inFlight} request(s) in flight`);
    server.stop();
  };
  const handlers: [Deno.Signal, () => void][] = (["SIGTERM", "SIGINT", "SIGHUP"] as const).map(
    (s) => [s, stop(s)],
  );
  // Signals whose default action would kill the daemon but mean nothing to it
  // (a stray `kill -USR1`, a logrotate script): ignored, logged at debug.
  for (const s of IGNORED_SIGNALS) {
    handlers.push([s, () => log.debug("{signal} ignored", { signal: s })]);
  }
  for (const [s, h] of handlers) Deno.addSignalListener(s, h);
  // Deno (since 2.9.2) starts the V8 inspector on 127.0.0.1:9229 when it gets
  // SIGUSR1, installing that handler 500 ms after start: whoever could then
  // connect would run code with CAP_SYS_RAWIO. src/ignore_sigusr1.ts ignores
  // it and blocks it before anything else runs, and the re-executed daemon
  // has it blocked on every thread; should the re-exec have failed, the
  // runtime installs its trigger after 500 ms, so SIG_IGN is put back here.
  const usr1Guard = setInterval(() => {
    try {
      if (ensureSignalIgnored(SIGUSR1)) log.debug("SIGUSR1 handler replaced by SIG_IGN");
    } catch (e) {
      log.error("cannot ignore SIGUSR1: {error}", { error: String(e) });
    }
  }, 100);
  Deno.unrefTimer(usr1Guard);
  return () => {
    clearInterval(usr1Guard);
    for (const [s, h] of handlers) Deno.removeSignalListener(s, h);
  };
}

/** Run the daemon until a stop signal; resolves to the exit status. */
export async function runDaemon(options: DaemonOptions): Promise<number> {
  await setupLogging({
    verbosity: options.verbosity,
    journal: stderrIsJournal(env("JOURNAL_STREAM")),
  });
  if (options.trace.length > 0) {
    log.warning("-T/--trace {spec} is accepted for qemu-pr-helper compatibility and ignored", {
      spec: options.trace.join(","),
    });
  }
  if (options.ignoredArgs.length > 0) {
    log.warning("arguments {args} ignored (as qemu-pr-helper ignores them)", {
      args: options.ignoredArgs.map((a) => JSON.stringify(a)).join(" "),
    });
  }
  const stage2 = stage2Fds();
  const readyFd = detachedReadyFd(env(DETACH_ENV));
  if (options.daemon && readyFd === null && stage2 === null) return detachAndWait();

  let listener: Listener;
  let pidfile: Pidfile | null = null;
  if (stage2 !== null) {
    // re-executed with fewer privileges: the socket and pidfile came along
    listener = adoptListener(stage2, options.socket ?? DEFAULT_SOCKET);
    if (stage2.pidfile !== undefined && options.pidfile !== null) {
      pidfile = adoptPidfile(options.pidfile, stage2.pidfile);
    }
  } else {
    listener = openListener(options);
  }
  const executor = new SgIoExecutor({ maxWorkers: options.maxSgioWorkers });
  // sd_notify (a no-op outside systemd): STATUS= at most once a second.
  const notifier = new Notifier();
  if (notifier.config.ignored) log.debug("{why}", { why: notifier.config.ignored });
  const status = new StatusThrottle(notifier);
  let security: Security | null = null;
  try {
    if (options.pidfile !== null && pidfile === null) pidfile = acquirePidfile(options.pidfile);
    raiseFdLimit(options.maxConnections);
    const keepFds: Record<string, number> = { ...listener.keepFds() };
    if (pidfile !== null) keepFds.pidfile = pidfile.fd;
    if (readyFd !== null) keepFds.ready = readyFd;
    dropAndReport(options, keepFds);
    // SG_IO Workers start on first use: a helper that only sees refused requests never pays for them
    const sec = openSecurity(options);
    security = sec;
    for (const line of sec.startupLines) log.info("{line}", { line });
    const jit = jitStatus();
    if (jit.warn) log.warning("{line}", { line: jit.line });
    else log.info("{line}", { line: jit.line });
    const multipath = new MultipathHandler({
      executor,
      sgioTimeoutMs: options.sgioTimeoutMs,
      multipathd: new MultipathdNotifier(),
    });
    const server = new Server({
      listenFd: listener.fd,
      handler: {
        executor,
        sgioTimeoutMs: options.sgioTimeoutMs,
        access: sec.access,
        audit: (event) => sec.audit(event),
        multipath: (input, done) => multipath.handle(input, done),
      },
      admit: (peer) => sec.admit(peer),
      maxConnections: options.maxConnections,
      maxConnectionsPerUid: options.maxConnectionsPerUid,
      maxConnectionsPerContext: options.maxConnectionsPerContext,
      stallTimeoutMs: options.stallTimeoutMs,
      idleTimeoutMs: options.idleTimeoutMs,
      onStats: (stats) => status.later(stats),
    });
    const unwatch = watchSignals(server, notifier);
    log.info("prhelperd {version} listening on {where}", {
      version: VERSION,
      where: listener.description,
    });
    if (readyFd !== null) reportReady(readyFd);
    notifier.ready(`listening on ${listener.description}`);
    notifier.startWatchdog();
    await server.run();
    unwatch();
    log.info("stopped cleanly", { ...server.stats });
    return 0;
  } finally {
    notifier.close();
    status.close();
    executor.close();
    security?.close();
    listener.close();
    pidfile?.remove();
  }
}
