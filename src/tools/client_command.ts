/**
 * `prhelperd client`: sg_persist through a running helper. Same option
 * names, short forms, defaults and exit statuses as sg_persist 0.67
 * (sg3_utils 1.46); the command travels over the qemu-pr-helper protocol
 * with the device's fd, exactly as QEMU sends it, and the reply is decoded
 * as sg_persist decodes it (src/tools/prin_decode.ts), or printed as JSON.
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
import { PrInAction, prInCdb, PrOutAction, prOutCdb } from "../cdb.ts";
import { HelperConnectionError, PrHelperClient, type PrReply } from "../client.ts";
import { formatSense, parseSense } from "../sense.ts";
import { MAX_DATA_LEN, ProtocolError, ScsiStatus } from "../wire.ts";
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

interface OptSpec {
  short?: string;
  long: string[];
  arg: boolean;
  key: string;
}

const SPECS: OptSpec[] = [
  { short: "A", long: ["preempt-abort"], arg: false, key: "A" },
  { short: "c", long: ["report-capabilities"], arg: false, key: "c" },
  { short: "C", long: ["clear"], arg: false, key: "C" },
  { short: "d", long: ["device"], arg: true, key: "d" },
  { short: "G", long: ["register"], arg: false, key: "G" },
  { short: "h", long: ["help"], arg: false, key: "h" },
  { short: "H", long: ["hex"], arg: false, key: "H" },
  { short: "i", long: ["in"], arg: false, key: "i" },
  { short: "I", long: ["register-ignore"], arg: false, key: "I" },
  { short: "k", long: ["read-keys"], arg: false, key: "k" },
  { short: "K", long: ["param-rk"], arg: true, key: "K" },
  { short: "l", long: ["alloc-length"], arg: true, key: "l" },
  { short: "L", long: ["release"], arg: false, key: "L" },
  { short: "m", long: ["maxlen"], arg: true, key: "m" },
  { short: "M", long: ["register-move"], arg: false, key: "M" },
  { short: "n", long: ["no-inquiry"], arg: false, key: "n" },
  { short: "o", long: ["out"], arg: false, key: "o" },
  { short: "P", long: ["preempt"], arg: false, key: "P" },
  { short: "Q", long: ["relative-target-port"], arg: true, key: "Q" },
  { short: "r", long: ["read-reservation"], arg: false, key: "r" },
  { short: "R", long: ["reserve"], arg: false, key: "R" },
  { short: "s", long: ["read-full-status", "read-status"], arg: false, key: "s" },
  { short: "S", long: ["param-sark"], arg: true, key: "S" },
  { short: "T", long: ["prout-type"], arg: true, key: "T" },
  { short: "U", long: ["unreg", "param-unreg"], arg: false, key: "U" },
  { short: "v", long: ["verbose"], arg: false, key: "v" },
  { short: "V", long: ["version"], arg: false, key: "V" },
  { short: "X", long: ["transport-id"], arg: true, key: "X" },
  { short: "y", long: ["readonly"], arg: false, key: "y" },
  { short: "Y", long: ["param-alltgpt"], arg: false, key: "Y" },
  { short: "z", long: ["replace-lost"], arg: false, key: "z" },
  { short: "Z", long: ["param-aptpl"], arg: false, key: "Z" },
  // prhelperd's own
  { long: ["socket"], arg: true, key: "socket" },
  { long: ["json"], arg: false, key: "json" },
  { long: ["timeout"], arg: true, key: "timeout" },
];

/** One option as found on the command line. */
export interface ParsedOpt {
  key: string;
  value?: string;
  /** As written, for messages. */
  name: string;
}

/** getopt_long-like scan (GNU: options and operands may mix; `--` ends options). */
export function scanOptions(
  args: readonly string[],
): { opts: ParsedOpt[]; operands: string[] } | { error: string } {
  const opts: ParsedOpt[] = [];
  const operands: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === "--") {
      operands.push(...args.slice(i + 1));
      break;
    }
    if (a.startsWith("--")) {
      const eq = a.indexOf("=");
      const name = (eq < 0 ? a.slice(2) : a.slice(2, eq)).replaceAll("_", "-");
      const exact = SPECS.filter((s) => s.long.includes(name));
      const prefix = exact.length > 0
        ? exact
        : SPECS.filter((s) => s.long.some((l) => l.startsWith(name)));
      if (name === "" || prefix.length === 0) return { error: `unrecognized option '${a}'` };
      if (new Set(prefix.map((s) => s.key)).size > 1) {
        return { error: `option '${a}' is ambiguous` };
      }
      const spec = prefix[0];
      if (!spec.arg) {
        if (eq >= 0) return { error: `option '${a.slice(0, eq)}' doesn't allow an argument` };
        opts.push({ key: spec.key, name: a });
        continue;
      }
      let value: string;
      if (eq >= 0) value = a.slice(eq + 1);
      else if (i + 1 < args.length) value = args[++i];
      else return { error: `option '${a}' requires an argument` };
      opts.push({ key: spec.key, value, name: a });
      continue;
    }
    if (a.startsWith("-") && a.length > 1) {
      for (let j = 1; j < a.length; j++) {
        const spec = SPECS.find((s) => s.short === a[j]);
        if (spec === undefined) return { error: `invalid option -- '${a[j]}'` };
        if (!spec.arg) {
          opts.push({ key: spec.key, name: `-${a[j]}` });
          continue;
        }
        let value: string;
        if (j + 1 < a.length) value = a.slice(j + 1);
        else if (i + 1 < args.length) value = args[++i];
        else return { error: `option requires an argument -- '${a[j]}'` };
        opts.push({ key: spec.key, value, name: `-${a[j]}` });
        break;
      }
      continue;
    }
    operands.push(a);
  }
  return { opts, operands };
}

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
  const scanned = scanOptions(args);
  if ("error" in scanned) {
    return fail(SgExit.SYNTAX_ERROR, `prhelperd client: ${scanned.error}`, true);
  }
  const o: ClientOptions = {
    socket: options.defaultSocket,
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
  let help = 0, version = false, wantIn = false, wantOut = false;
  let numPrinSa = 0, numProutSa = 0;
  let device: string | null = null;
  let stderr = "";
  const prinSa = (sa: number) => {
    o.prinSa = sa;
    numPrinSa++;
  };
  const proutSa = (sa: number) => {
    o.prOutSa = sa;
    numProutSa++;
  };
  for (const opt of scanned.opts) {
    const v = opt.value ?? "";
    switch (opt.key) {
      case "A":
        proutSa(PrOutAction.PREEMPT_AND_ABORT);
        break;
      case "c":
        prinSa(PrInAction.REPORT_CAPABILITIES);
        break;
      case "C":
        proutSa(PrOutAction.CLEAR);
        break;
      case "d":
        device = v;
        break;
      case "G":
        proutSa(PrOutAction.REGISTER);
        break;
      case "h":
        help++;
        break;
      case "H":
        o.hex++;
        break;
      case "i":
        wantIn = true;
        break;
      case "I":
        proutSa(PrOutAction.REGISTER_AND_IGNORE_EXISTING_KEY);
        break;
      case "k":
        prinSa(PrInAction.READ_KEYS);
        break;
      case "K": {
        const n = scanHex(v, 64);
        if (n === null) return fail(SgExit.SYNTAX_ERROR, "bad argument to '--param-rk'");
        o.paramRk = n;
        break;
      }
      case "S": {
        const n = scanHex(v, 64);
        if (n === null) return fail(SgExit.SYNTAX_ERROR, "bad argument to '--param-sark'");
        o.paramSark = n;
        break;
      }
      case "l":
      case "m": {
        const name = opt.key === "m" ? "maxlen" : "alloc-length";
        const n = opt.key === "m" ? scanNum(v) : scanHex(v, 32);
        if (n === null) return fail(SgExit.SYNTAX_ERROR, `bad argument to '--${name}'`);
        if (Number(n) > DEFAULT_ALLOC_LEN) {
          return fail(
            SgExit.SYNTAX_ERROR,
            `'--${name}' argument exceeds maximum value (${DEFAULT_ALLOC_LEN})`,
          );
        }
        o.allocationLength = Number(n);
        break;
      }
      case "L":
        proutSa(PrOutAction.RELEASE);
        break;
      case "M":
        proutSa(PrOutAction.REGISTER_AND_MOVE);
        break;
      case "n":
        break; // INQUIRY is never sent through the helper
      case "o":
        wantOut = true;
        break;
      case "P":
        proutSa(PrOutAction.PREEMPT);
        break;
      case "Q": {
        const n = scanHex(v, 32);
        if (n === null) {
          return fail(SgExit.SYNTAX_ERROR, "bad argument to '--relative-target-port'");
        }
        if (n > 0xffffn) {
          return fail(
            SgExit.SYNTAX_ERROR,
            "argument to '--relative-target-port' 0 to ffff inclusive",
          );
        }
        o.relativeTargetPort = Number(n);
        break;
      }
      case "r":
        prinSa(PrInAction.READ_RESERVATION);
        break;
      case "R":
        proutSa(PrOutAction.RESERVE);
        break;
      case "s":
        prinSa(PrInAction.READ_FULL_STATUS);
        break;
      case "T": {
        const n = scanHex(v, 32);
        if (n === null) return fail(SgExit.SYNTAX_ERROR, "bad argument to '--prout-type'");
        o.prOutType = Number(n);
        break;
      }
      case "U":
        o.unreg = true;
        break;
      case "v":
        o.verbose++;
        break;
      case "V":
        version = true;
        break;
      case "X":
        try {
          if (v.startsWith("-") || /^file=/i.test(v)) {
            const read = options.readText ?? ((p: string | null) => {
              if (p === null) throw new Error("reading TransportIDs from stdin is not supported");
              return Deno.readTextFileSync(p);
            });
            o.transportIds = transportIdsFromText(read(v.startsWith("-") ? null : v.slice(5)));
          } else {
            o.transportIds = [parseTransportId(v)];
          }
        } catch (e) {
          return fail(
            SgExit.SYNTAX_ERROR,
            `build_transportid: ${e instanceof Error ? e.message : String(e)}\n` +
              "bad argument to '--transport-id'",
          );
        }
        break;
      case "y":
        o.readonly = true;
        break;
      case "Y":
        o.allTgPt = true;
        break;
      case "z":
        proutSa(PrOutAction.REPLACE_LOST_RESERVATION);
        break;
      case "Z":
        o.aptpl = true;
        break;
      case "socket":
        if (v === "") return fail(SgExit.SYNTAX_ERROR, "bad argument to '--socket': empty path");
        o.socket = v;
        break;
      case "json":
        o.json = true;
        break;
      case "timeout": {
        const n = Number(v);
        if (v.trim() === "" || !Number.isFinite(n) || n <= 0 || n > 86400) {
          return fail(
            SgExit.SYNTAX_ERROR,
            `--timeout "${v}" must be a number of seconds, above 0, at most 86400`,
          );
        }
        o.timeoutMs = Math.round(n * 1000);
        break;
      }
    }
  }
  const operands = [...scanned.operands];
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
    payload[20] = (o.allTgPt ? 0x04 : 0) | (o.aptpl ? 0x01 : 0);
    if (tidLen > 0) {
      payload[20] |= 0x08; // SPEC_I_PT
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
