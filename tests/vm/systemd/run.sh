#!/bin/bash
# tests/vm/systemd/run.sh - the installed package in a real systemd boot.
#
# Boots a Debian bookworm VM (debootstrap rootfs, systemd as PID 1, Debian's
# kernel and initramfs, root on virtio ext4) under QEMU, installs the .deb
# with apt, and runs guest-test.sh as a oneshot unit: socket activation by a
# client, the service's user and capabilities on every thread, PR commands on
# a LIO disk through the helper, sd_notify status, priority-tagged journal
# lines, a clean stop. Exit 0 = PASS, 1 = FAIL, 2 = no verdict.
#
#   tests/vm/systemd/run.sh [-n] [-x] [-a tcg|kvm] [-T timeout_s]
#     -n  use the existing dist/*.deb (default: `deno task deb` first)
#     -x  interactive: serial console, no test unit (log in as root, no password)
# Logs: tests/vm/out/systemd/{console.log,debootstrap.log} (written in
# $WORK/systemd/out first).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/../common.sh"
BUILD=1 SHELL_ONLY=0 ACCEL=tcg TMO=1500
while getopts nxa:T: o; do
  case $o in
    n) BUILD=0 ;; x) SHELL_ONLY=1 ;; a) ACCEL=$OPTARG ;; T) TMO=$OPTARG ;;
    *) sed -n '2,15p' "$0"; exit 2 ;;
  esac
done
# Logs are written under $WORK (the rig's run.sh replaces tests/vm/out/ after
# its own runs) and copied to tests/vm/out/systemd/ at the end.
OUT=$WORK/systemd/out
ARTIFACTS=$PROJ/tests/vm/out/systemd
rm -rf "$OUT"; mkdir -p "$OUT" "$WORK/systemd"
publish() { mkdir -p "$ARTIFACTS" && cp "$OUT"/* "$ARTIFACTS"/ 2>/dev/null || true; }
trap publish EXIT

"$HERE/build-rootfs.sh"
ROOTFS=$WORK/systemd/rootfs
if [ $BUILD = 1 ]; then (cd "$PROJ" && ./tools/deno task deb --no-lintian); fi
DEB=$(ls -t "$PROJ"/dist/prhelperd_*.deb 2>/dev/null | head -1)
[ -n "$DEB" ] || { echo "systemd-vm: no dist/prhelperd_*.deb (run deno task deb)" >&2; exit 2; }

# A throw-away copy of the rootfs with the test files, as an ext4 image.
STAGE=$WORK/systemd/stage
IMG=$WORK/systemd/disk.img
rm -rf "$STAGE"; cp -a "$ROOTFS" "$STAGE"
install -d "$STAGE/opt/prhelperd-test"
install -m644 "$DEB" "$STAGE/opt/prhelperd-test/"
install -m755 "$HERE/guest-test.sh" "$STAGE/opt/prhelperd-test/"
if [ $SHELL_ONLY = 0 ]; then
  install -m644 "$HERE/prhelperd-vmtest.service" "$STAGE/etc/systemd/system/"
  ln -sf ../prhelperd-vmtest.service "$STAGE/etc/systemd/system/multi-user.target.wants/"
fi
rm -f "$IMG"
mkfs.ext4 -q -F -L root -d "$STAGE" "$IMG" 3G
rm -rf "$STAGE"
KERNEL=$(ls "$ROOTFS"/boot/vmlinuz-* | sort -V | tail -1)
INITRD=$(ls "$ROOTFS"/boot/initrd.img-* | sort -V | tail -1)
case $ACCEL in
  tcg) ACC=(-accel tcg,thread=multi -cpu max) ;;
  kvm) ACC=(-accel kvm -cpu host) ;;
  *) echo "systemd-vm: bad accelerator $ACCEL" >&2; exit 2 ;;
esac
CMD=(qemu-system-x86_64 "${ACC[@]}" -smp 2 -m 2048 -machine q35 -nodefaults
     -display none -no-reboot -kernel "$KERNEL" -initrd "$INITRD"
     -append "root=/dev/vda rw console=ttyS0 quiet systemd.show_status=0 net.ifnames=0 panic=-1"
     -drive "file=$IMG,if=virtio,format=raw,cache=unsafe"
     -device virtio-rng-pci)
echo "+ ${CMD[*]}" >&2
if [ $SHELL_ONLY = 1 ]; then exec "${CMD[@]}" -serial mon:stdio; fi
cp "$WORK/systemd/debootstrap.log" "$OUT/" 2>/dev/null || true
rc=0
timeout --foreground "$TMO" "${CMD[@]}" -serial stdio < /dev/null | tee "$OUT/console.log" || rc=$?
if grep -q "VMTEST-RESULT: PASS" "$OUT/console.log"; then echo "systemd-vm: PASS"; exit 0; fi
if grep -q "VMTEST-RESULT: FAIL" "$OUT/console.log"; then
  echo "systemd-vm: FAIL"; grep "VMTEST FAIL" "$OUT/console.log" || true; exit 1
fi
echo "systemd-vm: no verdict (qemu exit $rc; see $ARTIFACTS/console.log)"; exit 2
