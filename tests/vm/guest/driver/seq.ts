// tests/vm/guest/driver/seq.ts - runs in the VM (deno run -A).
//
//   seq.ts SOCK SEQFILE TRANSCRIPT
//
// The Deno twin of `rigtool prh-seq` (tests/vm/src/rigtool.c): runs a
// sequence file (tests/vm/guest/seq/README.md) through a PR helper with
// mod.ts's PrHelperClient, checks the expected status/sense/sz, runs the
// shell checks (sg_persist from the other path, sg_raw WRITE enforcement),
// and writes a transcript in exactly rigtool's format, so that
// `cmp` of the two transcripts is the differential.  It also cross-checks
// mod.ts's CDB and parameter-list builders against the sequence's raw hex.
// Exit status: 0 all expectations met, 1 some failed, 2 usage/setup error.
import {
  closeFd,
  HelperConnectionError,
  openDevice,
  PrHelperClient,
  prInCdb,
  prOutCdb,
  prOutParameters,
  registerAndMoveParameters,
} from "../../../../mod.ts";

const [sock, seqPath, trPath] = Deno.args;
if (!sock || !seqPath || !trPath) {
  console.error("usage: seq.ts SOCK SEQFILE TRANSCRIPT");
  Deno.exit(2);
}

const hex = (b: Uint8Array) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
function parseHex(s: string): Uint8Array {
  const h = s.replace(/[_:.]/g, "");
  if (h.length % 2 !== 0 || /[^0-9a-fA-F]/.test(h)) throw new Error(`bad hex: ${s}`);
  const out = new Uint8Array(h.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(h.slice(2 * i, 2 * i + 2), 16);
  return out;
}
const eq = (a: Uint8Array, b: Uint8Array) => a.length === b.length && a.every((x, i) => x === b[i]);

const tr: string[] = [];
const flushTr = () => Deno.writeTextFileSync(trPath, tr.length ? tr.join("\n") + "\n" : "");
let client: PrHelperClient | undefined;
let label = "-";
let fails = 0;
let nreq = 0;
const fail = (lineno: number, msg: string) => {
  fails++;
  console.log(`CHECK-FAIL line ${lineno} [${label}]: ${msg}`);
};

// Builder cross-check: the sequence's hand-written hex must be what mod.ts's
// builders produce for the same fields (only for well-formed requests).
function builderCheck(lineno: number, cdb: Uint8Array, param: Uint8Array): void {
  const sa = cdb[1] & 0x1f;
  const len = (cdb[7] << 8) | cdb[8];
  let want: Uint8Array | undefined;
  let wantParam: Uint8Array | undefined;
  // deliberately odd CDBs (reserved bits, control byte, bytes 10-15) are
  // beyond what the builders make
  if (cdb.subarray(9).some((x) => x !== 0) || (cdb[1] & 0xe0) !== 0) return;
  if (cdb[0] === 0x5e && sa <= 3) {
    want = prInCdb(sa, len);
  } else if (cdb[0] === 0x5f && sa <= 7 && cdb[5] === 0 && cdb[6] === 0) {
    want = prOutCdb(sa, len, { scope: cdb[2] >> 4, type: cdb[2] & 0xf });
    const v = new DataView(param.buffer, param.byteOffset, param.byteLength);
    if (sa === 7 && len >= 24) {
      const tidLen = v.getUint32(20);
      wantParam = registerAndMoveParameters({
        key: v.getBigUint64(0),
        serviceActionKey: v.getBigUint64(8),
        unregister: (param[17] & 2) !== 0,
        aptpl: (param[17] & 1) !== 0,
        relativeTargetPort: v.getUint16(18),
        transportId: param.slice(24, 24 + tidLen),
      });
    } else if (sa !== 7 && len === 24) {
      wantParam = prOutParameters({
        key: v.getBigUint64(0),
        serviceActionKey: v.getBigUint64(8),
        flags: param[20],
      });
    }
  }
  if (want && !eq(want, cdb)) fail(lineno, `builder CDB ${hex(want)} != sequence CDB ${hex(cdb)}`);
  if (wantParam && !eq(wantParam, param)) {
    fail(lineno, `builder parameters ${hex(wantParam)} != sequence ${hex(param)}`);
  }
}

const lines = Deno.readTextFileSync(seqPath).split("\n");
for (let i = 0; i < lines.length; i++) {
  const lineno = i + 1;
  const l = lines[i].trim();
  if (!l || l.startsWith("#")) continue;
  if (l.startsWith("@")) {
    label = l.slice(1).trim();
    tr.push(`@ ${label}`);
    console.log(`@ ${label}`);
    continue;
  }
  if (l === "reconnect") {
    client?.close();
    client = undefined;
    tr.push("reconnect");
    continue;
  }
  if (l.startsWith("!")) {
    const m = /^!\s*(\S+)\s+(.*)$/.exec(l);
    if (!m) throw new Error(`line ${lineno}: bad check`);
    const [, want, cmd] = m;
    const r = new Deno.Command("sh", { args: ["-c", cmd], stdout: "inherit", stderr: "inherit" })
      .outputSync();
    const rc = r.signal ? 128 : r.code;
    const ok = want === "*" || Number(want) === rc;
    console.log(`  ! rc=${rc} ${ok ? "ok" : "CHECK-FAIL"}: ${cmd}`);
    tr.push(`! rc=${rc} ${cmd}`);
    if (!ok) fail(lineno, `rc=${rc}, wanted ${want}`);
    continue;
  }
  // request
  const [dev, mode, cdbHex, ...rest] = l.split(/\s+/);
  const cdb = new Uint8Array(16);
  cdb.set(parseHex(cdbHex));
  let param: Uint8Array = new Uint8Array(0);
  let wantSt: number | undefined, wantSz: number | undefined;
  let wantSense: number[] | undefined;
  for (const t of rest) {
    if (t.startsWith("p=")) param = parseHex(t.slice(2));
    else if (t.startsWith("s=")) wantSt = parseInt(t.slice(2), 16);
    else if (t.startsWith("n=")) wantSz = Number(t.slice(2));
    else if (t.startsWith("k=")) wantSense = t.slice(2).split("/").map((x) => parseInt(x, 16));
    else throw new Error(`line ${lineno}: unknown token ${t}`);
  }
  const path = dev === "A" || dev === "B" ? Deno.env.get(dev) : dev;
  if (!path) throw new Error(`line ${lineno}: $${dev} not set`);
  const n = (cdb[7] << 8) | cdb[8];
  // the helper reads exactly n bytes: pad/truncate like rigtool does
  const payload = new Uint8Array(cdb[0] === 0x5f && n <= 8192 ? n : 0);
  payload.set(param.subarray(0, payload.length));
  builderCheck(lineno, cdb, payload);
  nreq++;
  tr.push(`> ${dev} ${mode} ${hex(cdb)}${cdb[0] === 0x5f ? ` p=${hex(payload)}` : ""}`);
  const fd = openDevice(path, { write: mode === "w" });
  let reply: { status: number; sense: Uint8Array; data: Uint8Array } | undefined;
  try {
    client ??= PrHelperClient.connect(sock, { timeoutMs: 60_000 });
    reply = client.request(cdb, fd, payload);
  } catch (e) {
    if (!(e instanceof HelperConnectionError)) throw e;
    client?.close();
    client = undefined;
  } finally {
    closeFd(fd);
  }
  const what = `${dev} ${mode} ${hex(cdb.subarray(0, 2)).replace(/(..)(..)/, "$1/$2")}`;
  if (!reply) {
    tr.push("< CLOSED");
    console.log(`  ${what}: CLOSED by helper`);
  } else {
    tr.push(
      `< st=${reply.status.toString(16).padStart(2, "0")} sz=${reply.data.length} sense=${
        hex(reply.sense)
      } data=${hex(reply.data)}`,
    );
    const s = reply.sense;
    console.log(
      `  ${what}: status 0x${reply.status.toString(16).padStart(2, "0")} sz ${reply.data.length}` +
        (reply.status === 2
          ? ` sense ${(s[2] & 0xf).toString(16)}/${hex(s.subarray(12, 13))}/${
            hex(s.subarray(13, 14))
          }`
          : ""),
    );
  }
  let ok = true;
  if (wantSt !== undefined && reply?.status !== wantSt) ok = false;
  if (wantSz !== undefined && reply?.data.length !== wantSz) ok = false;
  if (
    wantSense &&
    (!reply || (reply.sense[2] & 0xf) !== wantSense[0] || reply.sense[12] !== wantSense[1] ||
      reply.sense[13] !== wantSense[2])
  ) ok = false;
  if (!ok) {
    fail(
      lineno,
      `reply does not match ${rest.filter((t) => !t.startsWith("p=")).join(" ")}`,
    );
  }
  flushTr();
}
client?.close();
flushTr();
console.log(`seq.ts: ${nreq} requests, ${fails} failed expectation(s)`);
Deno.exit(fails ? 1 : 0);
