/**
 * Finding 14.2 (O_PATH fds), against a running daemon: an fd opened O_PATH
 * names a node but allows no I/O on it, and needs no read permission on the
 * node; the helper must not act for it. PR IN and PR OUT with an O_PATH fd
 * (of /dev/null, of a regular file) get the answer any non-device fd gets,
 * CHECK CONDITION 05/20/00, and the refusal names O_PATH as the reason (before
 * the fix the O_PATH flag was not looked at: the fd passed as a "read-only"
 * fd of whatever it named). The connection stays usable.
 */

import assert from "node:assert/strict";
import { closeFd, O_PATH, openPath } from "../ffi/files.ts";
import { startDaemon, type TestDaemon, waitFor } from "./helpers/daemon.ts";
import {
  connectGreeted,
  describe,
  FdSet,
  PR_IN,
  PR_OUT,
  roundTrip,
  wireCdb,
} from "./helpers/protocol.ts";

const REFUSED = "status=0x02 sz=0 sense=05/20/00";

function waitLog(d: TestDaemon, re: RegExp): Promise<string> {
  return waitFor(() => d.stderr().match(re)?.[0], { what: `log line ${re}` });
}

Deno.test("daemon (14.2): an O_PATH fd is refused like a non-device fd, naming O_PATH", async () => {
  await using d = await startDaemon();
  using fds = new FdSet(d.dir.path);
  const file = d.dir.join("plain");
  Deno.writeTextFileSync(file, "not a disk\n");
  const paths = [openPath("/dev/null", O_PATH), openPath(file, O_PATH)];
  const { conn } = connectGreeted(d.socket);
  try {
    for (const fd of paths) {
      assert.equal(describe(roundTrip(conn, wireCdb(PR_IN, 8192), [fd])), REFUSED, "PR IN");
      assert.equal(
        describe(roundTrip(conn, wireCdb(PR_OUT, 24), [fd], new Uint8Array(24))),
        REFUSED,
        "PR OUT",
      );
    }
    await waitLog(d, /refused request: fd is an O_PATH fd \(of a char file\)/);
    await waitLog(d, /refused request: fd is an O_PATH fd \(of a regular file\)/);
    // the same connection goes on, with an ordinary fd
    assert.equal(
      describe(roundTrip(conn, wireCdb(PR_IN, 8192), [fds.get("/dev/null")])),
      REFUSED,
    );
    assert.match(d.stderr(), /refused request: character device 1:3 is not a SCSI generic/);
  } finally {
    conn.close();
    for (const fd of paths) closeFd(fd);
  }
  assert.equal((await d.stop()).code, 0, d.stderr());
});
