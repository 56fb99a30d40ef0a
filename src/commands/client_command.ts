/**
 * `prhelperd client`: sg_persist through a running helper. Same option
 * names, short forms, defaults and exit statuses as sg_persist 0.67
 * (sg3_utils 1.46); the command travels over the qemu-pr-helper protocol
 * with the device's fd, exactly as QEMU sends it, and the reply is decoded
 * as sg_persist decodes it (src/commands/prin_decode.ts), or printed as JSON.
 *
 * Differences from sg_persist: no INQUIRY is sent (the helper passes PR
 * commands only), so the output equals `sg_persist --no-inquiry`'s;
 * `--socket PATH` (default the daemon's default socket), `--json` and
 * `--timeout SECS` are added.
 *
 * @module
 */

import { closeFd, O_CLOEXEC, O_NONBLOCK, O_RDONLY, O_RDWR, openPath } from "../../ffi/files.ts";
import { SysError } from "../../ffi/errno.ts";
import { PrInAction, prInCdb, PrOutAction, prOutCdb, PrOutFlags } from "../cdb.ts";
import { HelperConnectionError, PrHelperClient, type PrReply } from "../client.ts";
import { formatSense, parseSense } from "../sense.ts";
import { MAX_DATA_LEN, ProtocolError, ScsiStatus } from "../wire.ts";
import {
  getopt,
  type GetoptError,
  type GetoptRules,
  type HandlerResult,
  type OptionSpec,
} from "./getopt.ts";
import {
  decodePrIn,
  exitStatusFor,
  exitStatusForErrno,
  exitStatusText,
  formatPrIn,
  latin1Bytes,
  PRIN_SA_NAMES,
  PROUT_SA_NAMES,
  scsiStatusName,
  SgExit,
} from "./prin_decode.ts";

/** sg_persist's default (and largest) allocation length; also the helper's limit. */
export const DEFAULT_ALLOC_LEN = MAX_DATA_LEN;
const MX_TIDS = 32;

/** Everything `prhelperd client` was asked to do. */
export interface ClientOptions {
  socket: string;
  device: string;
  /** true: PR IN; false: PR OUT. */
  prIn: boolean;
  prinSa: number;
  prOutSa: number;
  allocationLength: number;
  paramRk: bigint;
  paramSark: bigint;
  prOutType: number;
  allTgPt: boolean;
  aptpl: boolean;
  unreg: boolean;
  relativeTargetPort: number;
  /** TransportIDs (each already in SPC-4 form, compacted as sg_persist does). */
  transportIds: Uint8Array[];
  /** Number of `-H`. */
  hex: number;
  json: boolean;
  readonly: boolean;
  verbose: number;
  timeoutMs: number | undefined;
}

/** Parsing outcome: run, or print and exit. */
export type ClientParse =
  | { kind: "run"; options: ClientOptions; stderr: string }
  | { kind: "exit"; code: number; stdout: string; stderr: string };

/** What the options set while `prhelperd client`'s command line is read. */
interface ClientState {
  o: ClientOptions;
  help: number;
  version: boolean;
  wantIn: boolean;
  wantOut: boolean;
  numPrinSa: number;
  numProutSa: number;
  device: string | null;
  readText: (path: string | null) => string;
}

type ClientSpec = OptionSpec<ClientState>;

function flag(short: string, long: string[], set: (s: ClientState) => void): ClientSpec {
  return {
    short,
    long,
    value: false,
    handle: (s) => {
      set(s);
    },
  };
}

/** A PR IN service action option (sg_persist counts them: one at most). */
function prinAction(short: string, long: string[], sa: number): ClientSpec {
  return flag(short, long, (s) => {
    s.o.prinSa = sa;
    s.numPrinSa++;
  });
}

/** A PR OUT service action option (exactly one with --out). */
function proutAction(short: string, long: string[], sa: number): ClientSpec {
  return flag(short, long, (s) => {
    s.o.prOutSa = sa;
    s.numProutSa++;
  });
}

/** An option whose value sscanf reads as hex; `check` refuses a value, naming why. */
function hexOption(
  short: string,
  long: string,
  bits: 32 | 64,
  set: (s: ClientState, n: bigint) => string | void,
): ClientSpec {
  return {
    short,
    long: [long],
    value: true,
    handle: (s, v) => {
      const n = scanHex(v, bits);
      if (n === null) return { error: `bad argument to '--${long}'` };
      const problem = set(s, n);
      return problem === undefined ? undefined : { error: problem };
    },
  };
}

/** --alloc-length (hex) and --maxlen (sg_get_num): at most the helper's limit. */
function lengthOption(short: string, long: string, read: (v: string) => number | bigint | null) {
  return {
    short,
    long: [long],
    value: true,
    handle: (s: ClientState, v: string) => {
      const n = read(v);
      if (n === null) return { error: `bad argument to '--${long}'` };
      if (Number(n) > DEFAULT_ALLOC_LEN) {
        return { error: `'--${long}' argument exceeds maximum value (${DEFAULT_ALLOC_LEN})` };
      }
      s.o.allocationLength = Number(n);
    },
  };
}

function transportIdOption(s: ClientState, v: string): HandlerResult {
  try {
    s.o.transportIds = v.startsWith("-") || /^file=/i.test(v)
      ? transportIdsFromText(s.readText(v.startsWith("-") ? null : v.slice(5)))
      : [parseTransportId(v)];
  } catch (e) {
    return {
      error: `build_transportid: ${e instanceof Error ? e.message : String(e)}\n` +
        "bad argument to '--transport-id'",
    };
  }
}

/** sg_persist's options (its short letters and long names) and prhelperd's own. */
const CLIENT_OPTIONS: readonly ClientSpec[] = [
  proutAction("A", ["preempt-abort"], PrOutAction.PREEMPT_AND_ABORT),
  prinAction("c", ["report-capabilities"], PrInAction.REPORT_CAPABILITIES),
  proutAction("C", ["clear"], PrOutAction.CLEAR),
  { short: "d", long: ["device"], value: true, handle: (s, v) => void (s.device = v) },
  proutAction("G", ["register"], PrOutAction.REGISTER),
  flag("h", ["help"], (s) => s.help++),
  flag("H", ["hex"], (s) => s.o.hex++),
  flag("i", ["in"], (s) => s.wantIn = true),
  proutAction("I", ["register-ignore"], PrOutAction.REGISTER_AND_IGNORE_EXISTING_KEY),
  prinAction("k", ["read-keys"], PrInAction.READ_KEYS),
  hexOption("K", "param-rk", 64, (s, n) => void (s.o.paramRk = n)),
  lengthOption("l", "alloc-length", (v) => scanHex(v, 32)),
  proutAction("L", ["release"], PrOutAction.RELEASE),
  lengthOption("m", "maxlen", scanNum),
  proutAction("M", ["register-move"], PrOutAction.REGISTER_AND_MOVE),
  flag("n", ["no-inquiry"], () => {}), // INQUIRY is never sent through the helper
  flag("o", ["out"], (s) => s.wantOut = true),
  proutAction("P", ["preempt"], PrOutAction.PREEMPT),
  hexOption("Q", "relative-target-port", 32, (s, n) => {
    if (n > 0xffffn) return "argument to '--relative-target-port' 0 to ffff inclusive";
    s.o.relativeTargetPort = Number(n);
  }),
  prinAction("r", ["read-reservation"], PrInAction.READ_RESERVATION),
  proutAction("R", ["reserve"], PrOutAction.RESERVE),
  prinAction("s", ["read-full-status", "read-status"], PrInAction.READ_FULL_STATUS),
  hexOption("S", "param-sark", 64, (s, n) => void (s.o.paramSark = n)),
  hexOption("T", "prout-type", 32, (s, n) => void (s.o.prOutType = Number(n))),
  flag("U", ["unreg", "param-unreg"], (s) => s.o.unreg = true),
  flag("v", ["verbose"], (s) => s.o.verbose++),
  flag("V", ["version"], (s) => s.version = true),
  { short: "X", long: ["transport-id"], value: true, handle: transportIdOption },
  flag("y", ["readonly"], (s) => s.o.readonly = true),
  flag("Y", ["param-alltgpt"], (s) => s.o.allTgPt = true),
  proutAction("z", ["replace-lost"], PrOutAction.REPLACE_LOST_RESERVATION),
  flag("Z", ["param-aptpl"], (s) => s.o.aptpl = true),
  // prhelperd's own
  {
    long: ["socket"],
    value: true,
    handle: (s, v) => {
      if (v === "") return { error: "bad argument to '--socket': empty path" };
      s.o.socket = v;
    },
  },
  { long: ["json"], value: false, handle: (s) => void (s.o.json = true) },
  {
    long: ["timeout"],
    value: true,
    handle: (s, v) => {
      const n = Number(v);
      if (v.trim() === "" || !Number.isFinite(n) || n <= 0 || n > 86400) {
        return { error: `--timeout "${v}" must be a number of seconds, above 0, at most 86400` };
      }
      s.o.timeoutMs = Math.round(n * 1000);
    },
  },
];

/** getopt_long's own wording of a malformed command line. */
function getoptMessage(e: GetoptError): string {
  switch (e.kind) {
    case "unknown":
      return `unrecognized option '${e.arg}'`;
    case "ambiguous":
      return `option '${e.arg}' is ambiguous`;
    case "no-value-allowed":
      return `option '${e.name}' doesn't allow an argument`;
    case "needs-value":
      return `option '${e.arg}' requires an argument`;
    case "unknown-short":
      return `invalid option -- '${e.letter}'`;
    case "short-needs-value":
      return `option requires an argument -- '${e.letter}'`;
  }
}

/** getopt_long's forms, as sg_persist accepts them. */
const CLIENT_RULES: GetoptRules = {
  bundling: true,
  abbreviations: true,
  underscores: true,
  syntaxFirst: true,
};

/** sscanf("%x") / SCNx64: leading blanks, optional sign and 0x, hex digits, rest ignored. */
export function scanHex(text: string, bits: 32 | 64): bigint | null {
  const m = text.match(/^\s*([+-])?(?:0[xX](?=[0-9a-fA-F]))?([0-9a-fA-F]+)/);
  if (m === null) return null;
  let v = BigInt.asUintN(bits, BigInt(`0x${m[2]}`));
  if (m[1] === "-") v = BigInt.asUintN(bits, -v);
  return v;
}

/** sg_lib's sg_get_num() for the usual forms: decimal, 0x/h hex, k/m/g multipliers. */
export function scanNum(text: string): number | null {
  const t = text.trim();
  let m = t.match(/^0[xX]([0-9a-fA-F]+)$/) ?? t.match(/^([0-9a-fA-F]+)[hH]$/);
  if (m !== null) return Number.parseInt(m[1], 16);
  m = t.match(/^(\d+)\s*([a-zA-Z]*)$/);
  if (m === null) return null;
  const mult: Record<string, number> = {
    "": 1,
    c: 1,
    C: 1,
    w: 2,
    W: 2,
    b: 512,
    B: 512,
    k: 1024,
    K: 1024,
    KiB: 1024,
    kB: 1000,
    KB: 1000,
    m: 1 << 20,
    M: 1 << 20,
    MiB: 1 << 20,
    MB: 1000000,
    g: 1 << 30,
    G: 1 << 30,
    GiB: 1 << 30,
    GB: 1000000000,
  };
  const f = mult[m[2]];
  if (f === undefined) return null;
  const v = Number(m[1]) * f;
  return v > 0x7fffffff ? null : v;
}

const TPROTO_ISCSI = 5;

/**
 * A TransportID from sg_persist's `--transport-id` forms: `sas,ADDR16`,
 * `fcp,NAME16`, `sbp,NAME16`, `srp,NAME32`, `spi,ADDR,RTP`, `sop,ID`,
 * `iqn.…`, or comma/space separated hex bytes. Throws with a message.
 */
export function parseTransportId(text: string): Uint8Array {
  const tid = new Uint8Array(256);
  const lower = text.slice(0, 4).toLowerCase();
  const hexName = (s: string, n: number, at: number, what: string) => {
    if (!new RegExp(`^[0-9a-fA-F]{${n}}`).test(s) || /^[0-9a-fA-F]/.test(s.slice(n))) {
      throw new Error(`badly formed symbolic ${what} TransportID: ${s}`);
    }
    for (let k = 0; k < n / 2; k++) tid[at + k] = Number.parseInt(s.slice(2 * k, 2 * k + 2), 16);
  };
  const rest = text.slice(4);
  if (lower === "sas,") {
    tid[0] = 0x06;
    hexName(rest, 16, 4, "SAS");
  } else if (lower === "fcp,") {
    tid[0] = 0x00;
    hexName(rest, 16, 8, "FCP");
  } else if (lower === "sbp,") {
    tid[0] = 0x03;
    hexName(rest, 16, 8, "SBP");
  } else if (lower === "srp,") {
    tid[0] = 0x04;
    hexName(rest, 32, 8, "SRP");
  } else if (lower === "spi,") {
    const m = rest.match(/^\s*([+-]?\d+),\s*([+-]?\d+)/);
    if (m === null) throw new Error(`badly formed symbolic SPI TransportID: ${rest}`);
    tid[0] = 0x01;
    new DataView(tid.buffer).setUint16(2, Number(m[1]) & 0xffff);
    new DataView(tid.buffer).setUint16(6, Number(m[2]) & 0xffff);
  } else if (lower === "sop,") {
    const v = scanHex(rest, 32);
    if (v === null) throw new Error(`badly formed symbolic SOP TransportID: ${rest}`);
    tid[0] = 0x0a;
    new DataView(tid.buffer).setUint16(2, Number(v & 0xffffn));
  } else if (text.startsWith("iqn.")) {
    const end = text.search(/[ \t]/);
    const name = new TextEncoder().encode(end < 0 ? text : text.slice(0, end));
    let alen = Math.max(20, name.length + 1);
    if (alen % 4 !== 0) alen = (Math.floor(alen / 4) + 1) * 4;
    if (alen > 241) throw new Error(`iSCSI name too long, alen=${alen}`);
    tid[0] = TPROTO_ISCSI | (text.includes(",i,0x") ? 0x40 : 0);
    tid[3] = alen;
    tid.set(name, 4);
  } else {
    const bad = text.search(/[^0-9a-fA-F, ]/);
    if (bad >= 0) throw new Error(`error at pos ${bad + 1}`);
    const parts = text.split(/[, ]/);
    if (parts.length > 256) throw new Error("array length exceeded");
    parts.forEach((p, k) => {
      const v = scanHex(p, 32);
      if (v === null) throw new Error(`error at pos ${k + 1}`);
      if (v > 0xffn) throw new Error(`hex number larger than 0xff: ${p}`);
      tid[k] = Number(v);
    });
  }
  // compact as sg_persist does: 24 bytes, or the iSCSI length (at least 24)
  const len = (tid[0] & 0x0f) === TPROTO_ISCSI ? Math.max(24, ((tid[2] << 8) | tid[3]) + 4) : 24;
  return tid.slice(0, len);
}

function transportIdsFromText(text: string): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (const raw of text.split("\n")) {
    const line = raw.replace(/#.*$/, "").trim();
    if (line === "") continue;
    if (out.length >= MX_TIDS) throw new Error(`more than ${MX_TIDS} TransportIDs`);
    out.push(parseTransportId(line.replace(/[\t]/g, " ")));
  }
  return out;
}

/** Options of {@linkcode parseClientArgs}. */
export interface ParseClientOptions {
  /** Default socket path. */
  defaultSocket: string;
  /** Read a TransportID file (`--transport-id=file=NAME` or `-` for stdin). */
  readText?: (path: string | null) => string;
  version?: string;
}

const USAGE = `Usage: prhelperd client [--socket PATH] [OPTIONS] DEVICE
  sg_persist through a running prhelperd (or qemu-pr-helper): the PR command
  and DEVICE's fd go over the helper's socket, as QEMU sends them.
  where the main OPTIONS are:
    --clear|-C                 PR Out: Clear
    --help|-h                  print usage message, twice for more
    --in|-i                    request PR In command (default)
    --out|-o                   request PR Out command
    --param-rk=RK|-K RK        PR Out parameter reservation key
                               (RK is in hex)
    --param-sark=SARK|-S SARK    PR Out parameter service action
                                 reservation key (SARK is in hex)
    --preempt|-P               PR Out: Preempt
    --preempt-abort|-A         PR Out: Preempt and Abort
    --prout-type=TYPE|-T TYPE    PR Out type field (see '-hh')
    --read-full-status|-s      PR In: Read Full Status
    --read-keys|-k             PR In: Read Keys (default)
    --read-reservation|-r      PR In: Read Reservation
    --read-status|-s           PR In: Read Full Status
    --register|-G              PR Out: Register
    --register-ignore|-I       PR Out: Register and Ignore
    --register-move|-M         PR Out: Register and Move
    --release|-L               PR Out: Release
    --replace-lost|-z          PR Out: Replace Lost Reservation
    --report-capabilities|-c   PR In: Report Capabilities
    --reserve|-R               PR Out: Reserve
    --unreg|-U                 optional with PR Out Register and Move
  prhelperd's own:
    --socket=PATH              the helper's socket (default %SOCKET%)
    --json                     print the reply as JSON
    --timeout=SECS             give up waiting for the helper after SECS
Exit status as sg_persist's: 0 good, 24 reservation conflict, 6 unit
attention, 5 illegal request, 9 invalid opcode, 11 aborted command, 1 syntax
error, 31 contradicting options, 50+errno OS error, 99 other.
`;

const USAGE2 = `Usage: prhelperd client [--socket PATH] [OPTIONS] DEVICE
  where the other OPTIONS are:
    --alloc-length=LEN|-l LEN    allocation length hex value (used with
                                 PR In only) (default: 8192 (2000 in hex))
    --device=DEVICE|-d DEVICE    supply DEVICE as an option rather than
                                 an argument
    --hex|-H                   output response in hex (for PR In commands)
    --maxlen=LEN|-m LEN        allocation length in decimal, by default.
                               like --alloc-len= (def: 8192, 8k, 2000h)
    --no-inquiry|-n            accepted; no INQUIRY is ever sent
    --param-alltgpt|-Y         PR Out parameter 'ALL_TG_PT'
    --param-aptpl|-Z           PR Out parameter 'APTPL'
    --readonly|-y              open DEVICE read-only (def: read-write)
    --relative-target-port=RTPI|-Q RTPI    relative target port identifier
    --transport-id=TIDS|-X TIDS    one or more TransportIDs can
                                   be given in several forms
    --verbose|-v               output additional debug information
    --version|-V               output version string

PR Out TYPE field value meanings:
  0:    obsolete (was 'read shared' in SPC)
  1:    write exclusive
  2:    obsolete (was 'read exclusive')
  3:    exclusive access
  4:    obsolete (was 'shared access')
  5:    write exclusive, registrants only
  6:    exclusive access, registrants only
  7:    write exclusive, all registrants
  8:    exclusive access, all registrants
`;

/** sg_persist's defaults: PR IN READ KEYS (once chosen), 8192 bytes, read-write. */
function defaultClientOptions(socket: string): ClientOptions {
  return {
    socket,
    device: "",
    prIn: true,
    prinSa: -1,
    prOutSa: -1,
    allocationLength: DEFAULT_ALLOC_LEN,
    paramRk: 0n,
    paramSark: 0n,
    prOutType: 0,
    allTgPt: false,
    aptpl: false,
    unreg: false,
    relativeTargetPort: 0,
    transportIds: [],
    hex: 0,
    json: false,
    readonly: false,
    verbose: 0,
    timeoutMs: undefined,
  };
}

/**
 * Parse `prhelperd client` arguments (after the word `client`), with
 * sg_persist's rules and messages; pure except for `readText`.
 */
export function parseClientArgs(args: readonly string[], options: ParseClientOptions): ClientParse {
  const usage = USAGE.replace("%SOCKET%", options.defaultSocket);
  const fail = (code: number, msg: string, withUsage = false): ClientParse => ({
    kind: "exit",
    code,
    stdout: "",
    stderr: `${msg}\n${withUsage ? usage : ""}`,
  });
  const state: ClientState = {
    o: defaultClientOptions(options.defaultSocket),
    help: 0,
    version: false,
    wantIn: false,
    wantOut: false,
    numPrinSa: 0,
    numProutSa: 0,
    device: null,
    readText: options.readText ?? ((p: string | null) => {
      if (p === null) throw new Error("reading TransportIDs from stdin is not supported");
      return Deno.readTextFileSync(p);
    }),
  };
  const parsed = getopt(args, CLIENT_OPTIONS, { state, rules: CLIENT_RULES });
  if (parsed.kind === "syntax") {
    return fail(SgExit.SYNTAX_ERROR, `prhelperd client: ${getoptMessage(parsed.error)}`, true);
  }
  if (parsed.kind === "error") return fail(SgExit.SYNTAX_ERROR, parsed.message);
  const { o, help, version, wantIn, wantOut, numPrinSa, numProutSa } = state;
  let device = state.device;
  let stderr = "";
  const operands = [...parsed.operands];
  if (operands.length > 0 && device === null) device = operands.shift()!;
  if (operands.length > 0) {
    return fail(
      SgExit.SYNTAX_ERROR,
      operands.map((a) => `Unexpected extra argument: ${a}`).join("\n"),
      true,
    );
  }
  if (help > 0) {
    return { kind: "exit", code: 0, stdout: "", stderr: help > 1 ? USAGE2 : usage };
  }
  if (version) {
    return { kind: "exit", code: 0, stdout: "", stderr: `version: ${options.version ?? "?"}\n` };
  }
  if (device === null) return fail(SgExit.SYNTAX_ERROR, "No device name given", true);
  o.device = device;
  if (wantIn && wantOut) {
    return fail(SgExit.CONTRADICT, "choose '--in' _or_ '--out' (not both)", true);
  }
  if (wantOut) {
    o.prIn = false;
    if (numProutSa !== 1 || numPrinSa !== 0) {
      return fail(
        SgExit.CONTRADICT,
        ">> For Persistent Reserve Out one and only one appropriate\n" +
          ">> service action must be chosen (e.g. '--register')",
      );
    }
  } else {
    if (numProutSa > 0) {
      return fail(
        SgExit.CONTRADICT,
        ">> When a service action for Persistent Reserve Out is chosen the\n" +
          ">> '--out' option must be given (as a safeguard)",
      );
    }
    if (numPrinSa === 0) {
      stderr += ">> No service action given; assume Persistent Reserve In command\n" +
        ">> with Read Keys service action\n";
      o.prinSa = PrInAction.READ_KEYS;
    } else if (numPrinSa > 1) {
      return fail(SgExit.CONTRADICT, "Too many service actions given; choose one only", true);
    }
  }
  if ((o.unreg || o.relativeTargetPort !== 0) && o.prOutSa !== PrOutAction.REGISTER_AND_MOVE) {
    return fail(
      SgExit.CONTRADICT,
      "--unreg or --relative-target-port only useful with --register-move",
      true,
    );
  }
  if (o.prOutSa === PrOutAction.REGISTER_AND_MOVE && o.transportIds.length !== 1) {
    return fail(
      SgExit.CONTRADICT,
      "with --register-move one (and only one) --transport-id should be given",
      true,
    );
  }
  const needsType: number[] = [
    PrOutAction.RESERVE,
    PrOutAction.RELEASE,
    PrOutAction.PREEMPT,
    PrOutAction.PREEMPT_AND_ABORT,
  ];
  if (!o.prIn && needsType.includes(o.prOutSa) && o.prOutType === 0) {
    stderr += "warning>>> --prout-type probably needs to be given\n";
  }
  return { kind: "run", options: o, stderr };
}

/** The CDB and parameter list a parsed command sends (what sg_persist builds). */
export function buildCommand(o: ClientOptions): { cdb: Uint8Array; payload: Uint8Array } {
  if (o.prIn) {
    return { cdb: prInCdb(o.prinSa, o.allocationLength), payload: new Uint8Array(0) };
  }
  const tidLen = o.transportIds.reduce((n, t) => n + t.length, 0);
  let payload: Uint8Array;
  if (o.prOutSa === PrOutAction.REGISTER_AND_MOVE) {
    payload = new Uint8Array(24 + tidLen);
    const v = new DataView(payload.buffer);
    v.setBigUint64(0, o.paramRk);
    v.setBigUint64(8, o.paramSark);
    payload[17] = (o.unreg ? 0x02 : 0) | (o.aptpl ? 0x01 : 0);
    v.setUint16(18, o.relativeTargetPort);
    if (tidLen > 0) v.setUint32(20, tidLen);
    let off = 24;
    for (const t of o.transportIds) {
      payload.set(t, off);
      off += t.length;
    }
  } else {
    payload = new Uint8Array(24 + (tidLen > 0 ? 4 + tidLen : 0));
    const v = new DataView(payload.buffer);
    v.setBigUint64(0, o.paramRk);
    v.setBigUint64(8, o.paramSark);
    payload[20] = (o.allTgPt ? PrOutFlags.ALL_TG_PT : 0) | (o.aptpl ? PrOutFlags.APTPL : 0);
    if (tidLen > 0) {
      payload[20] |= PrOutFlags.SPEC_I_PT;
      v.setUint32(24, tidLen);
      let off = 28;
      for (const t of o.transportIds) {
        payload.set(t, off);
        off += t.length;
      }
    }
  }
  const cdb = prOutCdb(o.prOutSa, payload.length, { type: o.prOutType & 0x0f });
  return { cdb, payload };
}

/** What a run printed and its exit status. */
export interface ClientOutput {
  code: number;
  stdout: string;
  stderr: string;
}

function hexBytes(b: Uint8Array): string {
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join(" ");
}

/**
 * Turn a reply into sg_persist's output and exit status (pure; the I/O is
 * in {@linkcode runClient}).
 */
export function renderReply(o: ClientOptions, reply: PrReply): ClientOutput {
  const code = exitStatusFor(reply.status, reply.sense);
  const saName = o.prIn
    ? (PRIN_SA_NAMES[o.prinSa] ?? `service action=0x${o.prinSa.toString(16)}`)
    : o.prOutSa === PrOutAction.REGISTER_AND_MOVE
    ? "register and move"
    : (PROUT_SA_NAMES[o.prOutSa] ?? `service action=0x${o.prOutSa.toString(16)}`);
  const sense = parseSense(reply.sense);
  if (o.json) {
    const decoded = o.prIn && code === 0
      ? decodePrIn(o.prinSa, reply.data, { allocationLength: o.allocationLength })
      : null;
    const doc = {
      device: o.device,
      command: o.prIn ? "PR IN" : "PR OUT",
      serviceAction: saName,
      status: reply.status,
      statusName: scsiStatusName(reply.status),
      sense: sense === null || reply.status === 0
        ? null
        : { key: sense.key, asc: sense.asc, ascq: sense.ascq, text: formatSense(sense) },
      exitStatus: code,
      exitStatusText: exitStatusText(code),
      dataLength: reply.data.length,
      data: decoded,
    };
    return { code, stdout: `${JSON.stringify(doc, null, 2)}\n`, stderr: "" };
  }
  if (code !== 0) {
    const dir = o.prIn ? "in" : "out";
    let msg: string;
    if (code === SgExit.INVALID_OP) msg = `PR ${dir} (${saName}): command not supported`;
    else if (code === SgExit.ILLEGAL_REQ) {
      msg = `PR ${dir} (${saName}): bad field in cdb or parameter list ` +
        "(perhaps unsupported service action)";
    } else msg = `PR ${dir} (${saName}): ${exitStatusText(code)}`;
    const detail = sense !== null && (reply.status & 0x7e) === ScsiStatus.CHECK_CONDITION
      ? `  status: ${scsiStatusName(reply.status)}, sense ${formatSense(sense)}\n`
      : "";
    return {
      code,
      stdout: "",
      stderr: `${detail}${msg}\n` +
        (o.verbose ? "" : `sg_persist failed: ${exitStatusText(code)}\n`),
    };
  }
  if (!o.prIn) {
    return {
      code,
      stdout: "",
      stderr: o.verbose ? `PR out: command (${saName}) successful\n` : "",
    };
  }
  const text = formatPrIn(o.prinSa, reply.data, {
    allocationLength: o.allocationLength,
    hex: o.hex,
  });
  return { code: text.exitStatus, stdout: text.stdout, stderr: text.stderr };
}

/** The I/O a run needs (replaceable in tests). */
export interface ClientIo {
  openDevice(path: string, write: boolean): number;
  connect(path: string, timeoutMs: number | undefined): PrHelperClient;
}

const realIo: ClientIo = {
  openDevice: (path, write) => openPath(path, (write ? O_RDWR : O_RDONLY) | O_NONBLOCK | O_CLOEXEC),
  connect: (path, timeoutMs) => PrHelperClient.connect(path, { timeoutMs }),
};

/** Run one parsed `prhelperd client` command. Never throws for I/O failures. */
export function runClient(o: ClientOptions, io: ClientIo = realIo): ClientOutput {
  const { cdb, payload } = buildCommand(o);
  let stderr = "";
  if (o.verbose) {
    stderr += `    Persistent reservation ${o.prIn ? "in" : "out"} cdb: ${
      hexBytes(cdb.subarray(0, 10))
    }\n`;
    if (!o.prIn && o.verbose > 1) stderr += `    parameter list: ${hexBytes(payload)}\n`;
  }
  if (payload.length > MAX_DATA_LEN) {
    return {
      code: SgExit.SYNTAX_ERROR,
      stdout: "",
      stderr: `${stderr}parameter list of ${payload.length} bytes exceeds the helper's ` +
        `${MAX_DATA_LEN}\n`,
    };
  }
  let fd: number;
  try {
    fd = io.openDevice(o.device, !o.readonly);
  } catch (e) {
    const errno = e instanceof SysError ? e.errno : -1;
    return {
      code: exitStatusForErrno(errno),
      stdout: "",
      stderr: `${stderr}sg_persist: error opening file ${o.device} (r${o.readonly ? "o" : "w"}): ${
        e instanceof SysError ? e.code : String(e)
      }\n`,
    };
  }
  try {
    let client: PrHelperClient;
    try {
      client = io.connect(o.socket, o.timeoutMs);
    } catch (e) {
      const errno = e instanceof SysError ? e.errno : -1;
      return {
        code: e instanceof SysError ? exitStatusForErrno(errno) : SgExit.OTHER,
        stdout: "",
        stderr: `${stderr}prhelperd client: cannot talk to the helper at ${o.socket}: ${
          e instanceof Error ? e.message : String(e)
        }\n`,
      };
    }
    try {
      const reply = client.request(cdb, fd, payload);
      if (o.verbose) {
        stderr += `    helper reply: status 0x${reply.status.toString(16)} (${
          scsiStatusName(reply.status)
        }), ${reply.data.length} bytes of data\n`;
      }
      const out = renderReply(o, reply);
      return { ...out, stderr: stderr + out.stderr };
    } catch (e) {
      const known = e instanceof HelperConnectionError || e instanceof ProtocolError ||
        e instanceof SysError || e instanceof RangeError;
      if (!known) throw e;
      return {
        code: SgExit.OTHER,
        stdout: "",
        stderr: `${stderr}prhelperd client: the helper at ${o.socket} failed the request: ${
          (e as Error).message
        }\n`,
      };
    } finally {
      client.close();
    }
  } finally {
    closeFd(fd);
  }
}

/** Write all of `text` to a sync writer (stdout/stderr may take it in pieces). */
export function writeText(w: { writeSync(p: Uint8Array): number }, text: string): void {
  writeBytes(w, new TextEncoder().encode(text));
}

function writeBytes(w: { writeSync(p: Uint8Array): number }, bytes: Uint8Array): void {
  let buf = bytes;
  while (buf.length > 0) buf = buf.subarray(w.writeSync(buf));
}

/** `prhelperd client ARGS`: parse, run, print; resolves to the exit status. */
export function clientMain(
  args: readonly string[],
  options: { defaultSocket: string; version: string },
): Promise<number> {
  const write = (fd: "out" | "err", s: string) =>
    writeText(fd === "out" ? Deno.stdout : Deno.stderr, s);
  const parsed = parseClientArgs(args, options);
  if (parsed.kind === "exit") {
    write("out", parsed.stdout);
    write("err", parsed.stderr);
    return Promise.resolve(parsed.code);
  }
  write("err", parsed.stderr);
  const out = runClient(parsed.options);
  if (parsed.options.json) write("out", out.stdout);
  else writeBytes(Deno.stdout, latin1Bytes(out.stdout)); // device bytes unchanged, as sg_persist
  write("err", out.stderr);
  return Promise.resolve(out.code);
}
