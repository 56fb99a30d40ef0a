/**
 * Opening the daemon's own files (the socket's lock file, the pidfile) in a
 * directory someone else may write to (issue 14, finding 7): the last path
 * component is never followed if it is a symbolic link (O_NOFOLLOW), and what
 * was opened must be a regular file owned by the daemon's effective uid with
 * exactly one link. Anything else (a symlink or a hard link planted to make
 * root truncate /etc/shadow, another user's file, a FIFO, a device) stops
 * start-up with a message that names the path, before the file is locked,
 * truncated or written.
 *
 * @module
 */

import { Errno, SysError } from "../ffi/errno.ts";
import {
  closeFd,
  type FileStat,
  fstatFd,
  O_CREAT,
  O_NOFOLLOW,
  O_RDWR,
  openPath,
} from "../ffi/files.ts";
import { getResUid } from "../ffi/privileges.ts";
import { StartupError } from "./startup_error.ts";

/**
 * Why an opened file is not safe to use as the daemon's own file, or null if
 * it is (pure): regular, owned by `euid`, one link.
 */
export function ownedFileProblem(
  st: Pick<FileStat, "kind" | "uid" | "nlink">,
  euid: number,
): string | null {
  if (st.kind !== "regular") return `it is a ${st.kind}, not a regular file`;
  if (st.uid !== euid) return `it is owned by uid ${st.uid}, not by uid ${euid}`;
  if (st.nlink !== 1) return `it has ${st.nlink} hard links (a hard link to another file?)`;
  return null;
}

/** Options of {@linkcode openOwnedFile}. */
export interface OwnedFileOptions {
  /** Mode of a file created here. */
  mode: number;
  /** What the file is, for messages: "lock file", "pidfile". */
  what: string;
}

/**
 * Open or create `path` read-write without following a final symlink, and
 * check what was opened ({@linkcode ownedFileProblem}). Returns the fd (close
 * on exec); throws StartupError naming the path and the problem.
 */
export function openOwnedFile(path: string, options: OwnedFileOptions): number {
  let fd: number;
  try {
    fd = openPath(path, O_RDWR | O_CREAT | O_NOFOLLOW, options.mode);
  } catch (e) {
    if (e instanceof SysError && e.errno === Errno.ELOOP) {
      throw new StartupError(
        `${options.what} ${path} is a symbolic link; refusing to follow it (remove it, or ` +
          "use a directory only root can write to)",
      );
    }
    throw new StartupError(`cannot open ${options.what} ${path}: ${(e as Error).message}`);
  }
  let problem: string | null;
  try {
    problem = ownedFileProblem(fstatFd(fd), getResUid().effective);
  } catch (e) {
    problem = `fstat failed: ${(e as Error).message}`;
  }
  if (problem !== null) {
    closeFd(fd);
    throw new StartupError(`refusing ${options.what} ${path}: ${problem}`);
  }
  return fd;
}
