/**
 * Worker entry of the fd closer (src/fd_closer.ts; the ring is in
 * src/fd_closer_ring.ts): takes the fds the event loop handed over, in order,
 * and closes each with close(2). A close that blocks (a FUSE FLUSH that is
 * never answered, a lingering socket) blocks only this thread. Exits when
 * told to stop and the ring is empty.
 *
 * @module
 */

import { closeFd } from "../ffi/files.ts";
import { ringStopped, ringTake, RingWord } from "./fd_closer_ring.ts";

/// <reference lib="deno.worker" />

function serve(words: Int32Array): void {
  for (;;) {
    const next = ringTake(words);
    if (next.fd === null) {
      if (ringStopped(words)) return;
      Atomics.wait(words, RingWord.SEQ, next.seq);
      continue;
    }
    try {
      closeFd(next.fd);
    } catch {
      // EBADF would be a bug elsewhere; nothing to do here
    }
  }
}

self.onmessage = (event: MessageEvent<SharedArrayBuffer>) => {
  self.onmessage = null;
  self.postMessage("ready");
  serve(new Int32Array(event.data));
  self.close();
};
