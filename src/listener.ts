/**
 * The listening socket: created at a path (-k), or inherited from systemd
 * socket activation (LISTEN_PID / LISTEN_FDS = 1, fd 3).
 *
 * Unlike qemu-pr-helper, a helper started on a path where a live helper
 * listens fails and leaves the first one alone: a lock file `PATH.lock` is
 * taken before anything is unlinked, and an existing socket is removed only
 * if nobody accepts connections on it.
 *
 * @module
 */

import { Errno, SysError } from "../ffi/errno.ts";
import {
  closeFd,
  setCloexec,
  setNonblocking,
  statPath,
  tryLockExclusive,
  unlinkPath,
} from "../ffi/files.ts";
import {
  AF_UNIX,
  bindUnix,
  connectUnix,
  listenSocket,
  socketInfo,
  unixSocket,
} from "../ffi/sockets.ts";
import { openOwnedFile } from "./owned_file.ts";
import { StartupError } from "./startup_error.ts";

/** First fd passed by socket activation (SD_LISTEN_FDS_START). */
export const LISTEN_FDS_START = 3;
/** listen(2) backlog. */
export const LISTEN_BACKLOG = 128;

/** A listening socket and how to clean it up. */
export interface Listener {
  fd: number;
  /** Where it listens ("fd 3 (socket activation)" when inherited). */
  description: string;
  /** The fds that must survive a re-exec, by role (see src/security/privileges.ts). */
  keepFds(): Record<string, number>;
  /** Remove what we created (socket file, lock); keep an inherited socket. */
  close(): void;
}

/** The socket-activation variables, as read from the environment. */
export interface ActivationEnv {
  LISTEN_PID?: string;
  LISTEN_FDS?: string;
  LISTEN_FDNAMES?: string;
}

/** Socket activation in effect: the fd count and names, or null if not activated. */
export function parseActivation(
  env: ActivationEnv,
  pid: number,
): { count: number; names: string[] } | null {
  if (env.LISTEN_PID === undefined || env.LISTEN_FDS === undefined) return null;
  if (!/^\d+$/.test(env.LISTEN_PID) || Number(env.LISTEN_PID) !== pid) return null;
  if (!/^\d+$/.test(env.LISTEN_FDS)) {
    throw new StartupError(`LISTEN_FDS="${env.LISTEN_FDS}" is not a number`);
  }
  const names = env.LISTEN_FDNAMES ? env.LISTEN_FDNAMES.split(":") : [];
  return { count: Number(env.LISTEN_FDS), names };
}

/** Adopt fd 3 from socket activation after checking it is a listening unix stream socket. */
export function adoptActivatedSocket(activation: { count: number; names: string[] }): Listener {
  if (activation.count !== 1) {
    throw new StartupError(
      `socket activation passed ${activation.count} sockets (LISTEN_FDS); prhelperd takes exactly 1`,
    );
  }
  const fd = LISTEN_FDS_START;
  let info;
  try {
    info = socketInfo(fd);
  } catch (e) {
    throw new StartupError(
      `socket activation: fd 3 is not a usable socket: ${(e as Error).message}`,
    );
  }
  if (info.family !== AF_UNIX || !info.stream || !info.listening) {
    throw new StartupError("socket activation: fd 3 must be a listening AF_UNIX stream socket");
  }
  setCloexec(fd, true);
  setNonblocking(fd, true);
  const name = activation.names[0];
  return activatedListener(fd, `fd 3 (socket activation${name ? `, name ${name}` : ""})`);
}

function activatedListener(fd: number, description: string): Listener {
  return {
    fd,
    description,
    keepFds: () => ({ listen: fd, activated: fd }),
    close() {
      // systemd owns the socket file; leave it
      try {
        closeFd(fd);
      } catch { /* already closed */ }
    },
  };
}

/** Create, bind and listen on `path`, refusing to take over a live helper's socket. */
export function listenAtPath(path: string): Listener {
  if (!path.startsWith("/")) {
    throw new StartupError(`socket path "${path}" must be absolute`);
  }
  if (new TextEncoder().encode(path).length > 107) {
    throw new StartupError(`socket path "${path}" is longer than 107 bytes`);
  }
  const lockPath = `${path}.lock`;
  // never through a symlink, and only a regular file of our own (src/owned_file.ts)
  const lockFd = openOwnedFile(lockPath, { mode: 0o600, what: "lock file" });
  if (!tryLockExclusive(lockFd)) {
    closeFd(lockFd);
    throw new StartupError(`another prhelperd holds ${lockPath}; it serves ${path}`);
  }
  const release = () => {
    try {
      unlinkPath(lockPath);
    } catch { /* gone */ }
    try {
      closeFd(lockFd);
    } catch { /* closed */ }
  };
  try {
    const existing = statPath(path);
    if (existing !== null) {
      if (existing.kind !== "socket") {
        throw new StartupError(`${path} exists and is not a socket; not removing it`);
      }
      if (socketIsLive(path)) {
        throw new StartupError(`a helper is already listening on ${path}; not taking it over`);
      }
      unlinkPath(path);
    }
    const fd = unixSocket({ nonblocking: true });
    try {
      bindUnix(fd, path);
      listenSocket(fd, LISTEN_BACKLOG);
    } catch (e) {
      closeFd(fd);
      throw new StartupError(`cannot listen on ${path}: ${(e as Error).message}`);
    }
    return pathListener(path, fd, lockFd);
  } catch (e) {
    release();
    throw e;
  }
}

/**
 * Rebuild a Listener from the fds a re-executed process inherited
 * (`keepFds()` of the listener before the exec).
 */
export function adoptListener(fds: Record<string, number>, path: string): Listener {
  if (fds.listen === undefined) throw new StartupError("re-exec: no listening socket was passed");
  setNonblocking(fds.listen, true);
  if (fds.activated !== undefined) {
    return activatedListener(fds.listen, `fd ${fds.listen} (socket activation)`);
  }
  if (fds.lock === undefined) throw new StartupError("re-exec: the socket lock fd was not passed");
  return pathListener(path, fds.listen, fds.lock);
}

function pathListener(path: string, fd: number, lockFd: number): Listener {
  const lockPath = `${path}.lock`;
  // After a drop to -u USER the directory may no longer be searchable: then the
  // socket file is simply left behind (as qemu-pr-helper does), not an error.
  const statOrNull = (p: string) => {
    try {
      return statPath(p);
    } catch {
      return null;
    }
  };
  const mine = statOrNull(path);
  return {
    fd,
    description: path,
    keepFds: () => ({ listen: fd, lock: lockFd }),
    close() {
      try {
        closeFd(fd);
      } catch { /* closed */ }
      // remove the socket file only if it is still the one we bound
      const now = statOrNull(path);
      if (now && mine && now.ino === mine.ino && now.dev === mine.dev) {
        try {
          unlinkPath(path);
        } catch { /* no right to remove it any more */ }
      }
      try {
        unlinkPath(lockPath);
      } catch { /* no right to remove it any more */ }
      try {
        closeFd(lockFd);
      } catch { /* closed */ }
    },
  };
}

function socketIsLive(path: string): boolean {
  const probe = unixSocket();
  try {
    connectUnix(probe, path);
    return true;
  } catch (e) {
    if (e instanceof SysError && (e.errno === Errno.ECONNREFUSED || e.errno === Errno.ENOENT)) {
      return false;
    }
    throw new StartupError(`cannot tell whether ${path} is in use: ${(e as Error).message}`);
  } finally {
    closeFd(probe);
  }
}
