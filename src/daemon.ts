/**
 * The daemon's life: logging, the listening socket, the pidfile, privileges,
 * the SG_IO Workers, signals, the serve loop, and a clean exit.
 *
 * @module
 */

import { getNofileLimit, setNofileLimit } from "../ffi/libc.ts";
import type { DaemonOptions } from "./cli.ts";
import { DEFAULT_SOCKET, VERSION } from "./cli.ts";
import { SgIoExecutor } from "./executor.ts";
import {
  adoptActivatedSocket,
  listenAtPath,
  type Listener,
  parseActivation,
  StartupError,
} from "./listener.ts";
import { logger, setupLogging, stderrIsJournal } from "./log.ts";
import { acquirePidfile, type Pidfile } from "./pidfile.ts";
import { Server } from "./server.ts";

const log = logger("daemon");

function env(name: string): string | undefined {
  try {
    return Deno.env.get(name);
  } catch {
    return undefined; // not in the permission set: treated as unset
  }
}

/** Raise the soft RLIMIT_NOFILE to the hard limit: each client needs an fd or two. */
function raiseFdLimit(): void {
  try {
    const { soft, hard } = getNofileLimit();
    if (soft < hard) setNofileLimit(hard, hard);
  } catch (e) {
    log.warning("cannot raise RLIMIT_NOFILE: {error}", { error: String(e) });
  }
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
  if (options.daemon) {
    throw new StartupError(
      "-d/--daemon is not available in this build; run under systemd or libvirt",
    );
  }
  if (options.user !== null || options.group !== null) {
    throw new StartupError("-u/--user and -g/--group are not available in this build yet");
  }

  const activation = parseActivation({
    LISTEN_PID: env("LISTEN_PID"),
    LISTEN_FDS: env("LISTEN_FDS"),
    LISTEN_FDNAMES: env("LISTEN_FDNAMES"),
  }, Deno.pid);
  if (activation !== null && options.socket !== null) {
    throw new StartupError(
      "-k/--socket cannot be used together with socket activation (LISTEN_FDS)",
    );
  }
  let listener: Listener;
  if (activation !== null) {
    listener = adoptActivatedSocket(activation);
    for (const name of ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"]) {
      try {
        Deno.env.delete(name);
      } catch { /* not permitted: harmless */ }
    }
  } else {
    listener = listenAtPath(options.socket ?? DEFAULT_SOCKET);
  }

  let pidfile: Pidfile | null = null;
  const executor = new SgIoExecutor({ maxWorkers: options.maxSgioWorkers });
  try {
    if (options.pidfile !== null) pidfile = acquirePidfile(options.pidfile);
    raiseFdLimit();
    executor.warmUp();
    const server = new Server({
      listenFd: listener.fd,
      handler: { executor, sgioTimeoutMs: options.sgioTimeoutMs },
      maxConnections: options.maxConnections,
      stallTimeoutMs: options.stallTimeoutMs,
    });
    const stop = (signal: string) => () => {
      log.info("{signal}: stopping; {inFlight} request(s) in flight", {
        signal,
        inFlight: server.inFlight,
      });
      server.stop();
    };
    const handlers: [Deno.Signal, () => void][] = (["SIGTERM", "SIGINT", "SIGHUP"] as const).map(
      (s) => [s, stop(s)],
    );
    for (const [s, h] of handlers) Deno.addSignalListener(s, h);
    log.info("prhelperd {version} listening on {where}", {
      version: VERSION,
      where: listener.description,
    });
    await server.run();
    for (const [s, h] of handlers) Deno.removeSignalListener(s, h);
    log.info("stopped cleanly", { ...server.stats });
    return 0;
  } finally {
    executor.close();
    listener.close();
    pidfile?.remove();
  }
}
