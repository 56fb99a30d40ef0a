// tests/vm/guest/driver/mpath.ts - runs in the VM (deno run -A).
//
//   mpath.ts SOCK DEVICE COMMAND...
//
// Sends PR requests for DEVICE (opened read-write) through a PR helper with
// mod.ts's client, one per COMMAND, in order, and prints one line each:
//   MP <command>: status 0xSS [sense K/AA/QQ] len N ms T
// Commands (numbers in C notation):
//   "out SA KEY SAKEY [TYPE] [FLAGS] [LEN]"  PR OUT with a 24-byte list (LEN: pad/cut)
//   "tids COUNT"                             REGISTER with SPEC_I_PT and COUNT SAS TransportIDs
//   "in SA [FILE]"                           PR IN, allocation length 8192; data -> FILE
// "announce" before the first request prints "MP sending" (for tests that
// start another client while this one waits).
import { closeFd, openDevice, PrHelperClient, prInCdb, prOutCdb } from "../../../../mod.ts";

const [sock, dev, ...commands] = Deno.args;
const c = PrHelperClient.connect(sock, { timeoutMs: 600_000 });
const fd = openDevice(dev, { write: true });
const hex = (n: number) => n.toString(16).padStart(2, "0");
let failed = false;
for (const command of commands) {
  const w = command.split(/\s+/);
  if (w[0] === "announce") {
    console.log("MP sending");
    continue;
  }
  let cdb: Uint8Array;
  let payload = new Uint8Array(0);
  let file: string | undefined;
  if (w[0] === "out") {
    const [sa, key, saKey, type, flags, len] = [1, 2, 3, 4, 5, 6].map((i) => w[i] ?? "0");
    payload = new Uint8Array(len === "0" ? 24 : Number(len));
    const base = new Uint8Array(24);
    const v = new DataView(base.buffer);
    v.setBigUint64(0, BigInt(key));
    v.setBigUint64(8, BigInt(saKey));
    base[20] = Number(flags);
    payload.set(base.subarray(0, Math.min(24, payload.length)));
    cdb = prOutCdb(Number(sa), payload.length, { type: Number(type) });
  } else if (w[0] === "tids") {
    const count = Number(w[1]);
    payload = new Uint8Array(28 + 24 * count);
    const v = new DataView(payload.buffer);
    v.setBigUint64(8, 0x7777n);
    payload[20] = 0x08; // SPEC_I_PT
    v.setUint32(24, 24 * count);
    for (let i = 0; i < count; i++) {
      payload[28 + 24 * i] = 0x06; // SAS
      v.setBigUint64(28 + 24 * i + 4, 0x5001405bbbbb0000n + BigInt(i));
    }
    cdb = prOutCdb(0, payload.length);
  } else if (w[0] === "in") {
    cdb = prInCdb(Number(w[1]), 8192);
    file = w[2];
  } else {
    console.log(`MP unknown command ${command}`);
    failed = true;
    continue;
  }
  const t0 = performance.now();
  const r = c.request(cdb, fd, payload);
  const ms = (performance.now() - t0).toFixed(1);
  const sense = r.status === 2
    ? ` sense ${(r.sense[2] & 15).toString(16)}/${hex(r.sense[12])}/${hex(r.sense[13])}`
    : "";
  console.log(`MP ${command}: status 0x${hex(r.status)}${sense} len ${r.data.length} ms ${ms}`);
  if (file) Deno.writeFileSync(file, r.data);
}
closeFd(fd);
c.close();
Deno.exit(failed ? 1 : 0);
