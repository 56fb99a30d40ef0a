// tests/vm/guest/driver/ffi-inquiry.ts - run in the VM: open a disk and send
// INQUIRY through SG_IO with Deno FFI (libc open/ioctl/close).  Proves the
// guest's deno can do FFI against a real SCSI device, independently of
// prhelperd's own code.  Usage: deno run -A ffi-inquiry.ts /dev/sda
const path = Deno.args[0] ?? "/dev/sda";
const libc = Deno.dlopen("libc.so.6", {
  open: { parameters: ["buffer", "i32"], result: "i32" },
  ioctl: { parameters: ["i32", "u64", "buffer"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
  __errno_location: { parameters: [], result: "pointer" },
});
const O_RDONLY = 0, O_NONBLOCK = 0o4000, SG_IO = 0x2285n, SG_DXFER_FROM_DEV = -3;
const fd = libc.symbols.open(new TextEncoder().encode(path + "\0"), O_RDONLY | O_NONBLOCK);
if (fd < 0) throw new Error(`open ${path} failed`);
const cdb = new Uint8Array([0x12, 0, 0, 0, 96, 0]);
const data = new Uint8Array(96), sense = new Uint8Array(32);
const hdr = new Uint8Array(88); // struct sg_io_hdr on x86_64
const v = new DataView(hdr.buffer);
const ptr = (b: Uint8Array) => BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(b)));
v.setInt32(0, "S".charCodeAt(0), true); // interface_id
v.setInt32(4, SG_DXFER_FROM_DEV, true); // dxfer_direction
v.setUint8(8, cdb.length); // cmd_len
v.setUint8(9, sense.length); // mx_sb_len
v.setUint32(12, data.length, true); // dxfer_len
v.setBigUint64(16, ptr(data), true); // dxferp
v.setBigUint64(24, ptr(cdb), true); // cmdp
v.setBigUint64(32, ptr(sense), true); // sbp
v.setUint32(40, 10000, true); // timeout ms
const r = libc.symbols.ioctl(fd, SG_IO, hdr);
if (r < 0) {
  const e = new Deno.UnsafePointerView(libc.symbols.__errno_location()!).getInt32();
  throw new Error(`SG_IO failed, errno ${e}`);
}
const status = v.getUint8(64);
const vendor = new TextDecoder().decode(data.subarray(8, 16)).trim();
console.log(
  `INQUIRY via FFI SG_IO: status=${status} vendor="${vendor}" host_status=${v.getUint16(68, true)}`,
);
libc.symbols.close(fd);
