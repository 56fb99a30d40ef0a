import assert from "node:assert/strict";
import {
  formatNotify,
  Notifier,
  notifyConfig,
  statusText,
  watchdogPeriodMs,
} from "../src/sd_notify.ts";
import { closeFd, readFd } from "../ffi/files.ts";
import { bindUnix, unixSocket } from "../ffi/sockets.ts";

function env(vars: Record<string, string>) {
  return { get: (k: string) => vars[k] };
}

Deno.test("sd_notify: formatNotify joins KEY=value lines", () => {
  assert.equal(formatNotify({ READY: 1, STATUS: "listening" }), "READY=1\nSTATUS=listening");
  assert.throws(() => formatNotify({ STATUS: "a\nb" }), RangeError);
  assert.throws(() => formatNotify({ "bad key": 1 }), RangeError);
});

Deno.test("sd_notify: statusText", () => {
  assert.equal(
    statusText({ connections: 1, requests: 0 }),
    "1 connection open, 0 requests served",
  );
  assert.equal(
    statusText({ connections: 2, requests: 1, accepted: 7 }),
    "2 connections open, 1 request served, 7 accepted in total",
  );
});

Deno.test("sd_notify: notifyConfig follows sd_watchdog_enabled rules", () => {
  assert.deepEqual(notifyConfig(env({}), 10), {
    socket: null,
    watchdogUsec: null,
    ignored: null,
  });
  assert.deepEqual(
    notifyConfig(env({ NOTIFY_SOCKET: "@abc", WATCHDOG_USEC: "4000000" }), 10),
    { socket: "@abc", watchdogUsec: 4000000, ignored: null },
  );
  assert.equal(
    notifyConfig(env({ NOTIFY_SOCKET: "/run/n", WATCHDOG_USEC: "4000000", WATCHDOG_PID: "11" }), 10)
      .watchdogUsec,
    null,
  );
  assert.equal(
    notifyConfig(env({ NOTIFY_SOCKET: "/run/n", WATCHDOG_USEC: "9", WATCHDOG_PID: "10" }), 10)
      .watchdogUsec,
    9,
  );
  assert.equal(notifyConfig(env({ NOTIFY_SOCKET: "relative" }), 1).socket, null);
  assert.equal(notifyConfig(env({ WATCHDOG_USEC: "x" }), 1).watchdogUsec, null);
  assert.equal(watchdogPeriodMs(4_000_000), 2000);
  assert.equal(watchdogPeriodMs(1), 1);
});

Deno.test("sd_notify: a NOTIFY_SOCKET of another main process (SYSTEMD_EXEC_PID) is ignored", () => {
  const inherited = notifyConfig(
    env({ NOTIFY_SOCKET: "/run/systemd/notify", SYSTEMD_EXEC_PID: "700", WATCHDOG_USEC: "9" }),
    812,
  );
  assert.equal(inherited.socket, null);
  assert.equal(inherited.watchdogUsec, null);
  assert.match(inherited.ignored ?? "", /SYSTEMD_EXEC_PID "700".*pid 812/);
  assert.equal(new Notifier(inherited).enabled, false);
  const own = notifyConfig(
    env({ NOTIFY_SOCKET: "/run/systemd/notify", SYSTEMD_EXEC_PID: "812" }),
    812,
  );
  assert.equal(own.socket, "/run/systemd/notify");
  assert.equal(own.ignored, null);
  // an older systemd (before v248) or another manager sets no SYSTEMD_EXEC_PID
  assert.equal(notifyConfig(env({ NOTIFY_SOCKET: "@n" }), 812).socket, "@n");
  assert.equal(notifyConfig(env({ NOTIFY_SOCKET: "@n", SYSTEMD_EXEC_PID: "" }), 812).socket, "@n");
});

Deno.test("sd_notify: Notifier is a no-op without NOTIFY_SOCKET", () => {
  const n = new Notifier({ socket: null, watchdogUsec: 1000 });
  assert.equal(n.enabled, false);
  assert.equal(n.ready(), false);
  assert.equal(n.startWatchdog(), false);
  n.close();
});

Deno.test("sd_notify: datagrams reach the notify socket (READY, STATUS, WATCHDOG, STOPPING)", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/notify`;
  const rx = unixSocket({ datagram: true, nonblocking: true });
  bindUnix(rx, path);
  const got: string[] = [];
  const drain = () => {
    const buf = new Uint8Array(4096);
    for (;;) {
      const n = readFd(rx, buf);
      if (n === null) break;
      got.push(new TextDecoder().decode(buf.subarray(0, n)));
    }
  };
  const n = new Notifier({ socket: path, watchdogUsec: 40_000 }); // ping every 20 ms
  try {
    assert.ok(n.ready());
    assert.ok(n.counters({ connections: 1, requests: 2 }));
    assert.equal(n.counters({ connections: 1, requests: 2 }), false, "same status not resent");
    assert.ok(n.startWatchdog());
    await new Promise((r) => setTimeout(r, 110));
    assert.ok(n.stopping());
    drain();
  } finally {
    n.close();
    closeFd(rx);
    await Deno.remove(dir, { recursive: true });
  }
  assert.equal(got[0], "READY=1\nSTATUS=listening");
  assert.equal(got[1], "STATUS=1 connection open, 2 requests served");
  const pings = got.filter((m) => m === "WATCHDOG=1").length;
  assert.ok(pings >= 3, `expected >= 3 watchdog pings, got ${pings}`);
  assert.equal(got.at(-1), "STOPPING=1\nSTATUS=stopping");
});

Deno.test("sd_notify: a send failure is reported as false, not thrown", () => {
  const n = new Notifier({
    socket: `@prhelperd-test-nobody-listens-${Deno.pid}`,
    watchdogUsec: null,
  });
  try {
    assert.equal(n.ready(), false);
  } finally {
    n.close();
  }
});
