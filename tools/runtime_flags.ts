/**
 * The V8 flags the daemon runs with, wherever it is launched: the package's
 * launcher (tools/build_deb.ts), `deno compile` (tools/compile.ts, baked into
 * the binary), and the harnesses that start it (tests, fuzz/, bench/). The
 * shell launcher tools/prhelperd and the `start` task in deno.json spell them
 * out; tests/runtime_flags_test.ts keeps them in step with this list.
 *
 * `--max-semi-space-size=1` caps V8's young generation at 1 MiB: the daemon's
 * garbage is small and short-lived, and without the cap a busy daemon's RSS
 * settles two to three times higher (docs/PERFORMANCE.md, memory items).
 *
 * @module
 */

/** V8 flags of the daemon. */
export const DAEMON_V8_FLAGS: readonly string[] = ["--max-semi-space-size=1"];

/** {@link DAEMON_V8_FLAGS} as one `deno run` / `deno compile` argument. */
export function v8FlagsArgument(): string {
  return `--v8-flags=${DAEMON_V8_FLAGS.join(",")}`;
}
