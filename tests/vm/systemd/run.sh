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
#   tests/vm/systemd/run.sh [-n] [-x] [-g NAME] [-a tcg|kvm] [-T timeout_s]
#     -n  use the existing dist/*.deb (default: `deno task deb` first)
#     -g  run guest-NAME.sh as the test unit (default: guest-test.sh); when
#         stage-NAME.sh exists it runs on the host with the staged rootfs as
#         its argument before the image is made (labels, extra files); the
#         words in cmdline-NAME, when it exists, are added to the kernel's
#         command line (e.g. an LSM selection). Every
#         guest script prints "=== prhelperd systemd VM test" when it starts
#         and "VMTEST-RESULT: PASS|FAIL" at the end; this directory is in the
#         guest as /opt/prhelperd-test/systemd/.
#     -x  interactive: serial console, no test unit (log in as root, no password)
#     -T  limit of one boot in seconds (default 600; a boot normally takes 140)
# Env: SILENCE=s (console silence that ends a boot, default 300), EXTRA_APPEND=
# (more kernel arguments, for debugging).
# Logs: tests/vm/out/systemd/{console.log,debootstrap.log} (written in
# $WORK/systemd/out first).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/../common.sh"
BUILD=1 SHELL_ONLY=0 ACCEL=tcg TMO=600 SILENCE=${SILENCE:-300} GUEST=test
while getopts nxg:a:T: o; do
  case $o in
    n) BUILD=0 ;; x) SHELL_ONLY=1 ;; g) GUEST=$OPTARG ;; a) ACCEL=$OPTARG ;; T) TMO=$OPTARG ;;
    *) sed -n '2,23p' "$0"; exit 2 ;;
  esac
done
# Logs are written under $WORK (the rig's run.sh replaces tests/vm/out/ after
# its own runs) and copied to tests/vm/out/systemd/ at the end.
SUFFIX=; [ "$GUEST" = test ] || SUFFIX=-$GUEST
OUT=$WORK/systemd/out$SUFFIX
ARTIFACTS=$PROJ/tests/vm/out/systemd$SUFFIX
rm -rf "$OUT"; mkdir -p "$OUT" "$WORK/systemd"
publish() { mkdir -p "$ARTIFACTS" && cp "$OUT"/* "$ARTIFACTS"/ 2>/dev/null || true; }
trap publish EXIT

"$HERE/build-rootfs.sh"
ROOTFS=$WORK/systemd/rootfs
if [ $BUILD = 1 ]; then (cd "$PROJ" && ./tools/deno task deb --no-lintian); fi
DEB=$(ls -t "$PROJ"/dist/prhelperd_*.deb 2>/dev/null | head -1)
[ -n "$DEB" ] || { echo "systemd-vm: no dist/prhelperd_*.deb (run deno task deb)" >&2; exit 2; }

# A throw-away copy of the rootfs with the test files, as an ext4 image
# (made anew for every boot).
STAGE=$WORK/systemd/stage
IMG=$WORK/systemd/disk.img
DEBS=$WORK/systemd/debs
mkdir -p "$DEBS"
ls "$DEBS"/acl_*.deb >/dev/null 2>&1 || (cd "$DEBS" && apt-get download acl >/dev/null)
ACL_DEB=$(ls "$DEBS"/acl_*.deb | head -1)
make_image() {
  rm -rf "$STAGE"; cp -a "$ROOTFS" "$STAGE"
  install -d "$STAGE/opt/prhelperd-test"
  install -m644 "$DEB" "$STAGE/opt/prhelperd-test/"
  # the package's dependencies that the cached rootfs lacks (acl, for the
  # multipath udev rule), as .debs beside it: the VM has no network
  install -m644 "$ACL_DEB" "$STAGE/opt/prhelperd-test/"
  install -m755 "$HERE/guest-$GUEST.sh" "$STAGE/opt/prhelperd-test/guest-test.sh"
  cp -a "$HERE" "$STAGE/opt/prhelperd-test/systemd"
  if [ $SHELL_ONLY = 0 ]; then
    install -m644 "$HERE/prhelperd-vmtest.service" "$STAGE/etc/systemd/system/"
    ln -sf ../prhelperd-vmtest.service "$STAGE/etc/systemd/system/multi-user.target.wants/"
  fi
  # last, so that it sees (and may label) every file of the image
  if [ -f "$HERE/stage-$GUEST.sh" ]; then bash "$HERE/stage-$GUEST.sh" "$STAGE"; fi
  rm -f "$IMG"
  mkfs.ext4 -q -F -L root -d "$STAGE" "$IMG" 6G
  rm -rf "$STAGE"
}
GUEST_APPEND=
if [ -f "$HERE/cmdline-$GUEST" ]; then GUEST_APPEND=$(grep -v '^#' "$HERE/cmdline-$GUEST" | xargs); fi
KERNEL=$(ls "$ROOTFS"/boot/vmlinuz-* | sort -V | tail -1)
INITRD=$(ls "$ROOTFS"/boot/initrd.img-* | sort -V | tail -1)
case $ACCEL in
  tcg) ACC=(-accel tcg,thread=multi -cpu max) ;;
  kvm) ACC=(-accel kvm -cpu host) ;;
  *) echo "systemd-vm: bad accelerator $ACCEL" >&2; exit 2 ;;
esac
CMD=(qemu-system-x86_64 "${ACC[@]}" -smp 2 -m 2048 -machine q35 -nodefaults
     -display none -no-reboot -kernel "$KERNEL" -initrd "$INITRD"
     -append "root=/dev/vda rw console=ttyS0 loglevel=6 systemd.show_status=auto net.ifnames=0 panic=-1${GUEST_APPEND:+ $GUEST_APPEND}${EXTRA_APPEND:+ $EXTRA_APPEND}"
     -drive "file=$IMG,if=virtio,format=raw,cache=unsafe"
     -device virtio-rng-pci)
echo "+ ${CMD[*]}" >&2
if [ $SHELL_ONLY = 1 ]; then make_image; exec "${CMD[@]}" -serial mon:stdio; fi
cp "$WORK/systemd/debootstrap.log" "$OUT/" 2>/dev/null || true

# A watchdog: if the console stays silent for $SILENCE s, record where the
# guest is (QEMU's monitor: run state, CPU registers) and end the boot, rather
# than waiting out the whole timeout with no clue.
MON=$WORK/systemd/monitor.sock
watchdog() {  # LOG
  local last=0 size idle=0
  while sleep 10; do
    size=$(stat -c %s "$1" 2>/dev/null || echo 0)
    if [ "$size" != "$last" ]; then last=$size idle=0; continue; fi
    idle=$((idle + 10))
    [ $idle -ge "$SILENCE" ] || continue
    echo "systemd-vm: console silent for ${idle}s; guest state:" >&2
    printf 'info status\ninfo registers -a\nquit\n' |
      timeout 20 socat - "UNIX-CONNECT:$MON" > "$OUT/monitor.txt" 2>&1 || true
    grep -aE 'VM status|^[RE]IP=|^CPU#' "$OUT/monitor.txt" >&2 || true
    return
  done
}
boot() {  # LOG: one boot; the console goes to LOG and stdout
  local log=$1 wd rc=0
  make_image
  rm -f "$MON"; : > "$log"
  watchdog "$log" & wd=$!
  timeout --foreground "$TMO" "${CMD[@]}" -serial stdio -monitor "unix:$MON,server=on,wait=off" \
    < /dev/null | tee -a "$log" || rc=$?
  kill $wd 2>/dev/null || true; wait $wd 2>/dev/null || true
  echo "systemd-vm: qemu exit $rc" >> "$log"
}

LOG=$OUT/console.log
boot "$LOG"
# One more boot only when the guest never reached the test unit (a boot that
# stalled before systemd started it, seen once under TCG); the first console
# is kept as console-1.log. A stall or failure inside the test is never retried.
if ! grep -q "=== prhelperd systemd VM test" "$LOG"; then
  mv "$LOG" "$OUT/console-1.log"
  echo "systemd-vm: the test unit never started (see $ARTIFACTS/console-1.log); booting again"
  boot "$LOG"
fi
if grep -q "VMTEST-RESULT: PASS" "$LOG"; then echo "systemd-vm: PASS"; exit 0; fi
if grep -q "VMTEST-RESULT: FAIL" "$LOG"; then
  echo "systemd-vm: FAIL"; grep "VMTEST FAIL" "$LOG" || true; exit 1
fi
echo "systemd-vm: no verdict (see $ARTIFACTS/console.log)"; exit 2
