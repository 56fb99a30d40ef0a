/**
 * Which fds the helper passes PR commands to: the decision (pure) and the
 * facts it is made from (read from statx, fcntl and sysfs at the edge).
 *
 * Allowed: a whole-disk SCSI block device, or a SCSI generic (sg) character
 * device. Refused, with CHECK CONDITION ILLEGAL REQUEST / INVALID COMMAND
 * OPERATION CODE (05/20/00, what a guest reads as "PR not supported"):
 * partitions (with CAP_SYS_RAWIO the kernel would send SG_IO from a partition
 * to the whole LUN), device-mapper devices other than multipath, non-SCSI
 * block devices, regular files, pipes, sockets, directories, every other
 * character device, and any fd opened O_PATH (it names a device but allows no
 * I/O or ioctl on it: SG_IO on it fails with EBADF, and the client may hold
 * it without read permission on the node).
 *
 * @module
 */

import {
  type FileKind,
  fileStatusFlags,
  O_ACCMODE,
  O_PATH,
  O_RDONLY,
  readLink,
  readSmallFile,
  statPath,
  statxFd,
} from "../ffi/files.ts";
import { Sense, type SenseCode } from "./sense.ts";

/** What the kernel says about a received fd. */
export interface DeviceFacts {
  kind: FileKind;
  major: number;
  minor: number;
  /** The fd was opened O_RDONLY. */
  readOnly: boolean;
  /**
   * The fd was opened O_PATH (F_GETFL): it only names the file. Refused like
   * a file that is not a device. Default false.
   */
  pathOnly?: boolean;
  /** Block device that is a partition. */
  partition: boolean;
  /** Block device whose parent is a SCSI device, or an sg character device. */
  scsi: boolean;
  /** device-mapper uuid, for dm block devices ("" if the device has none). */
  dmUuid: string | null;
  /**
   * The device number still exists in sysfs (false: the device behind the fd
   * was removed, e.g. a LUN unexported while a client held it). Default true.
   */
  present?: boolean;
}

/** The class of device a request goes to. */
export type DeviceClass = "scsi-disk" | "scsi-generic" | "multipath";

/** Outcome of {@linkcode decideDevice}. */
export type DeviceDecision =
  | { ok: true; deviceClass: DeviceClass; fileClass: "blk_file" | "chr_file" }
  | { ok: false; reason: string; sense: SenseCode };

function refuse(reason: string): DeviceDecision {
  return { ok: false, reason, sense: Sense.INVALID_OPCODE };
}

/** Decide from the facts whether this fd may receive a PR command. */
export function decideDevice(facts: DeviceFacts): DeviceDecision {
  const dev = `${facts.major}:${facts.minor}`;
  if (facts.pathOnly === true) {
    // finding 14.2: an O_PATH fd needs no permission on the node, so nothing
    // may be done on its behalf (not even PR IN through another path)
    return refuse(`fd is an O_PATH fd (of a ${facts.kind} file), not an open device`);
  }
  if ((facts.kind === "block" || facts.kind === "char") && facts.present === false) {
    // what SG_IO's ENODEV maps to in the errno table: the device is gone
    return {
      ok: false,
      reason: `${facts.kind} device ${dev} no longer exists (removed)`,
      sense: Sense.TARGET_FAILURE,
    };
  }
  switch (facts.kind) {
    case "block":
      if (facts.dmUuid !== null) {
        if (facts.dmUuid.startsWith("mpath-")) {
          return { ok: true, deviceClass: "multipath", fileClass: "blk_file" };
        }
        return refuse(`block device ${dev} is a device-mapper device that is not multipath`);
      }
      if (facts.partition) return refuse(`block device ${dev} is a partition, not a whole disk`);
      if (!facts.scsi) return refuse(`block device ${dev} is not a SCSI device`);
      return { ok: true, deviceClass: "scsi-disk", fileClass: "blk_file" };
    case "char":
      if (!facts.scsi) return refuse(`character device ${dev} is not a SCSI generic (sg) device`);
      return { ok: true, deviceClass: "scsi-generic", fileClass: "chr_file" };
    default:
      return refuse(
        `fd is a ${facts.kind === "unknown" ? "file of unknown type" : facts.kind}, not a device`,
      );
  }
}

/** What sysfs says about a device number (does not depend on the fd). */
type SysfsFacts = Pick<DeviceFacts, "partition" | "scsi" | "dmUuid" | "present">;

/**
 * sysfs answers by device number, cached briefly: a loop of requests on one
 * disk then costs statx + fcntl, not three sysfs look-ups each. Short enough
 * that a device number reused after a hot-unplug is seen afresh.
 */
const SYSFS_TTL_MS = 2000;
const sysfsCache = new Map<string, { at: number; facts: SysfsFacts }>();

function sysfsFacts(kind: FileKind, major: number, minor: number): SysfsFacts {
  const id = `${major}:${minor}`;
  const key = `${kind} ${id}`;
  const now = Date.now();
  const hit = sysfsCache.get(key);
  if (hit && now - hit.at < SYSFS_TTL_MS) return hit.facts;
  const facts: SysfsFacts = {
    partition: false,
    scsi: false,
    dmUuid: null,
    present: statPath(`/sys/dev/${kind}/${id}`) !== null,
  };
  if (kind === "block") {
    const sys = `/sys/dev/block/${id}`;
    facts.partition = readSmallFile(`${sys}/partition`, 64) !== null;
    const dm = readSmallFile(`${sys}/dm/uuid`, 256);
    facts.dmUuid = dm === null ? null : dm.trim();
    facts.scsi = (readLink(`${sys}/device/subsystem`) ?? "").endsWith("/scsi");
  } else if (kind === "char") {
    facts.scsi = (readLink(`/sys/dev/char/${id}/subsystem`) ?? "").endsWith("/scsi_generic");
  }
  if (sysfsCache.size >= 1024) sysfsCache.clear();
  sysfsCache.set(key, { at: now, facts });
  return facts;
}

/**
 * Read the facts about an fd from statx(2), fcntl(2) and sysfs. Nothing here
 * asks the file system behind the fd (finding 14.3: a plain fstat(2) of a
 * file on a FUSE mount waits for its server's GETATTR answer, on the event
 * loop): statx with AT_STATX_DONT_SYNC reads what the kernel has, and
 * F_GETFL reads the open file's flags.
 */
export function probeDevice(fd: number): DeviceFacts {
  const st = statxFd(fd);
  const flags = fileStatusFlags(fd);
  const readOnly = (flags & O_ACCMODE) === O_RDONLY;
  const pathOnly = (flags & O_PATH) !== 0;
  const sys = !pathOnly && (st.kind === "block" || st.kind === "char")
    ? sysfsFacts(st.kind, st.rdevMajor, st.rdevMinor)
    : { partition: false, scsi: false, dmUuid: null, present: true };
  return { kind: st.kind, major: st.rdevMajor, minor: st.rdevMinor, readOnly, pathOnly, ...sys };
}
