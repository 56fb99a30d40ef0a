/**
 * PERSISTENT RESERVE IN/OUT command blocks and parameter lists (SPC-4): parse
 * what a client sent, and build what a client sends. Pure: no I/O.
 *
 * PR IN / PR OUT CDB (10 bytes; the wire carries 16, zero-padded):
 *
 * | byte | PR IN (0x5E)              | PR OUT (0x5F)                       |
 * |-----:|---------------------------|-------------------------------------|
 * |    0 | opcode                    | opcode                              |
 * |    1 | service action (bits 4–0) | service action (bits 4–0)           |
 * |    2 | reserved                  | scope (bits 7–4), type (bits 3–0)   |
 * |  5–8 | 7–8: allocation length    | parameter list length (32 bit)      |
 * |    9 | control                   | control                             |
 *
 * @module
 */

import { PR_IN, PR_OUT } from "./wire.ts";

/** PR IN service actions. */
export const PrInAction = {
  READ_KEYS: 0x00,
  READ_RESERVATION: 0x01,
  REPORT_CAPABILITIES: 0x02,
  READ_FULL_STATUS: 0x03,
} as const;

/** PR OUT service actions. */
export const PrOutAction = {
  REGISTER: 0x00,
  RESERVE: 0x01,
  RELEASE: 0x02,
  CLEAR: 0x03,
  PREEMPT: 0x04,
  PREEMPT_AND_ABORT: 0x05,
  REGISTER_AND_IGNORE_EXISTING_KEY: 0x06,
  REGISTER_AND_MOVE: 0x07,
  REPLACE_LOST_RESERVATION: 0x08,
} as const;

/** Reservation types (PR OUT CDB byte 2, low nibble). */
export const PrType = {
  WRITE_EXCLUSIVE: 0x1,
  EXCLUSIVE_ACCESS: 0x3,
  WRITE_EXCLUSIVE_REGISTRANTS_ONLY: 0x5,
  EXCLUSIVE_ACCESS_REGISTRANTS_ONLY: 0x6,
  WRITE_EXCLUSIVE_ALL_REGISTRANTS: 0x7,
  EXCLUSIVE_ACCESS_ALL_REGISTRANTS: 0x8,
} as const;

/** Flags of byte 20 of the PR OUT basic parameter list. */
export const PrOutFlags = {
  APTPL: 0x01,
  ALL_TG_PT: 0x04,
  SPEC_I_PT: 0x08,
} as const;

const IN_NAMES = ["READ KEYS", "READ RESERVATION", "REPORT CAPABILITIES", "READ FULL STATUS"];
const OUT_NAMES = [
  "REGISTER",
  "RESERVE",
  "RELEASE",
  "CLEAR",
  "PREEMPT",
  "PREEMPT AND ABORT",
  "REGISTER AND IGNORE EXISTING KEY",
  "REGISTER AND MOVE",
  "REPLACE LOST RESERVATION",
];

/** The fields of a PR CDB that logs and policies use. */
export interface PrCommand {
  /** Service action direction: PR IN or PR OUT. */
  direction: "in" | "out";
  /** The service action code (CDB byte 1, low 5 bits). */
  serviceAction: number;
  /** e.g. "READ KEYS", "REGISTER", or "service action 0x1f". */
  serviceActionName: string;
  /** PR OUT only. */
  scope: number;
  /** PR OUT only. */
  type: number;
  /** BE16 at bytes 7–8: allocation length (IN) or parameter list length (OUT). */
  length: number;
  /** The CDB as sent to the device: its 10 significant bytes. */
  deviceCdb: Uint8Array;
}

/** Parse a PR IN/OUT CDB (the wire's 16 bytes). Throws RangeError for another opcode. */
export function parsePrCdb(cdb: Uint8Array): PrCommand {
  const opcode = cdb[0];
  if (opcode !== PR_IN && opcode !== PR_OUT) {
    throw new RangeError(`opcode 0x${opcode.toString(16)} is not a PR command`);
  }
  const direction = opcode === PR_IN ? "in" : "out";
  const serviceAction = cdb[1] & 0x1f;
  const names = direction === "in" ? IN_NAMES : OUT_NAMES;
  return {
    direction,
    serviceAction,
    serviceActionName: names[serviceAction] ??
      `service action 0x${serviceAction.toString(16).padStart(2, "0")}`,
    scope: direction === "out" ? cdb[2] >> 4 : 0,
    type: direction === "out" ? cdb[2] & 0x0f : 0,
    length: (cdb[7] << 8) | cdb[8],
    deviceCdb: cdb.slice(0, 10),
  };
}

/** A 16-byte PR IN CDB as QEMU sends it. */
export function prInCdb(serviceAction: number, allocationLength: number): Uint8Array {
  if (allocationLength < 0 || allocationLength > 0xffff) {
    throw new RangeError(`allocation length ${allocationLength} is not 0..65535`);
  }
  const cdb = new Uint8Array(16);
  cdb[0] = PR_IN;
  cdb[1] = serviceAction & 0x1f;
  cdb[7] = allocationLength >> 8;
  cdb[8] = allocationLength & 0xff;
  return cdb;
}

/** Options of {@linkcode prOutCdb}. */
export interface PrOutCdbOptions {
  /** SCOPE field (high nibble of byte 2; 0 = LU_SCOPE). */
  scope?: number;
  /** TYPE field (low nibble of byte 2), e.g. {@linkcode PrType.WRITE_EXCLUSIVE}. */
  type?: number;
}

/** A 16-byte PR OUT CDB as QEMU sends it (parameter list length in bytes 5–8). */
export function prOutCdb(
  serviceAction: number,
  parameterLength: number,
  options: PrOutCdbOptions = {},
): Uint8Array {
  if (parameterLength < 0 || parameterLength > 0xffffffff) {
    throw new RangeError(`parameter list length ${parameterLength} is out of range`);
  }
  const cdb = new Uint8Array(16);
  cdb[0] = PR_OUT;
  cdb[1] = serviceAction & 0x1f;
  cdb[2] = ((options.scope ?? 0) << 4) | ((options.type ?? 0) & 0x0f);
  new DataView(cdb.buffer).setUint32(5, parameterLength);
  return cdb;
}

/** The basic PR OUT parameter list (all service actions but REGISTER AND MOVE). */
export interface PrOutParameters {
  /** Reservation key (bytes 0–7). */
  key?: bigint;
  /** Service action reservation key (bytes 8–15). */
  serviceActionKey?: bigint;
  /** Byte 20: PrOutFlags bits. */
  flags?: number;
  /** TransportIDs, each already encoded; sent with SPEC_I_PT. */
  transportIds?: Uint8Array[];
}

/** Encode a basic PR OUT parameter list (24 bytes, plus a TransportID list if given). */
export function prOutParameters(params: PrOutParameters): Uint8Array {
  const tids = params.transportIds ?? [];
  const tidLen = tids.reduce((n, t) => n + t.length, 0);
  const out = new Uint8Array(24 + (tids.length > 0 ? 4 + tidLen : 0));
  const v = new DataView(out.buffer);
  v.setBigUint64(0, BigInt.asUintN(64, params.key ?? 0n));
  v.setBigUint64(8, BigInt.asUintN(64, params.serviceActionKey ?? 0n));
  out[20] = params.flags ?? 0;
  if (tids.length > 0) {
    v.setUint32(24, tidLen);
    let off = 28;
    for (const t of tids) {
      out.set(t, off);
      off += t.length;
    }
  }
  return out;
}

/** The REGISTER AND MOVE parameter list. */
export interface RegisterAndMoveParameters {
  /** The registrant's reservation key. */
  key: bigint;
  /** The key registered for the I_T nexus the registration moves to. */
  serviceActionKey: bigint;
  /** Release the I_T nexus' registration after the move. */
  unregister?: boolean;
  /** Activate persist through power loss. */
  aptpl?: boolean;
  /** The target port the registration moves to. */
  relativeTargetPort: number;
  /** The TransportID of the initiator port it moves to. */
  transportId: Uint8Array;
}

/** Encode a REGISTER AND MOVE parameter list. */
export function registerAndMoveParameters(params: RegisterAndMoveParameters): Uint8Array {
  const out = new Uint8Array(24 + params.transportId.length);
  const v = new DataView(out.buffer);
  v.setBigUint64(0, BigInt.asUintN(64, params.key));
  v.setBigUint64(8, BigInt.asUintN(64, params.serviceActionKey));
  out[17] = (params.unregister ? 0x02 : 0) | (params.aptpl ? 0x01 : 0);
  v.setUint16(18, params.relativeTargetPort);
  v.setUint32(20, params.transportId.length);
  out.set(params.transportId, 24);
  return out;
}

/** A SAS-format TransportID (24 bytes) for an 8-byte SAS address, as LIO's loopback uses. */
export function sasTransportId(address: bigint): Uint8Array {
  const out = new Uint8Array(24);
  out[0] = 0x06; // protocol identifier SAS
  new DataView(out.buffer).setBigUint64(4, BigInt.asUintN(64, address));
  return out;
}
