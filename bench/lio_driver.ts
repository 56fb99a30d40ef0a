/**
 * The LIO part of the benchmark, run inside the VM rig (bench/lio_guest.sh):
 * latency of PR IN READ KEYS and PR OUT REGISTER AND IGNORE EXISTING KEY on
 * one real LIO LUN, three ways in the same run, interleaved in rounds:
 * through prhelperd, through qemu-pr-helper, and as raw SG_IO from this
 * process (synchronous ioctl on the calling thread, no helper).
 *
 *   deno run -A bench/lio_driver.ts --device /dev/sda --prhelperd SOCK
 *                                   --qemu SOCK [--iterations N] [--rounds R]
 *
 * Prints a Markdown table (p50/p99/mean in microseconds, ratios, goals:
 * prhelperd ≤ 1.05x qemu-pr-helper, ≤ 1.10x raw SG_IO).
 *
 * @module
 */

import { parseArgs } from "node:util";
import { sgIo } from "../ffi/sgio.ts";
import {
  closeFd,
  openDevice,
  PrHelperClient,
  PrInAction,
  prInCdb,
  PrOutAction,
  prOutCdb,
  prOutParameters,
} from "../mod.ts";
import { formatTable, type Row } from "./report.ts";
import { median } from "./startup.ts";

/** One way of running a command: returns the SCSI status. */
type Runner = (cdb: Uint8Array, payload: Uint8Array) => number;

const KEY = 0x5eed_0000_0000_0001n;

function helperRunner(client: PrHelperClient, fd: number): Runner {
  return (cdb, payload) => client.request(cdb, fd, payload).status;
}

function rawRunner(fd: number): Runner {
  const data = new Uint8Array(8192);
  return (cdb, payload) => {
    const out = cdb[0] === 0x5f;
    const r = sgIo(fd, {
      cdb: cdb.subarray(0, 10),
      direction: out ? "out" : "in",
      data: out ? payload : data,
      timeoutMs: 30_000,
    });
    if (r.kind === "errno") throw new Error(`raw SG_IO failed: errno ${r.errno}`);
    return r.hostStatus !== 0 ? 0x100 | r.hostStatus : r.status;
  };
}

function percentile(sorted: number[], q: number): number {
  return sorted[Math.floor((sorted.length - 1) * q)];
}

function main(args: string[]): number {
  const { values } = parseArgs({
    args,
    options: {
      device: { type: "string" },
      prhelperd: { type: "string" },
      qemu: { type: "string" },
      iterations: { type: "string", default: "200" },
      rounds: { type: "string", default: "5" },
    },
  });
  if (!values.device) {
    console.error("lio_driver: --device is required");
    return 2;
  }
  const iterations = Number(values.iterations);
  const rounds = Number(values.rounds);
  if (!Number.isInteger(iterations) || iterations < 1) {
    console.error(`lio_driver: --iterations "${values.iterations}" must be a positive integer`);
    return 2;
  }
  if (!Number.isInteger(rounds) || rounds < 1) {
    console.error(`lio_driver: --rounds "${values.rounds}" must be a positive integer`);
    return 2;
  }
  const fd = openDevice(values.device, { write: true });
  const clients: PrHelperClient[] = [];
  try {
    const ways: [string, Runner][] = [];
    for (const [name, sock] of [["prhelperd", values.prhelperd], ["qemu", values.qemu]]) {
      if (!sock) continue;
      const c = PrHelperClient.connect(sock, { timeoutMs: 60_000 });
      clients.push(c);
      ways.push([name!, helperRunner(c, fd)]);
    }
    ways.push(["raw", rawRunner(fd)]);
    const readKeys = prInCdb(PrInAction.READ_KEYS, 8192);
    const params = prOutParameters({ serviceActionKey: KEY });
    const register = prOutCdb(PrOutAction.REGISTER_AND_IGNORE_EXISTING_KEY, params.length);
    const commands: [string, Uint8Array, Uint8Array][] = [
      ["READ KEYS", readKeys, new Uint8Array(0)],
      ["REGISTER AND IGNORE EXISTING KEY", register, params],
    ];
    const lat: Record<string, number[]> = {};
    // one untimed pass of each, so the first-use costs do not count
    for (const [, run] of ways) for (const [, cdb, p] of commands) run(cdb, p);
    for (let round = 0; round < rounds; round++) {
      for (const [name, run] of ways) {
        for (const [cmd, cdb, p] of commands) {
          const key = `${name}/${cmd}`;
          const xs = lat[key] ??= [];
          for (let i = 0; i < iterations; i++) {
            const t0 = performance.now();
            const st = run(cdb, p);
            xs.push((performance.now() - t0) * 1000);
            if (st !== 0) throw new Error(`${name} ${cmd}: status 0x${st.toString(16)}, not GOOD`);
          }
        }
      }
    }
    // leave the LUN as we found it: unregister (REGISTER with key, SA key 0)
    ways[ways.length - 1][1](
      prOutCdb(PrOutAction.REGISTER, 24),
      prOutParameters({ key: KEY, serviceActionKey: 0n }),
    );
    const stat = (key: string, f: "p50" | "p99" | "mean"): number | null => {
      const xs = lat[key];
      if (!xs || xs.length === 0) return null;
      const s = [...xs].sort((a, b) => a - b);
      return f === "mean"
        ? s.reduce((a, b) => a + b, 0) / s.length
        : percentile(s, f === "p50" ? 0.5 : 0.99);
    };
    const table = (other: string, goal: number) => {
      const rows: Row[] = [];
      for (const [cmd] of commands) {
        for (const f of ["p50", "p99", "mean"] as const) {
          rows.push({
            metric: `${cmd}: ${f} us`,
            prhelperd: stat(`prhelperd/${cmd}`, f),
            qemu: stat(`${other}/${cmd}`, f),
            goal: f === "p50" ? { kind: "ratioAtMost", value: goal } : { kind: "none" },
            digits: 1,
          });
        }
      }
      return rows;
    };
    console.log(`LIO LUN ${values.device}: ${rounds} rounds x ${iterations} of each, interleaved`);
    console.log("");
    console.log(formatTable(table("qemu", 1.05)));
    console.log("");
    console.log(formatTable(table("raw", 1.10), { columns: ["prhelperd", "raw SG_IO"] }));
    const roundMedians = Object.keys(lat).map((k) => `${k}=${median(lat[k])!.toFixed(1)}`);
    console.log(`\nmedians (us): ${roundMedians.join(", ")}`);
    return 0;
  } finally {
    for (const c of clients) c.close();
    closeFd(fd);
  }
}

if (import.meta.main) {
  Deno.exit(main(Deno.args));
}
