/**
 * `deno task compile`: a single self-contained binary (dist/prhelperd) with
 * the permission set "daemon" of deno.json and the daemon's V8 flags
 * (tools/runtime_flags.ts) baked in, made by `deno compile`.
 *
 * `deno compile` needs denort, Deno's runtime-only binary of the same version,
 * which it downloads from Deno's release host. Where that host is unreachable
 * (as on this project's build machines), point DENORT_BIN at a denort binary
 * (the unzipped `denort-<target>.zip` of the matching release). Without it this
 * task stops with an explanation instead of producing a broken binary.
 *
 * Usage: deno run -A tools/compile.ts [OUTPUT]
 *
 * @module
 */

import { v8FlagsArgument } from "./runtime_flags.ts";

const root = new URL("../", import.meta.url).pathname.replace(/\/$/, "");

/** Thrown when no usable denort is available. */
export class NoDenortError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "NoDenortError";
  }
}

/** Check DENORT_BIN; returns its path or throws NoDenortError with a clear message. */
export function denortPath(env: { get(k: string): string | undefined } = Deno.env): string {
  const path = env.get("DENORT_BIN");
  if (path === undefined || path === "") {
    throw new NoDenortError(
      `deno compile needs denort (the Deno ${Deno.version.deno} runtime-only binary), ` +
        "which it downloads from dl.deno.land; that host is not reachable here.\n" +
        "Set DENORT_BIN=/path/to/denort (from denort-" +
        `${Deno.build.target}.zip of Deno v${Deno.version.deno}) and run again, ` +
        "or use `deno task deb`, which ships the Deno runtime with a bundle instead.",
    );
  }
  let info: Deno.FileInfo;
  try {
    info = Deno.statSync(path);
  } catch {
    throw new NoDenortError(`DENORT_BIN=${path}: no such file`);
  }
  if (!info.isFile || ((info.mode ?? 0) & 0o111) === 0) {
    throw new NoDenortError(`DENORT_BIN=${path} is not an executable file`);
  }
  if (/(^|\/)deno$/.test(path)) {
    throw new NoDenortError(
      `DENORT_BIN=${path} looks like the full deno CLI; deno compile needs denort ` +
        "(with the full CLI the output only starts a REPL)",
    );
  }
  return path;
}

/** Run deno compile; returns the output path. */
export async function compileBinary(output = `${root}/dist/prhelperd`): Promise<string> {
  denortPath();
  await Deno.mkdir(output.slice(0, output.lastIndexOf("/")), { recursive: true });
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "compile",
      "-P=daemon",
      "--no-prompt",
      v8FlagsArgument(),
      "--include",
      "src/sgio_worker.ts",
      "--include",
      "src/fd_closer_worker.ts",
      "-o",
      output,
      "main.ts",
    ],
    cwd: root,
    stdout: "inherit",
    stderr: "inherit",
  }).output();
  if (!out.success) throw new Error(`deno compile failed (exit ${out.code})`);
  return output;
}

if (import.meta.main) {
  try {
    const path = await compileBinary(Deno.args[0]);
    console.log(`compiled ${path}`);
  } catch (e) {
    console.error(`compile: ${(e as Error).message}`);
    Deno.exit(1);
  }
}
