/**
 * A real QEMU client: qemu-system-x86_64's pr-manager-helper object connects
 * to prhelperd (query-pr-managers says connected: true), and after the
 * daemon restarts on the same path, object-add of a second pr-manager-helper
 * connects again. QMP is driven over QEMU's stdin/stdout.
 */

import assert from "node:assert/strict";
import { exists, startDaemon, TempDir } from "./helpers/daemon.ts";

const QEMU = "/usr/bin/qemu-system-x86_64";
const REPLY_TIMEOUT_MS = 30_000;

type Json = Record<string, unknown>;

/** QEMU with QMP on stdio. */
class Qmp implements AsyncDisposable {
  readonly child: Deno.ChildProcess;
  readonly events: Json[] = [];
  readonly #writer: WritableStreamDefaultWriter<Uint8Array>;
  readonly #lines: AsyncIterator<string>;
  readonly #stderr: Promise<string>;
  #closed = false;

  constructor(args: string[]) {
    this.child = new Deno.Command(QEMU, {
      args: ["-machine", "none", "-nodefaults", "-display", "none", "-qmp", "stdio", ...args],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.#writer = this.child.stdin.getWriter();
    this.#lines = lines(this.child.stdout)[Symbol.asyncIterator]();
    this.#stderr = new Response(this.child.stderr).text();
  }

  /** Next JSON message from QEMU (events included). */
  async next(): Promise<Json> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`no QMP message within ${REPLY_TIMEOUT_MS} ms`)),
        REPLY_TIMEOUT_MS,
      );
    });
    try {
      const r = await Promise.race([this.#lines.next(), timeout]);
      if (r.done) throw new Error(`QEMU closed QMP; stderr: ${await this.#stderr}`);
      return JSON.parse(r.value);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Run a command; resolves to its `return` or `error` message (events are kept). */
  async execute(command: string, args?: Json): Promise<Json> {
    const msg = JSON.stringify(args ? { execute: command, arguments: args } : { execute: command });
    await this.#writer.write(new TextEncoder().encode(msg + "\n"));
    for (;;) {
      const m = await this.next();
      if ("event" in m) this.events.push(m);
      else return m;
    }
  }

  /** The greeting, then qmp_capabilities. */
  async handshake(): Promise<void> {
    const greeting = await this.next();
    assert.ok("QMP" in greeting, JSON.stringify(greeting));
    assert.deepEqual(await this.execute("qmp_capabilities"), { return: {} });
  }

  async [Symbol.asyncDispose](): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    try {
      await this.execute("quit");
    } catch { /* already gone */ }
    try {
      await this.#writer.close();
    } catch { /* closed */ }
    const killer = setTimeout(() => {
      try {
        this.child.kill("SIGKILL");
      } catch { /* exited */ }
    }, 10_000);
    await this.child.status;
    clearTimeout(killer);
    // drain what is left so no stream stays open
    while (!(await this.#lines.next()).done) { /* discard */ }
    await this.#stderr;
  }
}

async function* lines(stream: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  let buf = "";
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
    buf += chunk;
    let i;
    while ((i = buf.indexOf("\n")) >= 0) {
      const line = buf.slice(0, i).trim();
      buf = buf.slice(i + 1);
      if (line) yield line;
    }
  }
  if (buf.trim()) yield buf.trim();
}

function managers(reply: Json): Record<string, boolean> {
  const list = reply.return as { id: string; connected: boolean }[];
  assert.ok(Array.isArray(list), JSON.stringify(reply));
  return Object.fromEntries(list.map((m) => [m.id, m.connected]));
}

Deno.test({
  name: "qemu: pr-manager-helper connects; after a daemon restart object-add connects again",
  ignore: !exists(QEMU),
  async fn() {
    using dir = new TempDir();
    const path = dir.join("prh.sock");
    const first = await startDaemon({ socket: path, args: ["-v"] });
    let second;
    try {
      await using qemu = new Qmp(["-object", `pr-manager-helper,id=pr0,path=${path}`]);
      await qemu.handshake();
      assert.deepEqual(managers(await qemu.execute("query-pr-managers")), { pr0: true });
      assert.match(first.stderr(), new RegExp(`connection \\d+ accepted pid=${qemu.child.pid} `));

      // restart the daemon on the same path
      assert.equal((await first.stop("SIGTERM")).code, 0, first.stderr());
      assert.equal(exists(path), false);

      // with no helper listening, hotplug fails (as documented for QEMU)
      const refused = await qemu.execute("object-add", {
        "qom-type": "pr-manager-helper",
        id: "pr-none",
        path,
      });
      assert.ok("error" in refused, JSON.stringify(refused));

      second = await startDaemon({ socket: path, args: ["-v"] });
      assert.deepEqual(
        await qemu.execute("object-add", { "qom-type": "pr-manager-helper", id: "pr1", path }),
        { return: {} },
      );
      const after = managers(await qemu.execute("query-pr-managers"));
      assert.equal(after.pr1, true, JSON.stringify(after));
      assert.equal("pr-none" in after, false);
      assert.match(second.stderr(), new RegExp(`connection \\d+ accepted pid=${qemu.child.pid} `));
    } finally {
      await first[Symbol.asyncDispose]();
      if (second) {
        assert.equal((await second.stop("SIGTERM")).code, 0, second.stderr());
        await second[Symbol.asyncDispose]();
      }
    }
  },
});
