/**
 * `prhelperd check DEVICE [--socket PATH] [--as CONTEXT]`: why would a VM's
 * persistent reservations on DEVICE fail? Checks, each with a finding that
 * says how to fix a problem:
 *
 * 1. the device: a whole-disk SCSI block device, an sg node or a multipath
 *    device (the daemon's own rule, src/device_check.ts), not a partition;
 * 2. PR support: REPORT CAPABILITIES through the helper (with `--socket`)
 *    or by SG_IO directly: types, ATP_C, PTPL_C;
 * 3. SELinux: on/off, enforcing, the device's label, and with `--as` whether
 *    a client in that context may use the device (the daemon's own
 *    decision, src/security/access_policy.ts) and connect to the daemon;
 * 4. the running daemon (`--socket`): its user and whether CAP_SYS_RAWIO is
 *    effective (pid from SO_PEERCRED, /proc/PID/status);
 * 5. the socket: can the QEMU user (libvirt-qemu, qemu, group kvm) connect.
 *
 * This module is the command: its arguments (an option table on
 * src/commands/getopt.ts) and the run. The judgements are pure functions in
 * src/commands/check_findings.ts; the probes that gather their inputs are in
 * src/commands/check_probes.ts. Exit status 0 if nothing failed, else 1.
 *
 * @module
 */

import { writeText } from "./client_command.ts";
import { getopt, type GetoptError, type GetoptRules, type OptionSpec } from "./getopt.ts";
import { checkExitStatus, formatFindings } from "./check_findings.ts";
import { type CheckOptions, runCheck } from "./check_probes.ts";

const CHECK_USAGE = `Usage: prhelperd check DEVICE [--socket PATH] [--as CONTEXT] [--json]
  Explain why persistent reservations on DEVICE would fail for a VM:
  the device type, PR support (REPORT CAPABILITIES), SELinux labels and
  whether a client at CONTEXT may use the device, the running daemon's user
  and CAP_SYS_RAWIO, and whether the QEMU user can connect to the socket.
    --socket PATH     the daemon's socket: ask it, and check it
    --as CONTEXT      the VM's SELinux context (ps -Z of its qemu process)
    --json            print the findings as JSON
    --timeout SECS    give up on the device or daemon after SECS (default 10)
    --help, -h        this text
Exit status: 0 if nothing failed, 1 otherwise.
`;

/** What the options set while `prhelperd check`'s command line is read. */
interface CheckState {
  o: CheckOptions;
  help: boolean;
}

/** An option with a value that must not be empty. */
function valueOption(
  long: string,
  set: (o: CheckOptions, v: string) => string | void,
): OptionSpec<CheckState> {
  return {
    long: [long],
    value: true,
    handle: (s, v, name) => {
      if (v === "") return { error: `${name} needs a value` };
      const problem = set(s.o, v);
      return problem === undefined ? undefined : { error: problem };
    },
  };
}

/** `prhelperd check`'s options: exact long names, `-h`. */
const CHECK_OPTIONS: readonly OptionSpec<CheckState>[] = [
  {
    short: "h",
    long: ["help"],
    value: false,
    dropsValue: true,
    handle: (s) => {
      s.help = true;
      return { stop: true };
    },
  },
  valueOption("socket", (o, v) => void (o.socket = v)),
  valueOption("as", (o, v) => void (o.as = v)),
  valueOption("timeout", (o, v) => {
    const n = Number(v);
    if (!Number.isFinite(n) || n <= 0 || n > 86400) {
      return `--timeout "${v}" must be a number of seconds, above 0, at most 86400`;
    }
    o.timeoutMs = Math.round(n * 1000);
  }),
  { long: ["json"], value: false, handle: (s) => void (s.o.json = true) },
];

/** In order, the first problem reported; no bundling, no abbreviations. */
const CHECK_RULES: GetoptRules = {
  bundling: false,
  abbreviations: false,
  underscores: false,
  syntaxFirst: false,
};

function checkSyntaxMessage(e: GetoptError): string {
  switch (e.kind) {
    case "needs-value":
      return `${e.name} needs a value`;
    case "no-value-allowed":
      return `${e.name} takes no value`;
    default:
      return `unknown option "${e.arg}"`;
  }
}

/** Parse `prhelperd check` arguments (pure). */
export function parseCheckArgs(
  args: readonly string[],
): { kind: "run"; options: CheckOptions } | {
  kind: "exit";
  code: number;
  stdout: string;
  stderr: string;
} {
  const state: CheckState = {
    o: { device: "", socket: null, as: null, json: false, timeoutMs: 10_000 },
    help: false,
  };
  const fail = (msg: string) => ({
    kind: "exit" as const,
    code: 1,
    stdout: "",
    stderr: `prhelperd check: ${msg}\n${CHECK_USAGE}`,
  });
  const parsed = getopt(args, CHECK_OPTIONS, { state, rules: CHECK_RULES });
  if (parsed.kind === "syntax") return fail(checkSyntaxMessage(parsed.error));
  if (parsed.kind === "error") return fail(parsed.message);
  if (state.help) return { kind: "exit", code: 0, stdout: CHECK_USAGE, stderr: "" };
  const operands = parsed.operands;
  if (operands.length === 0) return fail("no DEVICE given");
  if (operands.length > 1) return fail(`one DEVICE only, got "${operands.join('", "')}"`);
  return { kind: "run", options: { ...state.o, device: operands[0] } };
}

/** `prhelperd check ARGS`: resolves to the exit status. */
export function checkMain(
  args: readonly string[],
  _options: { defaultSocket: string; version: string },
): Promise<number> {
  const parsed = parseCheckArgs(args);
  if (parsed.kind === "exit") {
    writeText(Deno.stdout, parsed.stdout);
    writeText(Deno.stderr, parsed.stderr);
    return Promise.resolve(parsed.code);
  }
  const findings = runCheck(parsed.options);
  const code = checkExitStatus(findings);
  writeText(
    Deno.stdout,
    parsed.options.json
      ? `${
        JSON.stringify({ device: parsed.options.device, findings, exitStatus: code }, null, 2)
      }\n`
      : formatFindings(parsed.options.device, findings),
  );
  return Promise.resolve(code);
}
