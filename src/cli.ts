/**
 * Command line, a drop-in for qemu-pr-helper's (same short and long options,
 * same defaults), plus prhelperd's own settings. Parsing is pure: it returns
 * what to do (run the daemon with its options, run an operator tool, or print
 * text and exit with a status, a bad command line included); main.ts does it.
 *
 * @module
 */

import { Command, CommanderError, InvalidArgumentError, Option } from "@commander-js/extra-typings";
import denoJson from "../deno.json" with { type: "json" };

/** prhelperd's version. */
export const VERSION: string = denoJson.version;
/** Where qemu-pr-helper listens by default. */
export const DEFAULT_SOCKET = "/var/run/qemu-pr-helper.sock";
/** qemu-pr-helper's default pidfile (written only with -d or -f). */
export const DEFAULT_PIDFILE = "/var/run/qemu-pr-helper.pid";
/**
 * The user a daemon started as root switches to when no -u is given, if the
 * user exists (the package creates it: packaging/prhelperd.sysusers).
 */
export const DEFAULT_USER = "prhelperd";
/** Default of --max-connections. */
export const DEFAULT_MAX_CONNECTIONS = 4096;
/** Default of --max-connections-per-context (one VM's QEMU under sVirt). */
export const DEFAULT_MAX_PER_CONTEXT = 64;

/** Everything the daemon needs from the command line. */
export interface DaemonOptions {
  /** Socket path; null when none was given (socket activation or the default). */
  socket: string | null;
  /** Pidfile path, or null if no pidfile is written. */
  pidfile: string | null;
  daemon: boolean;
  user: string | null;
  group: string | null;
  /** 0 quiet .. 3 trace. */
  verbosity: number;
  /** -T arguments (accepted for compatibility, ignored). */
  trace: string[];
  /** Positional arguments: qemu-pr-helper ignores them, and so does prhelperd (with a warning). */
  ignoredArgs: string[];
  sgioTimeoutMs: number;
  stallTimeoutMs: number;
  /** Close a connection idle between requests for this long; 0: never. */
  idleTimeoutMs: number;
  maxConnections: number;
  /** Connections one uid may hold (default: half of maxConnections). */
  maxConnectionsPerUid: number;
  /** Connections one per-VM SELinux context may hold. */
  maxConnectionsPerContext: number;
  maxSgioWorkers: number;
  /** SELinux access check: auto (on where the kernel runs SELinux; refuses to start there if it cannot check), off, require. */
  selinux: "auto" | "off" | "require";
  /** AppArmor access check: auto (on where the kernel runs AppArmor; refuses to start there if it cannot query it), off, require. */
  apparmor: "auto" | "off" | "require";
  /** With the AppArmor check on: what clients AppArmor does not confine get. */
  apparmorUnconfined: "allow" | "refuse";
  /** Peer policy: users (names or uids) allowed to connect; null for no restriction. */
  allowUsers: string[] | null;
  /** Peer policy: groups (names or gids) whose members (primary gid) may connect. */
  allowGroups: string[] | null;
  /** Peer policy: refuse uid 0 unless it is listed. */
  refuseRoot: boolean;
}

/** The outcome of parsing: run the daemon, or print text and exit. */
export type CliResult =
  | { kind: "daemon"; options: DaemonOptions }
  | { kind: "exit"; code: number; stdout: string; stderr: string }
  /** An operator tool (`prhelperd client ...`, `prhelperd check ...`): main.ts runs it. */
  | { kind: "tool"; tool: "client" | "check"; args: string[] };

function positiveInt(name: string, max: number) {
  return (value: string): number => {
    if (!/^\d+$/.test(value) || Number(value) < 1 || Number(value) > max) {
      throw new InvalidArgumentError(`${name} "${value}" must be a whole number from 1 to ${max}`);
    }
    return Number(value);
  };
}

function seconds(name: string) {
  return (value: string): number => {
    const n = Number(value);
    if (value.trim() === "" || !Number.isFinite(n) || n <= 0 || n > 86400) {
      throw new InvalidArgumentError(
        `${name} "${value}" must be a number of seconds, above 0, at most 86400`,
      );
    }
    return Math.round(n * 1000);
  };
}

function secondsOrOff(name: string) {
  return (value: string): number => {
    const n = Number(value);
    if (value.trim() === "" || !Number.isFinite(n) || n < 0 || n > 86400) {
      throw new InvalidArgumentError(
        `${name} "${value}" must be a number of seconds from 0 (off) to 86400`,
      );
    }
    return Math.round(n * 1000);
  };
}

function nameList(name: string) {
  return (value: string, prev: string[] | undefined): string[] => {
    const names = value.split(",").map((n) => n.trim());
    if (names.some((n) => n === "" || /[\s:]/.test(n))) {
      throw new InvalidArgumentError(
        `${name} "${value}" must be names or numbers separated by commas`,
      );
    }
    return [...(prev ?? []), ...names];
  };
}

/** Build the commander program (also used for --help and the man page test). */
// deno-lint-ignore explicit-function-return-type
export function buildProgram() {
  return new Command()
    .name("prhelperd")
    .usage("[OPTIONS]")
    .description(
      "Persistent reservation helper for QEMU's pr-manager-helper: runs PERSISTENT RESERVE " +
        "IN/OUT on the disks QEMU passes, after checking the device and the caller's access.",
    )
    .helpOption("-h, --help", "display this help and exit")
    .version(`prhelperd ${VERSION}`, "-V, --version", "output version information and exit")
    .option("-k, --socket <path>", `listen on this socket path (default ${DEFAULT_SOCKET})`)
    .option("-f, --pidfile <path>", `write and lock a pidfile (default ${DEFAULT_PIDFILE} with -d)`)
    .option("-d, --daemon", "detach and run in the background")
    .option(
      "-u, --user <user>",
      `user to drop privileges to (name or number; as root without -u: ${DEFAULT_USER} if ` +
        "that user exists; -u root keeps uid 0)",
    )
    .option("-g, --group <group>", "group to drop privileges to (name or number)")
    .option("-q, --quiet", "log only warnings and errors")
    .addOption(
      new Option("-v, --verbose", "log more (repeat for more)").argParser(
        (_v: string, prev: number) => prev + 1,
      ).default(0),
    )
    .addOption(
      new Option("-T, --trace <spec>", "accepted for qemu-pr-helper compatibility; ignored")
        .argParser((v: string, prev: string[]) => [...prev, v]).default([] as string[], "none"),
    )
    .addOption(
      new Option("--sgio-timeout <seconds>", "SG_IO command timeout")
        .argParser(seconds("--sgio-timeout")).default(60_000, "60"),
    )
    .addOption(
      new Option(
        "--stall-timeout <seconds>",
        "drop a client stalled inside a request, or not reading its reply, after this long",
      ).argParser(seconds("--stall-timeout")).default(30_000, "30"),
    )
    .addOption(
      new Option(
        "--idle-timeout <seconds>",
        "close a connection that sent no request for this long (QEMU reconnects); 0: never",
      ).argParser(secondsOrOff("--idle-timeout")).default(0, "0"),
    )
    .addOption(
      new Option("--max-connections <n>", "connections served at once; more are refused")
        .argParser(positiveInt("--max-connections", 1_000_000)).default(DEFAULT_MAX_CONNECTIONS),
    )
    .addOption(
      new Option(
        "--max-connections-per-uid <n>",
        "connections one client uid may hold (default: half of --max-connections)",
      ).argParser(positiveInt("--max-connections-per-uid", 1_000_000)),
    )
    .addOption(
      new Option(
        "--max-connections-per-context <n>",
        "connections one per-VM SELinux context (a single MCS level, e.g. s0:c1,c2) may hold",
      ).argParser(positiveInt("--max-connections-per-context", 1_000_000))
        .default(DEFAULT_MAX_PER_CONTEXT),
    )
    .addOption(
      new Option("--max-sgio-workers <n>", "threads running SG_IO at once")
        .argParser(positiveInt("--max-sgio-workers", 256)).default(16),
    )
    .addOption(
      new Option("--selinux <mode>", "SELinux access check per request: auto, off or require")
        .choices(["auto", "off", "require"] as const).default("auto" as const),
    )
    .addOption(
      new Option("--apparmor <mode>", "AppArmor access check per request: auto, off or require")
        .choices(["auto", "off", "require"] as const).default("auto" as const),
    )
    .addOption(
      new Option(
        "--apparmor-unconfined <policy>",
        "with the AppArmor check on, requests from clients AppArmor does not confine: " +
          "allow or refuse",
      ).choices(["allow", "refuse"] as const).default("allow" as const),
    )
    .addOption(
      new Option(
        "--allow-user <users>",
        "only these users (names or uids, comma-separated) may connect",
      )
        .argParser(nameList("--allow-user")),
    )
    .addOption(
      new Option("--allow-group <groups>", "only members of these groups (primary gid) may connect")
        .argParser(nameList("--allow-group")),
    )
    .option("--refuse-root", "with --allow-user/--allow-group, refuse uid 0 unless listed")
    .addHelpText(
      "after",
      "\nOperator tools (see prhelperd(8)):\n" +
        "  prhelperd client [--socket PATH] [sg_persist options] DEVICE\n" +
        "  prhelperd check DEVICE [--socket PATH] [--as CONTEXT]\n",
    )
    // qemu-pr-helper stops at the first non-option and ignores the rest; so does prhelperd
    .allowExcessArguments(true);
}

/** Parse the daemon's arguments (without the program name). */
export function parseArgs(args: string[]): CliResult {
  if (args[0] === "client" || args[0] === "check") {
    return { kind: "tool", tool: args[0], args: args.slice(1) };
  }
  let stdout = "";
  let stderr = "";
  const program = buildProgram()
    .exitOverride()
    .configureOutput({
      writeOut: (s) => stdout += s,
      writeErr: (s) => stderr += s,
      // plain text; commander would otherwise read FORCE_COLOR/CLICOLOR_FORCE,
      // which the daemon's permission set does not allow (NotCapable)
      getOutHasColors: () => false,
      getErrHasColors: () => false,
    });
  try {
    program.parse(args, { from: "user" });
  } catch (e) {
    if (e instanceof CommanderError) {
      if (e.code === "commander.helpDisplayed" || e.code === "commander.version") {
        return { kind: "exit", code: 0, stdout, stderr };
      }
      return { kind: "exit", code: 1, stdout, stderr: stderr || `${e.message}\n` };
    }
    throw e;
  }
  const o = program.opts();
  // qemu-pr-helper takes -q and -v together; here -q lowers the level by one
  // (info -> warnings and errors) and each -v raises it by one.
  const verbosity = Math.max(0, Math.min(3, 1 + Number(o.verbose) - (o.quiet ? 1 : 0)));
  return {
    kind: "daemon",
    options: {
      socket: o.socket ?? null,
      pidfile: o.pidfile ?? (o.daemon ? DEFAULT_PIDFILE : null),
      daemon: o.daemon ?? false,
      user: o.user ?? null,
      group: o.group ?? null,
      verbosity,
      trace: o.trace,
      ignoredArgs: program.args,
      sgioTimeoutMs: o.sgioTimeout,
      stallTimeoutMs: o.stallTimeout,
      idleTimeoutMs: o.idleTimeout,
      maxConnections: o.maxConnections,
      maxConnectionsPerUid: o.maxConnectionsPerUid ?? Math.ceil(o.maxConnections / 2),
      maxConnectionsPerContext: o.maxConnectionsPerContext,
      maxSgioWorkers: o.maxSgioWorkers,
      selinux: o.selinux,
      apparmor: o.apparmor,
      apparmorUnconfined: o.apparmorUnconfined,
      allowUsers: o.allowUser ?? null,
      allowGroups: o.allowGroup ?? null,
      refuseRoot: o.refuseRoot ?? false,
    },
  };
}
