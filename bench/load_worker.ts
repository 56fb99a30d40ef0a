/**
 * One Worker of the Deno load client (bench/client_load.ts): connects its
 * share of the connections, then drives each in lock-step with synchronous
 * FFI, waiting with poll(2) on the ones that have a request in flight.
 *
 * @module
 */

/// <reference lib="deno.worker" />

import { closeFd, O_RDWR, openPath } from "../ffi/files.ts";
import { POLLIN, PollSet } from "../ffi/poll.ts";
import { connectUnix, recvWithFds, sendWithFds, unixSocket } from "../ffi/sockets.ts";
import { MAX_DATA_LEN, REPLY_HEADER_LEN } from "../src/wire.ts";
import type { WorkerReply, WorkerStart } from "./client_load.ts";

const HDR = REPLY_HEADER_LEN;

function readExactly(fd: number, n: number): Uint8Array {
  const out = new Uint8Array(n);
  let have = 0;
  while (have < n) {
    const r = recvWithFds(fd, out, { offset: have, length: n - have });
    if (r === null) continue;
    if (r.bytes === 0) throw new Error(`greeting: connection ${fd} closed`);
    have += r.bytes;
  }
  return out;
}

function run(msg: WorkerStart): WorkerReply {
  const counters = new Int32Array(msg.shared);
  const dev = openPath("/dev/null", O_RDWR);
  const fds: number[] = [];
  try {
    for (let i = 0; i < msg.connections; i++) {
      const fd = unixSocket();
      fds.push(fd);
      connectUnix(fd, msg.socket);
      readExactly(fd, 4);
      sendWithFds(fd, new Uint8Array(4));
    }
    postMessage({ kind: "ready" } satisfies WorkerReply);
    const cdb = new Uint8Array(16);
    cdb[0] = 0x5e;
    cdb[7] = 0x20;
    const bufs = fds.map(() => new Uint8Array(HDR + MAX_DATA_LEN));
    const have = fds.map(() => 0);
    const need = fds.map(() => HDR);
    const sentAt = fds.map(() => 0);
    const live = fds.map(() => true);
    const status: Record<string, number> = {};
    const lat: number[] = [];
    const origin = performance.timeOrigin;
    while (origin + performance.now() < msg.startAt) { /* spin until the common start */ }
    const tMeasure = msg.startAt + msg.warmupMs - origin;
    const tEnd = tMeasure + msg.durationMs;
    let errors = 0;
    let firstMs = Infinity;
    let lastMs = 0;
    let nLive = fds.length;
    let stopping = false;
    const fdIndex = new Map(fds.map((fd, i) => [fd, i]));
    for (let i = 0; i < fds.length; i++) {
      sentAt[i] = performance.now();
      sendWithFds(fds[i], cdb, { fds: [dev] });
    }
    const ps = new PollSet(fds.length);
    while (nLive > 0) {
      ps.clear();
      for (let i = 0; i < fds.length; i++) if (live[i]) ps.add(fds[i], POLLIN);
      if (ps.pollSync(1000) === 0) continue;
      for (let k = 0; k < ps.size; k++) {
        if (ps.revents(k) === 0) continue;
        const i = fdIndex.get(ps.fd(k))!;
        const r = recvWithFds(fds[i], bufs[i], {
          offset: have[i],
          length: need[i] - have[i],
          dontWait: true,
        });
        if (r === null) continue;
        if (r.bytes === 0) {
          errors++;
          live[i] = false;
          nLive--;
          continue;
        }
        have[i] += r.bytes;
        if (have[i] === HDR && need[i] === HDR) {
          const b = bufs[i];
          const sz = ((b[4] << 24) | (b[5] << 16) | (b[6] << 8) | b[7]) >>> 0;
          if (sz > MAX_DATA_LEN) throw new Error(`reply sz ${sz} exceeds ${MAX_DATA_LEN}`);
          need[i] = HDR + sz;
        }
        if (have[i] < need[i]) continue;
        const t = performance.now();
        const st = String(bufs[i][3]);
        status[st] = (status[st] ?? 0) + 1;
        const total = Atomics.add(counters, 0, 1) + 1;
        if (sentAt[i] >= tMeasure && (msg.maxRequests > 0 || t <= tEnd)) {
          lat.push((t - sentAt[i]) * 1000);
          firstMs = Math.min(firstMs, sentAt[i]);
          lastMs = t;
        }
        if (msg.maxRequests > 0 ? total >= msg.maxRequests : t > tEnd) stopping = true;
        if (stopping || Atomics.load(counters, 1) !== 0) {
          live[i] = false;
          nLive--;
          continue;
        }
        have[i] = 0;
        need[i] = HDR;
        sentAt[i] = performance.now();
        sendWithFds(fds[i], cdb, { fds: [dev] });
      }
    }
    return {
      kind: "done",
      latenciesUs: Float64Array.from(lat),
      errors,
      status,
      firstMs: firstMs + origin,
      lastMs: lastMs + origin,
    };
  } finally {
    for (const fd of fds) closeFd(fd);
    closeFd(dev);
  }
}

self.onmessage = (e: MessageEvent<WorkerStart>) => {
  let reply: WorkerReply;
  try {
    reply = run(e.data);
  } catch (err) {
    reply = { kind: "error", message: String(err) };
  }
  postMessage(reply);
};
