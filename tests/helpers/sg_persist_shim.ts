/**
 * The real sg_persist (sg3-utils) on a host without SCSI: run on /dev/null
 * with an LD_PRELOAD shim that answers its SG_IO ioctl with canned data-in
 * bytes, status and sense, and records the CDB and data-out it sent. Lets
 * tests compare prhelperd's tools with sg_persist byte for byte.
 * Needs gcc and sg_persist ({@linkcode HAVE_SHIM_TOOLS}).
 *
 * @module
 */

import assert from "node:assert/strict";

const SHIM_C = `#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <scsi/sg.h>
/* Answer SG_IO with SHIM_DATA's bytes, SHIM_STATUS and SHIM_SENSE (hex bytes);
 * append the CDB and any data-out to SHIM_OUT. */
int ioctl(int fd, unsigned long req, ...) {
  va_list ap; va_start(ap, req); void *arg = va_arg(ap, void *); va_end(ap);
  if (req == SG_IO) {
    sg_io_hdr_t *h = arg;
    const char *path = getenv("SHIM_DATA"), *st = getenv("SHIM_STATUS"), *sn = getenv("SHIM_SENSE");
    const char *outp = getenv("SHIM_OUT");
    size_t n = 0;
    if (outp) {
      FILE *o = fopen(outp, "ab");
      if (o) {
        fwrite(h->cmdp, 1, h->cmd_len, o);
        if (h->dxfer_direction == SG_DXFER_TO_DEV) fwrite(h->dxferp, 1, h->dxfer_len, o);
        fclose(o);
      }
    }
    if (path && h->dxfer_direction == SG_DXFER_FROM_DEV) {
      FILE *f = fopen(path, "rb");
      if (f) { n = fread(h->dxferp, 1, h->dxfer_len, f); fclose(f); }
    }
    h->status = st ? strtol(st, 0, 0) : 0;
    h->masked_status = h->status >> 1;
    h->host_status = 0; h->driver_status = 0; h->info = 0; h->sb_len_wr = 0;
    if (sn && *sn && h->sbp) {
      unsigned char *s = h->sbp; int k = 0; char *p = (char *)sn;
      while (*p && k < h->mx_sb_len) { s[k++] = strtol(p, &p, 16); while (*p == ' ') p++; }
      h->sb_len_wr = k; h->driver_status = 0x08; h->info = 1;
    }
    h->resid = h->dxfer_direction == SG_DXFER_FROM_DEV ? h->dxfer_len - n : 0;
    h->duration = 1;
    return 0;
  }
  int (*real)(int, unsigned long, ...) = dlsym(RTLD_NEXT, "ioctl");
  return real(fd, req, arg);
}
`;

function which(cmd: string): boolean {
  try {
    return new Deno.Command("sh", { args: ["-c", `command -v ${cmd}`], stdout: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
}

/** gcc and sg_persist are installed (else the shim tests are skipped). */
export const HAVE_SHIM_TOOLS: boolean = which("gcc") && which("sg_persist");

/** What one sg_persist run did. */
export interface ShimRun {
  code: number;
  /** stdout, one char per byte. */
  stdout: string;
  stderr: string;
  /** The CDB (10 bytes) and data-out of each SG_IO, concatenated. */
  sent: Uint8Array;
}

/** A compiled shim in a temp dir (removed at dispose). */
export class SgPersistShim {
  readonly dir: string = Deno.makeTempDirSync({ prefix: "prin-shim-" });
  readonly so: string = `${this.dir}/shim.so`;
  readonly data: string = `${this.dir}/data.bin`;
  readonly out: string = `${this.dir}/out.bin`;

  constructor() {
    Deno.writeTextFileSync(`${this.dir}/shim.c`, SHIM_C);
    const out = new Deno.Command("gcc", {
      args: ["-shared", "-fPIC", "-o", this.so, `${this.dir}/shim.c`, "-ldl"],
      stderr: "piped",
    }).outputSync();
    assert.ok(out.success, new TextDecoder().decode(out.stderr));
  }

  /** Run `sg_persist -n ARGS /dev/null` against canned bytes, status and sense (hex). */
  run(args: string[], data: Uint8Array, status = 0, sense = ""): ShimRun {
    Deno.writeFileSync(this.data, data);
    Deno.writeFileSync(this.out, new Uint8Array(0));
    const out = new Deno.Command("sg_persist", {
      args: ["-n", ...args, "/dev/null"],
      env: {
        LD_PRELOAD: this.so,
        SHIM_DATA: this.data,
        SHIM_OUT: this.out,
        SHIM_STATUS: String(status),
        SHIM_SENSE: sense,
      },
      stdout: "piped",
      stderr: "piped",
    }).outputSync();
    let stdout = "";
    for (const b of out.stdout) stdout += String.fromCharCode(b);
    return {
      code: out.code,
      stdout,
      stderr: new TextDecoder().decode(out.stderr),
      sent: Deno.readFileSync(this.out),
    };
  }

  [Symbol.dispose](): void {
    Deno.removeSync(this.dir, { recursive: true });
  }
}
