/**
 * prhelperd: command-line entry point.
 *
 * @module
 */

import { parseArgs } from "./src/cli.ts";
import { runDaemon } from "./src/daemon.ts";
import { StartupError } from "./src/listener.ts";

async function main(args: string[]): Promise<number> {
  const parsed = parseArgs(args);
  if (parsed.kind === "exit") {
    if (parsed.stdout) Deno.stdout.writeSync(new TextEncoder().encode(parsed.stdout));
    if (parsed.stderr) Deno.stderr.writeSync(new TextEncoder().encode(parsed.stderr));
    return parsed.code;
  }
  try {
    return await runDaemon(parsed.options);
  } catch (e) {
    if (e instanceof StartupError) {
      Deno.stderr.writeSync(new TextEncoder().encode(`prhelperd: ${e.message}\n`));
      return 1;
    }
    throw e;
  }
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
