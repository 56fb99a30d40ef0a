/**
 * What happens to one complete request, in order: parse the CDB, check the
 * device behind the fd, ask the access policy, refuse PR OUT on a read-only
 * fd, run SG_IO on a Worker, map the outcome. Every path ends in a reply;
 * the caller closes the fd.
 *
 * @module
 */

import { parsePrCdb, type PrCommand } from "./cdb.ts";
import {
  decideDevice,
  type DeviceDecision,
  type DeviceFacts,
  probeDevice,
} from "./device_check.ts";
import type { SgIoExecutor } from "./executor.ts";
import { logger, LogThrottle } from "./log.ts";
import { checkCondition, formatSense, mapSgIoOutcome, Sense, type SenseCode } from "./sense.ts";
import { type Reply, type Request, SENSE_LEN } from "./wire.ts";

/** Who is on the other end of a connection. */
export interface Peer {
  pid: number;
  uid: number;
  gid: number;
  /** Security context from SO_PEERSEC, or null if none / not read. */
  context: string | null;
  /** Connection number, for logs. */
  connection: number;
}

/** The verdict of an access policy on one request. */
export type AccessVerdict = { allow: true } | { allow: false; reason: string };

/** A per-request access check (SELinux); absent means allow. */
export interface AccessCheck {
  check(input: {
    peer: Peer;
    fd: number;
    facts: DeviceFacts;
    fileClass: "blk_file" | "chr_file";
  }): AccessVerdict;
}

/** What a PR OUT that reached a device did, for the audit trail. */
export interface AuditEvent {
  peer: Peer;
  facts: DeviceFacts;
  command: PrCommand;
  payload: Uint8Array;
  status: number;
  sense: Uint8Array;
}

/** Dependencies and settings of {@linkcode handleRequest}. */
export interface HandlerContext {
  executor: SgIoExecutor;
  /** SG_IO timeout in milliseconds. */
  sgioTimeoutMs: number;
  access?: AccessCheck;
  audit?: (event: AuditEvent) => void;
  /**
   * Runs a request on a multipath device (absent: refused). Calls `done` once,
   * from the event loop (e.g. an executor completion), never re-entrantly.
   */
  multipath?: (
    input: { fd: number; command: PrCommand; payload: Uint8Array; facts: DeviceFacts },
    done: (reply: Reply) => void,
  ) => void;
}

const log = logger("request");
// a client repeating the same refused request in a loop gets 10 lines, then 1
// per second carrying the count of the identical lines left out
const refusalLog = new LogThrottle({ burst: 10, intervalMs: 1000 });

function refusal(peer: Peer, facts: DeviceFacts | null, why: string, sense: SenseCode): Reply {
  const { log: shouldLog, suppressed } = refusalLog.take(`${peer.connection} ${why}`);
  if (!shouldLog) return checkCondition(sense);
  log.info("refused request: {why}", {
    why,
    ...(suppressed > 0 ? { suppressed } : {}),
    sense: formatSense(sense),
    pid: peer.pid,
    uid: peer.uid,
    dev: facts ? `${facts.major}:${facts.minor}` : "-",
    conn: peer.connection,
  });
  return checkCondition(sense);
}

/**
 * Answer one request: `done` is called exactly once with the reply, either
 * before this returns (every refusal) or later from the executor's drain.
 * Never throws: every failure becomes a CHECK CONDITION reply.
 */
export function handleRequest(
  ctx: HandlerContext,
  input: { peer: Peer; request: Request },
  done: (reply: Reply) => void,
): void {
  const { peer, request } = input;
  const command = parsePrCdb(request.cdb);
  let facts: DeviceFacts;
  try {
    facts = probeDevice(request.fd);
  } catch (e) {
    return done(
      refusal(peer, null, `cannot inspect the passed fd: ${(e as Error).message}`, Sense.IO_ERROR),
    );
  }
  const decision: DeviceDecision = decideDevice(facts);
  if (!decision.ok) return done(refusal(peer, facts, decision.reason, decision.sense));

  if (ctx.access) {
    let verdict: AccessVerdict;
    try {
      verdict = ctx.access.check({ peer, fd: request.fd, facts, fileClass: decision.fileClass });
    } catch (e) {
      verdict = { allow: false, reason: `access check failed: ${(e as Error).message}` };
    }
    if (!verdict.allow) return done(refusal(peer, facts, verdict.reason, Sense.ACCESS_DENIED));
  }

  if (command.direction === "out" && facts.readOnly) {
    return done(refusal(peer, facts, "PR OUT on an fd opened read-only", Sense.INVALID_OPCODE));
  }

  const finish = (reply: Reply) => {
    if (command.direction === "out" && ctx.audit) {
      try {
        ctx.audit({
          peer,
          facts,
          command,
          payload: request.payload,
          status: reply.status,
          sense: reply.sense ?? new Uint8Array(SENSE_LEN),
        });
      } catch (e) {
        log.error("audit record failed: {error}", { error: String(e) });
      }
    }
    done(reply);
  };

  if (decision.deviceClass === "multipath") {
    if (!ctx.multipath) {
      return done(
        refusal(
          peer,
          facts,
          "multipath devices are not supported by this build",
          Sense.INVALID_OPCODE,
        ),
      );
    }
    try {
      ctx.multipath({ fd: request.fd, command, payload: request.payload, facts }, finish);
    } catch (e) {
      done(refusal(peer, facts, `multipath: ${(e as Error).message}`, Sense.LUN_COMM_FAILURE));
    }
    return;
  }

  const transferLength = command.direction === "in" ? command.length : request.payload.length;
  try {
    ctx.executor.submit({
      fd: request.fd,
      cdb: command.deviceCdb,
      direction: transferLength === 0 ? "none" : command.direction,
      transferLength: command.direction === "in" ? transferLength : 0,
      payload: command.direction === "out" ? request.payload : new Uint8Array(0),
      timeoutMs: ctx.sgioTimeoutMs,
    }, (run) => {
      if (run instanceof Error) {
        return done(
          refusal(peer, facts, `SG_IO could not run: ${run.message}`, Sense.LUN_COMM_FAILURE),
        );
      }
      const mapped = mapSgIoOutcome(run.outcome, transferLength);
      if (run.outcome.kind === "errno" || run.outcome.hostStatus !== 0) {
        log.debug("SG_IO failed", {
          outcome: run.outcome.kind === "errno"
            ? `errno ${run.outcome.errno}`
            : `host 0x${run.outcome.hostStatus.toString(16)}`,
          dev: `${facts.major}:${facts.minor}`,
          conn: peer.connection,
        });
      }
      finish({
        status: mapped.status,
        sense: mapped.sense,
        data: run.data.subarray(0, mapped.dataLength),
      });
    });
  } catch (e) {
    done(
      refusal(peer, facts, `SG_IO could not run: ${(e as Error).message}`, Sense.LUN_COMM_FAILURE),
    );
  }
}
