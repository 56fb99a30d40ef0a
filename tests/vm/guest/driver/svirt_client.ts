// tests/vm/guest/driver/svirt_client.ts - a staged PR helper client for the
// SELinux (sVirt) test (guest/tests/70-svirt.sh). Runs under
// `runcon system_u:system_r:svirt_t:s0:cX,cY`, with --v8-flags=--jitless
// (no executable memory is allocated once SELinux enforces).
//
//   svirt_client.ts SOCK OUTFILE GOFIFO JOB...
//     JOB = LABEL,DEVICE,reg,SAKEY   PR OUT REGISTER AND IGNORE EXISTING KEY
//         | LABEL,DEVICE,keys        PR IN READ KEYS
//         | pause                    write "paused N" and wait for a byte on GOFIFO
//
// Stage 1 (started while SELinux is permissive): connect to the helper, do
// the greeting, open every DEVICE read-write, open OUTFILE and the FIFO
// GOFIFO (read-write, so the open does not block), write "ready", wait for a
// byte on GOFIFO (`echo > GOFIFO`; not a signal: Deno starts its inspector on
// SIGUSR1). Stage 2 (the test has run `setenforce 1` or not): run the
// jobs; each writes "RESULT LABEL status=XX sense=K/AA/QQ" to OUTFILE (sense
// only for CHECK CONDITION, "CLOSED" if the helper closed the connection);
// then "done". Only files this process opened itself are used after stage 1:
// SELinux revalidates inherited fds (stdout) against the new domain.
import {
  closeFd,
  openDevice,
  PrHelperClient,
  PrInAction,
  prInCdb,
  PrOutAction,
  prOutCdb,
  prOutParameters,
} from "../../../../mod.ts";

const [sock, outPath, goPath, ...jobs] = Deno.args;
const out = Deno.openSync(outPath, { write: true, create: true, truncate: true });
const enc = new TextEncoder();
const say = (line: string) => out.writeSync(enc.encode(line + "\n"));

const go = Deno.openSync(goPath, { read: true, write: true });
const goByte = new Uint8Array(1);
const waitGo = () => {
  while (go.readSync(goByte) !== 1) { /* EOF cannot happen: we hold a writer */ }
};

const client = PrHelperClient.connect(sock, { timeoutMs: 60_000 });
const fds = new Map<string, number>();
for (const job of jobs) {
  const [, dev] = job.split(",");
  if (dev && !fds.has(dev)) fds.set(dev, openDevice(dev, { write: true }));
}
const hex2 = (n: number) => n.toString(16).padStart(2, "0");
say(`ready pid=${Deno.pid}`);
waitGo();

let pauses = 0;
let closed = false;
for (const job of jobs) {
  if (job === "pause") {
    say(`paused ${++pauses}`);
    waitGo();
    continue;
  }
  const [label, dev, op, arg] = job.split(",");
  if (closed) {
    say(`RESULT ${label} CLOSED`);
    continue;
  }
  try {
    const fd = fds.get(dev)!;
    let r;
    if (op === "reg") {
      const p = prOutParameters({ serviceActionKey: BigInt(arg) });
      r = client.request(
        prOutCdb(PrOutAction.REGISTER_AND_IGNORE_EXISTING_KEY, p.length),
        fd,
        p,
      );
    } else {
      r = client.request(prInCdb(PrInAction.READ_KEYS, 1024), fd);
    }
    say(
      `RESULT ${label} status=${hex2(r.status)}` +
        (r.status === 2
          ? ` sense=${(r.sense[2] & 0xf).toString(16)}/${hex2(r.sense[12])}/${hex2(r.sense[13])}`
          : ""),
    );
  } catch (e) {
    closed = true;
    say(`RESULT ${label} CLOSED (${(e as Error).message})`);
  }
}
for (const fd of fds.values()) closeFd(fd);
client.close();
say("done");
out.close();
go.close();
Deno.exit(0);
