/**
 * Directory listing through libc's `getdents64(2)` (Debian 12's glibc has the
 * wrapper), so sysfs directories can be read without Deno's read permission,
 * as ffi/files.ts's `readSmallFile` reads sysfs files.
 *
 * `struct linux_dirent64`: u64 d_ino, s64 d_off, u16 d_reclen, u8 d_type,
 * then the NUL-terminated name.
 *
 * @module
 */

import { SysError } from "./errno.ts";
import { closeFd, O_DIRECTORY, O_RDONLY, openPath } from "./files.ts";
import { lastErrno, libc } from "./libc.ts";

/**
 * The names in directory `path`, without `.` and `..`, in the kernel's order.
 * Throws {@linkcode SysError} if the directory cannot be opened or read.
 */
export function listDirectory(path: string): string[] {
  const fd = openPath(path, O_RDONLY | O_DIRECTORY);
  const names: string[] = [];
  const buf = new Uint8Array(8192);
  const view = new DataView(buf.buffer);
  const decoder = new TextDecoder();
  try {
    for (;;) {
      const n = Number(libc.getdents64(fd, buf, BigInt(buf.length)));
      if (n < 0) throw new SysError("getdents64", lastErrno(), path);
      if (n === 0) break;
      for (let at = 0; at < n;) {
        const reclen = view.getUint16(at + 16, true);
        if (reclen === 0) break;
        const nameStart = at + 19;
        let end = nameStart;
        while (end < at + reclen && buf[end] !== 0) end++;
        const name = decoder.decode(buf.subarray(nameStart, end));
        if (name !== "." && name !== "..") names.push(name);
        at += reclen;
      }
    }
  } finally {
    closeFd(fd);
  }
  return names;
}
