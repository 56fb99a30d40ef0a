/**
 * Whether this process runs V8 with its JIT, and what that means for the
 * daemon (see tools/runtime_flags.ts for why every launcher passes
 * `--jitless`). Pure: the caller logs the line.
 *
 * @module
 */

/** The JIT mode of this process and the start-up line that says it. */
export interface JitStatus {
  /** V8 runs without the JIT (no executable memory is ever mapped). */
  jitless: boolean;
  /** The line for the start-up log. */
  line: string;
  /** Log the line as a warning rather than as information. */
  warn: boolean;
}

/**
 * The JIT mode, from what V8 exposes: with `--jitless` V8 has no
 * WebAssembly, so `globalThis.WebAssembly` is undefined; with the JIT it is
 * an object. `globals` is for tests.
 */
export function jitStatus(globals: { WebAssembly?: unknown } = globalThis): JitStatus {
  if (globals.WebAssembly === undefined) {
    return {
      jitless: true,
      line: "V8 JIT off (--jitless): no executable memory is mapped, so a kernel that " +
        "denies it (SELinux without execmem) cannot abort the daemon",
      warn: false,
    };
  }
  return {
    jitless: false,
    line: "V8 JIT on: started without the launcher's --jitless; if the kernel denies " +
      "executable memory (SELinux without execmem, MemoryDenyWriteExecute) V8 aborts " +
      "the daemon when a Worker starts",
    warn: true,
  };
}
