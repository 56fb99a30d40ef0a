/**
 * The V8 flags the daemon runs with, wherever it is launched: the package's
 * launcher (tools/build_deb.ts), `deno compile` (tools/compile.ts, baked into
 * the binary), and the harnesses that start it (tests, fuzz/, bench/). The
 * shell launcher tools/prhelperd and the `start` task in deno.json spell them
 * out; tests/runtime_flags_test.ts keeps them in step with this list.
 *
 * `--jitless`: V8 interprets and never maps executable memory. A kernel that
 * denies executable memory to the daemon's domain (SELinux without
 * `process { execmem }`, as for `svirt_t` with `virt_use_execmem` off or a
 * confined system domain; seccomp's MemoryDenyWriteExecute) makes V8 abort the
 * whole process the moment an isolate maps code: at start-up, or when a Worker
 * starts later (after a `setenforce 1` or a policy load). A shared helper that
 * dies takes the PR manager away from every VM, so the daemon never asks for
 * executable memory; it also removes the JIT from the code that parses hostile
 * input. The cost is measured in docs/PERFORMANCE.md ("without the JIT").
 * Deno's FFI still tries to compile its fast-call trampolines ("turbocall") at
 * `dlopen`; where executable memory is denied it prints one "Failed to compile
 * FFI turbocall" line per symbol and uses the ordinary call path, which is all
 * an interpreter calls anyway.
 *
 * `--max-semi-space-size=1` caps V8's young generation at 1 MiB: the daemon's
 * garbage is small and short-lived, and without the cap a busy daemon's RSS
 * settles two to three times higher (docs/PERFORMANCE.md, memory items).
 *
 * @module
 */

/** V8 flags of the daemon. */
export const DAEMON_V8_FLAGS: readonly string[] = ["--jitless", "--max-semi-space-size=1"];

/** {@link DAEMON_V8_FLAGS} as one `deno run` / `deno compile` argument. */
export function v8FlagsArgument(): string {
  return `--v8-flags=${DAEMON_V8_FLAGS.join(",")}`;
}
