/**
 * Issue 13 (2): every struct size and offset ffi/ uses (ffi/layouts.ts) is
 * what the C headers of this system say. A C program, generated from the
 * tables, prints sizeof/offsetof for each entry; any difference fails.
 */
import assert from "node:assert/strict";
import {
  AV_DECISION,
  CAP,
  CMSGHDR,
  FLOCK,
  GROUP,
  IOVEC,
  MSGHDR,
  PASSWD,
  POLLFD,
  PR_CLEAR,
  PR_PREEMPT,
  PR_REGISTRATION,
  PR_RESERVATION,
  RLIMIT,
  SG_IO_HDR,
  SIGACTION,
  SIGSET,
  SOCKADDR_UN,
  SPAWNATTR_ROOM,
  STAT,
  STATFS,
  STATX,
  UCRED,
} from "../ffi/layouts.ts";
import { TempDir } from "./helpers/daemon.ts";

/** table name in ffi/layouts.ts -> [C type, table] for tables whose keys are C fields. */
const STRUCTS: Record<string, [string, Record<string, number>]> = {
  SG_IO_HDR: ["struct sg_io_hdr", SG_IO_HDR],
  MSGHDR: ["struct msghdr", MSGHDR],
  IOVEC: ["struct iovec", IOVEC],
  CMSGHDR: ["struct cmsghdr", CMSGHDR],
  SOCKADDR_UN: ["struct sockaddr_un", SOCKADDR_UN],
  UCRED: ["struct ucred", UCRED],
  POLLFD: ["struct pollfd", POLLFD],
  RLIMIT: ["struct rlimit", RLIMIT],
  FLOCK: ["struct flock", FLOCK],
  SIGACTION: ["struct sigaction", SIGACTION],
  STAT: ["struct stat", STAT],
  STATX: ["struct statx", STATX],
  AV_DECISION: ["struct av_decision", AV_DECISION],
  PASSWD: ["struct passwd", PASSWD],
  GROUP: ["struct group", GROUP],
  STATFS: ["struct statfs", STATFS],
  SIGSET: ["sigset_t", SIGSET],
  PR_REGISTRATION: ["struct pr_registration", PR_REGISTRATION],
  PR_RESERVATION: ["struct pr_reservation", PR_RESERVATION],
  PR_PREEMPT: ["struct pr_preempt", PR_PREEMPT],
  PR_CLEAR: ["struct pr_clear", PR_CLEAR],
};

/** Keys that are not a field's offset, and the C expression for each. */
function special(table: string, key: string, type: string): string | null {
  if (key === "size") return `sizeof(${type})`;
  if (table === "CMSGHDR" && key === "data") return "CMSG_LEN(0)";
  if (table === "STAT" && key === "nlinkBytes") return `sizeof(((${type} *)0)->st_nlink)`;
  return null;
}

function cProgram(): string {
  const lines: string[] = [];
  const out = (name: string, expr: string) =>
    lines.push(`  printf("%s %zu\\n", "${name}", (size_t)(${expr}));`);
  for (const [table, [type, fields]] of Object.entries(STRUCTS)) {
    for (const key of Object.keys(fields)) {
      out(`${table}.${key}`, special(table, key, type) ?? `offsetof(${type}, ${key})`);
    }
  }
  out("CAP.headerSize", "sizeof(struct __user_cap_header_struct)");
  out("CAP.dataSize", "sizeof(struct __user_cap_data_struct)");
  out("SPAWNATTR", "sizeof(posix_spawnattr_t)");
  return `#define _GNU_SOURCE
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <linux/pr.h>
#include <poll.h>
#include <pwd.h>
#include <scsi/sg.h>
#include <selinux/selinux.h>
#include <signal.h>
#include <spawn.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/vfs.h>
int main(void) {
${lines.join("\n")}
  return 0;
}
`;
}

function expected(): Map<string, number> {
  const m = new Map<string, number>();
  for (const [table, [, fields]] of Object.entries(STRUCTS)) {
    for (const [key, value] of Object.entries(fields)) m.set(`${table}.${key}`, value);
  }
  m.set("CAP.headerSize", CAP.headerSize);
  m.set("CAP.dataSize", CAP.dataSize);
  return m;
}

Deno.test("ffi layouts: every size and offset matches the system's C headers", () => {
  using dir = new TempDir();
  const src = dir.join("layouts.c");
  const bin = dir.join("layouts");
  Deno.writeTextFileSync(src, cProgram());
  const cc = new Deno.Command("gcc", { args: ["-o", bin, src] }).outputSync();
  assert.ok(cc.success, `gcc: ${new TextDecoder().decode(cc.stderr)}`);
  const run = new Deno.Command(bin).outputSync();
  assert.ok(run.success);
  const got = new Map(
    new TextDecoder().decode(run.stdout).trim().split("\n").map((l) => {
      const [k, v] = l.split(" ");
      return [k, Number(v)] as const;
    }),
  );
  const want = expected();
  const wrong: string[] = [];
  for (const [k, v] of want) {
    if (got.get(k) !== v) wrong.push(`${k}: ffi/layouts.ts says ${v}, the headers ${got.get(k)}`);
  }
  assert.deepEqual(wrong, []);
  // the room ffi/spawn.ts gives posix_spawn_attr_t holds the real thing
  const spawn = got.get("SPAWNATTR") ?? Infinity;
  assert.ok(spawn <= SPAWNATTR_ROOM, `posix_spawnattr_t is ${spawn} bytes`);
  assert.equal(got.size, want.size + 1, "every table entry was printed");
});
