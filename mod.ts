/**
 * prhelperd's public library: the qemu-pr-helper wire codec, CDB and
 * parameter-list builders, sense helpers, and a QEMU-like client.
 *
 * ```ts
 * import { openDevice, PrHelperClient, PrInAction, prInCdb } from "./mod.ts";
 * const client = PrHelperClient.connect("/run/prhelperd.sock", { timeoutMs: 5000 });
 * const fd = openDevice("/dev/sda");
 * const reply = client.request(prInCdb(PrInAction.READ_KEYS, 8192), fd);
 * ```
 *
 * @module
 */

export * from "./src/wire.ts";
export * from "./src/cdb.ts";
export {
  checkCondition,
  fixedSense,
  formatSense,
  parseSense,
  Sense,
  type SenseCode,
  SenseKey,
  type SenseName,
  type Verdict,
} from "./src/sense.ts";
export {
  closeFd,
  type ConnectOptions,
  HelperConnectionError,
  openDevice,
  type OpenDeviceOptions,
  PrHelperClient,
  type PrReply,
  RawConnection,
} from "./src/client.ts";
