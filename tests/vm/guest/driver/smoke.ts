// tests/vm/guest/driver/smoke.ts - runs in the VM (deno run -A).
//
//   smoke.ts SOCK DEVICE KEY
//
// Takes a reservation through a PR helper with mod.ts's client and builders:
// REGISTER KEY, RESERVE Write Exclusive, READ RESERVATION; prints what the
// device reports.  Used by the smoke test and by `deno task demo`-style runs.
import {
  closeFd,
  openDevice,
  PrHelperClient,
  PrInAction,
  prInCdb,
  PrOutAction,
  prOutCdb,
  prOutParameters,
  PrType,
} from "../../../../mod.ts";

const [sock, dev, keyArg] = Deno.args;
const key = BigInt(keyArg ?? "0x5151");
const t0 = performance.now();
const c = PrHelperClient.connect(sock, { timeoutMs: 30_000 });
const fd = openDevice(dev, { write: true });
const show = (what: string, r: { status: number; sense: Uint8Array; data: Uint8Array }) =>
  console.log(
    `SMOKE ${what}: status 0x${
      r.status.toString(16).padStart(2, "0")
    }, ${r.data.length} data bytes` +
      (r.status === 2
        ? `, sense ${(r.sense[2] & 15).toString(16)}/${r.sense[12].toString(16)}/${
          r.sense[13].toString(16)
        }`
        : ""),
  );
let p = prOutParameters({ serviceActionKey: key });
let r = c.request(prOutCdb(PrOutAction.REGISTER, p.length), fd, p);
show("REGISTER", r);
p = prOutParameters({ key });
r = c.request(prOutCdb(PrOutAction.RESERVE, p.length, { type: PrType.WRITE_EXCLUSIVE }), fd, p);
show("RESERVE type 1", r);
r = c.request(prInCdb(PrInAction.READ_RESERVATION, 8192), fd);
show("READ RESERVATION", r);
const v = new DataView(r.data.buffer, r.data.byteOffset, r.data.byteLength);
if (r.status === 0 && r.data.length >= 24) {
  console.log(
    `SMOKE reservation: generation=${v.getUint32(0)} key=0x${v.getBigUint64(8).toString(16)} type=${
      r.data[21] & 15
    }`,
  );
}
closeFd(fd);
c.close();
console.log(`SMOKE client time ${(performance.now() - t0).toFixed(0)} ms`);
