// tests/vm/guest/driver/lun_removal.ts - runs in the VM (deno run -A).
//
//   lun_removal.ts SOCK DEVICE_A DEVICE_B FIFO
//
// Holds an fd of DEVICE_A across the removal of that LUN path: prints READY,
// waits until FIFO is written (the test removes the LUN meanwhile), then sends
// PR IN and PR OUT on the held fd through the helper and prints the replies,
// then checks that the helper still serves DEVICE_B on a new connection.
import {
  closeFd,
  formatSense,
  openDevice,
  parseSense,
  PrHelperClient,
  PrInAction,
  prInCdb,
  PrOutAction,
  prOutCdb,
  prOutParameters,
  type PrReply,
} from "../../../../mod.ts";

const [sock, devA, devB, fifo] = Deno.args;
function show(what: string, r: PrReply): void {
  const sense = r.status === 2
    ? ` sense ${formatSense(parseSense(r.sense) ?? { key: 0, asc: 0, ascq: 0 })}`
    : "";
  console.log(
    `LR ${what}: status 0x${r.status.toString(16).padStart(2, "0")} sz ${r.data.length}${sense}`,
  );
}
const c = PrHelperClient.connect(sock, { timeoutMs: 60_000 });
const fd = openDevice(devA, { write: true });
show("before READ KEYS", c.request(prInCdb(PrInAction.READ_KEYS, 8192), fd));
console.log("READY");
Deno.readTextFileSync(fifo); // blocks until the test has removed the LUN
show("after READ KEYS", c.request(prInCdb(PrInAction.READ_KEYS, 8192), fd));
const p = prOutParameters({ serviceActionKey: 0x4242n });
show("after REGISTER", c.request(prOutCdb(PrOutAction.REGISTER, p.length), fd, p));
closeFd(fd);
c.close();
const c2 = PrHelperClient.connect(sock, { timeoutMs: 60_000 });
const fdB = openDevice(devB);
show("other path READ KEYS", c2.request(prInCdb(PrInAction.READ_KEYS, 8192), fdB));
closeFd(fdB);
c2.close();
