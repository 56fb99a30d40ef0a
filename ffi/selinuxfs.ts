/**
 * What the kernel itself says about SELinux, read through libc without
 * libselinux: `statfs(2)` of the selinuxfs mount point, this process's own
 * context (`/proc/self/attr/current`) and the loaded policy image
 * (`/sys/fs/selinux/policy`).
 *
 * libselinux's `is_selinux_enabled()` is not asked: it answers 0 when
 * selinuxfs is mounted read-only (libselinux then ignores the mount) and when
 * `/etc/selinux/config` is missing, both common in containers, although the
 * kernel enforces its policy all the same.
 *
 * Same rules as ffi/libc.ts (absolute library path, no `Deno.UnsafePointer*`,
 * errno read right after the call, {@linkcode SysError} on failure); `statfs`
 * is in ffi/libc.ts's one table.
 *
 * @module
 */

import { STATFS } from "./layouts.ts";
import { Errno, SysError } from "./errno.ts";
import { closeFd, O_RDONLY, openPath, readFd, readSmallBytes } from "./files.ts";
import { checkFound, cString, libc } from "./libc.ts";

/** Where selinuxfs is mounted (the kernel creates this mount point only when SELinux is on). */
export const SELINUXFS_PATH = "/sys/fs/selinux";
/** `SELINUX_MAGIC`: `f_type` of selinuxfs. */
export const SELINUX_MAGIC = 0xf97cff8c;
/** `ST_RDONLY` in `f_flags`. */
const ST_RDONLY = 0x0001;
/** `ST_VALID`: `f_flags` is filled in (Linux ≥ 2.6.36). */
const ST_VALID = 0x0020;

/** What `statfs(2)` says about a path. */
export interface FilesystemStatus {
  /** `f_type` (low 32 bits), e.g. {@linkcode SELINUX_MAGIC}. */
  type: number;
  /** `f_flags` has `ST_RDONLY`: this mount is read-only here (per mount, so per mount namespace). */
  readOnly: boolean;
}

/**
 * `statfs(path)`; null if the path does not exist (ENOENT, ENOTDIR). Other
 * errors throw {@linkcode SysError}.
 */
export function statFilesystem(path: string): FilesystemStatus | null {
  const buf = new Uint8Array(STATFS.size);
  if (checkFound("statfs", libc.statfs(cString(path), buf), path) === null) return null;
  const v = new DataView(buf.buffer);
  const flags = v.getUint32(STATFS.f_flags, true);
  return {
    type: v.getUint32(STATFS.f_type, true),
    readOnly: (flags & ST_VALID) !== 0 && (flags & ST_RDONLY) !== 0,
  };
}

/**
 * This process's own security context as the kernel's LSM reports it
 * (`/proc/self/attr/current`, trailing NUL and newline removed). Throws
 * {@linkcode SysError}: EINVAL when no LSM that labels processes is active.
 * With AppArmor the text is AppArmor's label (`unconfined`, `name (enforce)`),
 * which is not shaped like an SELinux context.
 */
export function readSelfContext(): string {
  const path = "/proc/self/attr/current";
  const bytes = readSmallBytes(path, 4096);
  if (bytes === null) throw new SysError("open", Errno.ENOENT, path);
  return new TextDecoder().decode(bytes).replace(/[\0\n]+$/, "");
}

/** The largest policy image read (the kernel refuses to load more than 64 MiB). */
const MAX_POLICY_BYTES = 64 << 20;
const POLICY_CHUNK = 1 << 20;

/**
 * The loaded policy image, as the kernel exports it (`/sys/fs/selinux/policy`,
 * needs `security { read_policy }`). Throws {@linkcode SysError}; EBUSY means
 * another process has the file open (the kernel allows one reader at a time).
 */
export function readLoadedPolicy(path = `${SELINUXFS_PATH}/policy`): Uint8Array {
  const fd = openPath(path, O_RDONLY);
  try {
    const chunks: Uint8Array[] = [];
    let total = 0;
    for (;;) {
      const chunk = new Uint8Array(POLICY_CHUNK);
      const got = readFd(fd, chunk);
      if (got === null) continue;
      if (got === 0) break;
      total += got;
      if (total > MAX_POLICY_BYTES) {
        throw new RangeError(`${path}: policy image larger than ${MAX_POLICY_BYTES} bytes`);
      }
      chunks.push(chunk.subarray(0, got));
    }
    const out = new Uint8Array(total);
    let at = 0;
    for (const c of chunks) {
      out.set(c, at);
      at += c.length;
    }
    return out;
  } finally {
    closeFd(fd);
  }
}
