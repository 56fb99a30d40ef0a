/** Log formatting, the journald native entry, and the refusal throttle (pure parts of src/log.ts). */

import assert from "node:assert/strict";
import type { LogRecord } from "@logtape/logtape";
import { formatLine, journalEntry, LogThrottle } from "../src/log.ts";

function record(props: Record<string, unknown>, level: LogRecord["level"] = "info"): LogRecord {
  return {
    category: ["prhelperd", "audit"],
    level,
    message: ["audit: sa=", props.sa_name, ""],
    rawMessage: "audit: sa={sa_name}",
    timestamp: 0,
    properties: props,
  };
}

Deno.test("log: a line carries the priority prefix only in journal mode, and extra properties as key=value", () => {
  const r = record({ sa_name: "REGISTER", dev: "8:16", note: "two words" }, "warning");
  assert.equal(
    formatLine(r, true),
    '<4>prhelperd.audit: audit: sa=REGISTER dev=8:16 note="two words"',
  );
  assert.equal(
    formatLine(r, false),
    'WARNING prhelperd.audit: audit: sa=REGISTER dev=8:16 note="two words"',
  );
});

Deno.test("log: journald native entry has MESSAGE, PRIORITY and one PRHELPERD_ field per property", () => {
  const text = new TextDecoder().decode(
    journalEntry(record({ sa_name: "REGISTER", peer_uid: 107, "bad-key": "a\nb" }, "error")),
  );
  const lines = text.split("\n");
  assert.equal(lines.at(-1), "", "entry ends with a newline");
  assert.ok(lines.includes("PRIORITY=3"));
  assert.ok(lines.includes("SYSLOG_IDENTIFIER=prhelperd"));
  assert.ok(lines.includes("PRHELPERD_SA_NAME=REGISTER"));
  assert.ok(lines.includes("PRHELPERD_PEER_UID=107"));
  assert.ok(lines.includes("PRHELPERD_BAD_KEY=a b"), "names sanitised, values kept on one line");
  assert.ok(lines.some((l) => l.startsWith("MESSAGE=prhelperd.audit: audit: sa=REGISTER")));
  for (const l of lines.slice(0, -1)) assert.match(l, /^[A-Z0-9_]+=/);
});

Deno.test("log: the throttle passes a burst, then one line per interval with the count left out", () => {
  const t = new LogThrottle({ burst: 3, intervalMs: 1000 });
  const seen = [0, 1, 2, 3, 4, 5].map((i) => t.take("k", 10_000 + i));
  assert.deepEqual(seen.map((x) => x.log), [true, true, true, false, false, false]);
  const later = t.take("k", 11_100);
  assert.deepEqual(later, { log: true, suppressed: 3 });
  assert.equal(t.take("other", 11_100).log, true, "keys are independent");
});
