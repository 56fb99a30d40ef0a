/**
 * prhelperd: command-line entry point.
 *
 * @module
 */

// First, and only for its effect: SIGUSR1 ignored and blocked before any other
// module is evaluated (static imports run in order; see src/ignore_sigusr1.ts).
import "./src/ignore_sigusr1.ts";
import { parseArgs } from "./src/cli.ts";
import { runDaemon } from "./src/daemon.ts";
import { StartupError } from "./src/startup_error.ts";
import { DEFAULT_SOCKET, VERSION } from "./src/cli.ts";
import { clientMain } from "./src/commands/client_command.ts";
import { checkMain } from "./src/commands/check_command.ts";

async function main(args: string[]): Promise<number> {
  const parsed = parseArgs(args);
  if (parsed.kind === "exit") {
    if (parsed.stdout) Deno.stdout.writeSync(new TextEncoder().encode(parsed.stdout));
    if (parsed.stderr) Deno.stderr.writeSync(new TextEncoder().encode(parsed.stderr));
    return parsed.code;
  }
  if (parsed.kind === "tool") {
    // imported statically: a dynamic import would need npm metadata under --cached-only
    const tool = { defaultSocket: DEFAULT_SOCKET, version: VERSION };
    return await (parsed.tool === "client" ? clientMain : checkMain)(parsed.args, tool);
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
