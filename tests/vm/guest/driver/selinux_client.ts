// tests/vm/guest/driver/selinux_client.ts - a staged client for the SELinux
// guest tests 71-selinux-ro.sh (finding 14.1) and 72-selinux-xperm.sh (14.6).
// Runs under `runcon system_u:system_r:svirt_t:s0:cX,cY`, with
// --v8-flags=--jitless (no executable memory once SELinux enforces). Like
// svirt_client.ts (70-svirt.sh), plus the kernel's own answer to compare with.
//
//   selinux_client.ts SOCK OUTFILE GOFIFO JOB...
//     JOB = LABEL,DEVICE,reg,SAKEY   PR OUT REGISTER AND IGNORE EXISTING KEY via the helper
//         | LABEL,DEVICE,sgio        INQUIRY by SG_IO on DEVICE from this process itself:
//                                    the kernel's own ioctl decision for this domain
//         | pause                    write "paused N" and wait for a byte on GOFIFO
//
// Stage 1 (started while SELinux is permissive): connect to the helper (if it
// is not there: "RESULT connect CLOSED (...)", and every helper job reports
// CLOSED), open every DEVICE read-write, open OUTFILE and GOFIFO, write
// "ready", wait for a byte on GOFIFO. Stage 2: run the jobs; each writes
// "RESULT LABEL status=XX[ sense=K/AA/QQ]" (helper), "RESULT LABEL sgio=ok
// status=XX" or "RESULT LABEL sgio=ERRNO" (own ioctl), or "CLOSED"; then "done".
// Only files this process opened itself are used after stage 1.
import {
  closeFd,
  openDevice,
  PrHelperClient,
  PrOutAction,
  prOutCdb,
  prOutParameters,
} from "../../../../mod.ts";
import { sgIo } from "../../../../ffi/sgio.ts";
import { errnoName } from "../../../../ffi/errno.ts";

const [sock, outPath, goPath, ...jobs] = Deno.args;
const out = Deno.openSync(outPath, { write: true, create: true, truncate: true });
const enc = new TextEncoder();
const say = (line: string) => out.writeSync(enc.encode(line + "\n"));

const go = Deno.openSync(goPath, { read: true, write: true });
const goByte = new Uint8Array(1);
const waitGo = () => {
  while (go.readSync(goByte) !== 1) { /* EOF cannot happen: we hold a writer */ }
};

let client: PrHelperClient | null = null;
try {
  client = PrHelperClient.connect(sock, { timeoutMs: 60_000 });
} catch (e) {
  say(`RESULT connect CLOSED (${(e as Error).message})`);
}
const fds = new Map<string, number>();
for (const job of jobs) {
  const [, dev] = job.split(",");
  if (dev && !fds.has(dev)) fds.set(dev, openDevice(dev, { write: true }));
}
const hex2 = (n: number) => n.toString(16).padStart(2, "0");
say(`ready pid=${Deno.pid}`);
waitGo();

let pauses = 0;
for (const job of jobs) {
  if (job === "pause") {
    say(`paused ${++pauses}`);
    waitGo();
    continue;
  }
  const [label, dev, op, arg] = job.split(",");
  const fd = fds.get(dev)!;
  if (op === "sgio") {
    const data = new Uint8Array(96);
    const r = sgIo(fd, {
      cdb: new Uint8Array([0x12, 0, 0, 0, data.length, 0]),
      direction: "in",
      data,
      timeoutMs: 10_000,
    });
    say(
      r.kind === "errno"
        ? `RESULT ${label} sgio=${errnoName(r.errno)}`
        : `RESULT ${label} sgio=ok status=${hex2(r.status)}`,
    );
    continue;
  }
  if (client === null) {
    say(`RESULT ${label} CLOSED`);
    continue;
  }
  try {
    const p = prOutParameters({ serviceActionKey: BigInt(arg) });
    const r = client.request(
      prOutCdb(PrOutAction.REGISTER_AND_IGNORE_EXISTING_KEY, p.length),
      fd,
      p,
    );
    say(
      `RESULT ${label} status=${hex2(r.status)}` +
        (r.status === 2
          ? ` sense=${(r.sense[2] & 0xf).toString(16)}/${hex2(r.sense[12])}/${hex2(r.sense[13])}`
          : ""),
    );
  } catch (e) {
    client = null;
    say(`RESULT ${label} CLOSED (${(e as Error).message})`);
  }
}
for (const fd of fds.values()) closeFd(fd);
client?.close();
say("done");
out.close();
go.close();
Deno.exit(0);
