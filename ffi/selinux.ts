/**
 * libselinux through `Deno.dlopen`: one symbols table, thin typed wrappers.
 *
 * Same rules as ffi/libc.ts: an absolute library path, no `Deno.UnsafePointer*`
 * (pointers are `usize`; `char **` out-parameters are 8-byte buffers whose
 * content is read as an address and released with `freecon`), errno read right
 * after each synchronous call, failures thrown as {@linkcode SysError}.
 *
 * ## Which access query, and why
 *
 * The per-request question is "may the client's domain `ioctl` this device
 * node?", and in permissive mode also "would it have been refused?". The
 * answer comes from {@linkcode Libselinux.computeAv}, i.e.
 * `security_compute_av_flags_raw()`, not from `selinux_check_access()`:
 *
 * - `security_compute_av_flags_raw()` writes the query to selinuxfs
 *   (`/sys/fs/selinux/access`) and returns the kernel security server's full
 *   decision: the `allowed` vector AND `flags`, whose
 *   `SELINUX_AVD_FLAGS_PERMISSIVE` bit says that the *source domain* is
 *   permissive (`semanage permissive -a svirt_t`). With the global
 *   `security_getenforce()` we can tell apart "allowed", "denied",
 *   "denied but permissive (global)" and "denied but permissive (domain)".
 * - `selinux_check_access()` goes through the userspace AVC (libselinux's
 *   `avc_has_perm`), which returns 0 both when the permission is allowed and
 *   when it is denied but the system or the domain is permissive; the only
 *   trace of the difference is a log callback (`selinux_set_callback`), which
 *   needs `Deno.UnsafeCallback` and therefore unscoped ffi. It also returns 0
 *   when SELinux is disabled, starts an AVC with its own cache and
 *   policy-reload tracking, and prints `avc: denied` lines on stderr itself.
 *
 * This is the *kernel's* security server, queried directly: there is no
 * userspace cache here, so a policy reload or a `setenforce` is seen by the
 * next request. The kernel's own AVC is not involved and writes no audit
 * record for these queries (the daemon logs its own AVC-like line). The
 * daemon's domain needs `security { compute_av }` on `security_t` for the
 * query (refpolicy interface `selinux_compute_access_vector`).
 *
 * Not covered by this query: ioctl extended permissions (`allowxperm` rules on
 * the SG_IO command 0x2285; libselinux 3.4 has no `security_compute_xperms`
 * and selinuxfs no query for them, so src/security/selinux_policy.ts computes them
 * from the loaded policy image) and the `fd { use }` check of the process
 * that opened the file (whose context no interface shows).
 *
 * Whether SELinux is on is not asked here: `is_selinux_enabled()` answers 0
 * with a read-only selinuxfs or without /etc/selinux/config while the kernel
 * enforces; ffi/selinuxfs.ts reads the kernel's own signs.
 *
 * @module
 */

import { cString, cStringAt, lastErrno } from "./libc.ts";
import { SysError } from "./errno.ts";
import { AV_DECISION } from "./layouts.ts";

/** Absolute path of libselinux for this architecture. */
export const LIBSELINUX_PATH: string = Deno.build.arch === "aarch64"
  ? "/usr/lib/aarch64-linux-gnu/libselinux.so.1"
  : "/usr/lib/x86_64-linux-gnu/libselinux.so.1";

const symbols = {
  // int is_selinux_enabled(void)
  is_selinux_enabled: { parameters: [], result: "i32" },
  // int security_getenforce(void)
  security_getenforce: { parameters: [], result: "i32" },
  // int getpeercon_raw(int fd, char **con)
  getpeercon_raw: { parameters: ["i32", "buffer"], result: "i32" },
  // int fgetfilecon_raw(int fd, char **con)
  fgetfilecon_raw: { parameters: ["i32", "buffer"], result: "i32" },
  // void freecon(char *con), on a native address
  freecon: { parameters: ["usize"], result: "void" },
  // security_class_t string_to_security_class(const char *name)   (uint16_t)
  string_to_security_class: { parameters: ["buffer"], result: "u16" },
  // access_vector_t string_to_av_perm(security_class_t tclass, const char *name)   (uint32_t)
  string_to_av_perm: { parameters: ["u16", "buffer"], result: "u32" },
  // int security_compute_av_flags_raw(const char *scon, const char *tcon,
  //     security_class_t tclass, access_vector_t requested, struct av_decision *avd)
  security_compute_av_flags_raw: {
    parameters: ["buffer", "buffer", "u16", "u32", "buffer"],
    result: "i32",
  },
} as const satisfies Deno.ForeignLibraryInterface;

/** `SELINUX_AVD_FLAGS_PERMISSIVE` in `struct av_decision.flags`: the source domain is permissive. */
export const SELINUX_AVD_FLAGS_PERMISSIVE = 0x0001;

/** `struct av_decision` (six 32-bit fields, 24 bytes). */
export interface AvDecision {
  /** Permissions granted by the policy. */
  allowed: number;
  /** Permissions the answer covers. */
  decided: number;
  /** Permissions whose grant is audited. */
  auditallow: number;
  /** Permissions whose denial is audited. */
  auditdeny: number;
  /** Policy sequence number the answer is based on. */
  seqno: number;
  /** `SELINUX_AVD_FLAGS_*`. */
  flags: number;
}

/** Why libselinux could not be opened. */
export interface LibselinuxUnavailable {
  ok: false;
  /** true if the file does not exist (as opposed to a permission or loader error). */
  notFound: boolean;
  /** The loader's message. */
  message: string;
}

/** Result of {@linkcode openLibselinux}. */
export type LibselinuxLoad = { ok: true; lib: Libselinux } | LibselinuxUnavailable;

type Symbols = Deno.DynamicLibrary<typeof symbols>["symbols"];

/** Typed wrappers around one loaded libselinux. */
export class Libselinux {
  #dl: Deno.DynamicLibrary<typeof symbols>;
  #s: Symbols;

  constructor(dl: Deno.DynamicLibrary<typeof symbols>) {
    this.#dl = dl;
    this.#s = dl.symbols;
  }

  /**
   * `is_selinux_enabled() == 1`: libselinux's view (a read-write selinuxfs and
   * /etc/selinux/config). Not a test of the kernel: see ffi/selinuxfs.ts.
   */
  isEnabled(): boolean {
    return this.#s.is_selinux_enabled() === 1;
  }

  /** `security_getenforce()`: true if enforcing; throws SysError if it cannot be read. */
  getEnforce(): boolean {
    const rc = this.#s.security_getenforce();
    if (rc < 0) throw new SysError("security_getenforce", lastErrno());
    return rc === 1;
  }

  /** `getpeercon_raw(fd)`: the security context of a connected socket's peer. */
  peerContext(fd: number): string {
    return this.#context("getpeercon_raw", fd);
  }

  /** `fgetfilecon_raw(fd)`: the security context of the file `fd` refers to. */
  fileContext(fd: number): string {
    return this.#context("fgetfilecon_raw", fd);
  }

  #context(call: "getpeercon_raw" | "fgetfilecon_raw", fd: number): string {
    const out = new BigUint64Array(1);
    const rc = this.#s[call](fd, out);
    if (rc < 0) throw new SysError(call, lastErrno(), String(fd));
    const addr = out[0];
    if (addr === 0n) throw new SysError(call, 61, /* ENODATA */ String(fd));
    try {
      return cStringAt(addr);
    } finally {
      this.#s.freecon(addr);
    }
  }

  /** `string_to_security_class(name)`; throws SysError if the policy has no such class. */
  securityClass(name: string): number {
    const v = this.#s.string_to_security_class(cString(name));
    if (v === 0) throw new SysError("string_to_security_class", lastErrno() || 22, name);
    return v;
  }

  /** `string_to_av_perm(tclass, name)`; throws SysError if the class has no such permission. */
  avPerm(tclass: number, name: string): number {
    const v = this.#s.string_to_av_perm(tclass, cString(name));
    if (v === 0) throw new SysError("string_to_av_perm", lastErrno() || 22, name);
    return v;
  }

  /**
   * `security_compute_av_flags_raw(scon, tcon, tclass, requested)`: the kernel
   * security server's decision, including the permissive-domain flag.
   */
  computeAv(
    scon: string,
    tcon: string,
    options: { tclass: number; requested: number },
  ): AvDecision {
    const avd = new Uint8Array(AV_DECISION.size);
    const rc = this.#s.security_compute_av_flags_raw(
      cString(scon),
      cString(tcon),
      options.tclass,
      options.requested >>> 0,
      avd,
    );
    if (rc < 0) {
      throw new SysError("security_compute_av_flags_raw", lastErrno(), `${scon} ${tcon}`);
    }
    const v = new DataView(avd.buffer);
    return {
      allowed: v.getUint32(AV_DECISION.allowed, true),
      decided: v.getUint32(AV_DECISION.decided, true),
      auditallow: v.getUint32(AV_DECISION.auditallow, true),
      auditdeny: v.getUint32(AV_DECISION.auditdeny, true),
      seqno: v.getUint32(AV_DECISION.seqno, true),
      flags: v.getUint32(AV_DECISION.flags, true),
    };
  }

  /** Unload the library. */
  close(): void {
    this.#dl.close();
  }
}

/**
 * dlopen libselinux. Never throws: a missing library (or one the permission
 * set does not allow) is reported as a value, and the caller turns the check
 * off or fails closed.
 */
export function openLibselinux(path: string = LIBSELINUX_PATH): LibselinuxLoad {
  try {
    return { ok: true, lib: new Libselinux(Deno.dlopen(path, symbols)) };
  } catch (e) {
    const message = e instanceof Error ? e.message : String(e);
    const notFound = e instanceof Deno.errors.NotFound ||
      /No such file|cannot open shared object/i.test(message);
    return { ok: false, notFound, message };
  }
}
