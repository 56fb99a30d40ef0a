/**
 * SIGUSR1 off, before anything else runs (issue 14, finding 10).
 *
 * Deno (since 2.9.2) starts the V8 inspector on 127.0.0.1:9229 when the
 * process gets SIGUSR1: code execution for anyone who can connect, in a
 * process that may still be root. main.ts imports this module first, so its
 * evaluation is the first code of every process image (stage 1, the -d copy,
 * the re-executed stage 2). It
 *
 * - sets SIGUSR1 to SIG_IGN: the signal neither ends the process nor reaches
 *   the runtime, until the runtime installs its inspector trigger, which it
 *   does on the first event-loop turn after 500 ms (stage 1 turns none: it
 *   runs on microtasks only until it re-executes);
 * - blocks SIGUSR1 on the main thread: a process image started from it (the
 *   privilege re-exec, the -d copy) begins with SIGUSR1 blocked on every
 *   thread, so there it stays pending for good, whatever the runtime installs.
 *   The daemon re-executes once even when it has nothing to drop
 *   (src/security/privileges.ts `reexecAnyway`), so the image that serves is always
 *   such an image.
 *
 * What remains: before this module runs, the kernel's default action (the
 * process ends, no inspector), and the runtime's trigger if loading the
 * modules took more than 500 ms, until this module runs. src/daemon.ts also
 * puts SIG_IGN back every 100 ms, should the re-exec ever fail.
 *
 * @module
 */

import { blockSignal, ensureSignalIgnored } from "../ffi/process.ts";

/** SIGUSR1 on Linux. */
export const SIGUSR1 = 10;

ensureSignalIgnored(SIGUSR1);
blockSignal(SIGUSR1);
