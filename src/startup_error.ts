/**
 * The error of a start-up problem the user must fix (a bad option value, a
 * socket or pidfile in the way, missing privileges): main prints its message
 * and exits 1, without a stack trace.
 *
 * @module
 */

/** A start-up problem the user must fix; main prints the message and exits 1. */
export class StartupError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "StartupError";
  }
}
