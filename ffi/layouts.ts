/**
 * The C struct layouts ffi/ hands to the kernel and to libc, in one place:
 * sizes and byte offsets for 64-bit Linux with glibc (x86_64; `stat` also
 * for aarch64, whose generic layout differs). The modules of ffi/ read their
 * offsets from here, and tests/ffi_layout_test.ts compiles a C program
 * against the system headers and checks every number below, so a wrong
 * offset is a failing test, not a write past a buffer.
 *
 * | struct                        | header              | size |
 * |-------------------------------|---------------------|-----:|
 * | `sg_io_hdr`                   | `<scsi/sg.h>`       |   88 |
 * | `msghdr`, `iovec`, `cmsghdr`  | `<sys/socket.h>`    | 56, 16, 16 |
 * | `sockaddr_un`                 | `<sys/un.h>`        |  110 |
 * | `ucred`                       | `<sys/socket.h>`    |   12 |
 * | `pollfd`                      | `<poll.h>`          |    8 |
 * | `rlimit`                      | `<sys/resource.h>`  |   16 |
 * | `sigaction` (glibc)           | `<signal.h>`        |  152 |
 * | `stat`                        | `<sys/stat.h>`      |  144 (x86_64), 128 (aarch64) |
 * | `statx`                       | `<linux/stat.h>`    |  256 |
 * | `pr_registration`, `pr_reservation`, `pr_preempt`, `pr_clear` | `<linux/pr.h>` | 24, 16, 24, 16 |
 * | `av_decision`                 | `<selinux/selinux.h>` | 24 |
 * | `passwd`, `group`             | `<pwd.h>`, `<grp.h>` | 48, 32 |
 * | `__user_cap_header_struct`, `__user_cap_data_struct` | `<linux/capability.h>` | 8, 12 |
 * | `statfs`                      | `<sys/vfs.h>`       |  120 |
 * | `sigset_t` (glibc)            | `<signal.h>`        |  128 |
 *
 * Rule for every buffer handed over: it is allocated from `size` here (or a
 * larger, stated slack), and its length field, where the call has one, is
 * computed from the buffer that is passed.
 *
 * @module
 */

/** `struct sg_io_hdr` (`<scsi/sg.h>`). */
export const SG_IO_HDR = {
  size: 88,
  interface_id: 0,
  dxfer_direction: 4,
  cmd_len: 8,
  mx_sb_len: 9,
  iovec_count: 10,
  dxfer_len: 12,
  dxferp: 16,
  cmdp: 24,
  sbp: 32,
  timeout: 40,
  flags: 44,
  pack_id: 48,
  usr_ptr: 56,
  status: 64,
  masked_status: 65,
  msg_status: 66,
  sb_len_wr: 67,
  host_status: 68,
  driver_status: 70,
  resid: 72,
  duration: 76,
  info: 80,
} as const;

/** `struct msghdr` (`<sys/socket.h>`). */
export const MSGHDR = {
  size: 56,
  msg_name: 0,
  msg_namelen: 8,
  msg_iov: 16,
  msg_iovlen: 24,
  msg_control: 32,
  msg_controllen: 40,
  msg_flags: 48,
} as const;

/** `struct iovec`. */
export const IOVEC = { size: 16, iov_base: 0, iov_len: 8 } as const;

/** `struct cmsghdr`; `data` is `CMSG_DATA()`'s offset (= `CMSG_LEN(0)`). */
export const CMSGHDR = { size: 16, cmsg_len: 0, cmsg_level: 8, cmsg_type: 12, data: 16 } as const;

/** `struct sockaddr_un`. */
export const SOCKADDR_UN = { size: 110, sun_family: 0, sun_path: 2 } as const;

/** `struct ucred` (SO_PEERCRED). */
export const UCRED = { size: 12, pid: 0, uid: 4, gid: 8 } as const;

/** `struct pollfd`. */
export const POLLFD = { size: 8, fd: 0, events: 4, revents: 6 } as const;

/** `struct flock` (fcntl(2) record locks: F_SETLK, F_GETLK, F_OFD_SETLK, F_OFD_GETLK). */
export const FLOCK = {
  size: 32,
  l_type: 0,
  l_whence: 2,
  l_start: 8,
  l_len: 16,
  l_pid: 24,
} as const;

/** `struct rlimit`. */
export const RLIMIT = { size: 16, rlim_cur: 0, rlim_max: 8 } as const;

/** glibc's `struct sigaction` (not the kernel's). */
export const SIGACTION = { size: 152, sa_handler: 0 } as const;

/** `struct stat` of this architecture. */
export const STAT = Deno.build.arch === "aarch64"
  ? {
    size: 128,
    st_dev: 0,
    st_ino: 8,
    st_mode: 16,
    st_nlink: 20,
    st_uid: 24,
    st_gid: 28,
    st_rdev: 32,
    st_size: 48,
    nlinkBytes: 4,
  } as const
  : {
    size: 144,
    st_dev: 0,
    st_ino: 8,
    st_nlink: 16,
    st_mode: 24,
    st_uid: 28,
    st_gid: 32,
    st_rdev: 40,
    st_size: 48,
    nlinkBytes: 8,
  } as const;

/** `struct statx` (`<linux/stat.h>`, the same on every architecture). */
export const STATX = {
  size: 256,
  stx_nlink: 0x10,
  stx_uid: 0x14,
  stx_gid: 0x18,
  stx_mode: 0x1c,
  stx_ino: 0x20,
  stx_size: 0x28,
  stx_rdev_major: 0x80,
  stx_rdev_minor: 0x84,
  stx_dev_major: 0x88,
  stx_dev_minor: 0x8c,
} as const;

/** `struct pr_registration` (`<linux/pr.h>`): IOC_PR_REGISTER's argument. */
export const PR_REGISTRATION = { size: 24, old_key: 0, new_key: 8, flags: 16 } as const;

/** `struct pr_reservation`: IOC_PR_RESERVE's and IOC_PR_RELEASE's argument. */
export const PR_RESERVATION = { size: 16, key: 0, type: 8, flags: 12 } as const;

/** `struct pr_preempt`: IOC_PR_PREEMPT's and IOC_PR_PREEMPT_ABORT's argument. */
export const PR_PREEMPT = { size: 24, old_key: 0, new_key: 8, type: 16, flags: 20 } as const;

/** `struct pr_clear`: IOC_PR_CLEAR's argument. */
export const PR_CLEAR = { size: 16, key: 0, flags: 8 } as const;

/** `struct av_decision` (`<selinux/selinux.h>`): six 32-bit fields. */
export const AV_DECISION = {
  size: 24,
  allowed: 0,
  decided: 4,
  auditallow: 8,
  auditdeny: 12,
  seqno: 16,
  flags: 20,
} as const;

/** `struct passwd` (`<pwd.h>`). */
export const PASSWD = { size: 48, pw_name: 0, pw_uid: 16, pw_gid: 20 } as const;

/** `struct group` (`<grp.h>`). */
export const GROUP = { size: 32, gr_name: 0, gr_gid: 16 } as const;

/** Capability header and one data struct (`<linux/capability.h>`); version 3 takes two. */
export const CAP = { headerSize: 8, dataSize: 12 } as const;

/** `struct statfs` (`<sys/vfs.h>`, 64-bit). */
export const STATFS = { size: 120, f_type: 0, f_flags: 80 } as const;

/** glibc's `sigset_t` (1024 bits). */
export const SIGSET = { size: 128 } as const;

/** Room ffi/spawn.ts allocates for glibc's `posix_spawnattr_t` (336 bytes on 64-bit). */
export const SPAWNATTR_ROOM = 512;
