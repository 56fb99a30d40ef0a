#!/bin/bash
# tests/vm/run-vm.sh - boot the test VM once, unattended; exit with its verdict.
# (Needs prepare.sh and build-initramfs.sh to have run; run.sh does all three.)
#
#   tests/vm/run-vm.sh [-t a,b|all] [-S] [-N] [-x] [-v] [-r script.sh]
#                      [-b fileio|rd] [-a tcg|kvm] [-m MiB] [-c CPUS] [-T timeout_s]
#     -t  guest tests to run (names of guest/tests/NN-NAME.sh; default all)
#     -S  boot with SELinux: security=selinux selinux=1 enforcing=0
#     -A  boot with AppArmor: security=apparmor apparmor=1
#     -N  append nested.cpio.gz (qemu-system-x86_64 inside the VM)
#     -x  interactive busybox shell on the serial console instead of tests
#     -v  stream every guest test's output to the console (default: verdicts only)
#     -r  SCRIPT: run SCRIPT (copied into the results share) instead of the tests
#     -a  accelerator (default tcg; KVM does not work on the PVM build host)
# Exit status: 0 = VM-RESULT: PASS, 1 = FAIL, 2 = no verdict (timeout, crash).
# Console: stdout and $WORK/share/console.log; the guest also writes
# guest.log, dmesg.log, result and logs/<test>.log into $WORK/share.
# Everything in $WORK/share is copied to $VM_OUT (default tests/vm/out/)
# afterwards (CI artifact).  Env: WORK, SHARE, VM_OUT.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/common.sh"
KVER=$(cat "$WORK/KVER")
TESTS=all SEL= NESTED=0 ACCEL=tcg MEM=2048 CPUS=2 TMO=1200 BS=fileio SHELL_ONLY=0 RUNSH= VERBOSE=0
while getopts t:SANa:m:c:T:b:xvr: o; do
  case $o in
    t) TESTS=$OPTARG ;; S) SEL="security=selinux selinux=1 enforcing=0" ;;
    A) SEL="security=apparmor apparmor=1" ;;
    N) NESTED=1 ;; a) ACCEL=$OPTARG ;; m) MEM=$OPTARG ;; c) CPUS=$OPTARG ;;
    T) TMO=$OPTARG ;; b) BS=$OPTARG ;; x) SHELL_ONLY=1 ;; r) RUNSH=$OPTARG ;; v) VERBOSE=1 ;;
    *) sed -n '2,20p' "$0"; exit 2 ;;
  esac
done
DENO=$(find_deno) || { echo "run-vm: deno not found (run prepare.sh)" >&2; exit 2; }
case $DENO in "$PROJ"/*) DENO_REL=${DENO#"$PROJ"/} ;; *) echo "run-vm: deno must live in the project tree" >&2; exit 2 ;; esac

# Runs that share a WORK dir are serialized (they share $WORK/share and the
# images); a second run waits here.  VM_OUT (default tests/vm/out) is where
# the results are copied afterwards.
VM_OUT=${VM_OUT:-$HERE/out}
exec 9> "$WORK/.run-vm.lock"
flock -n 9 || { echo "run-vm: another run uses $WORK; waiting for it" >&2; flock 9; }
SHARE=${SHARE:-$WORK/share}
rm -rf "$SHARE"; mkdir -p "$SHARE" "$WORK/deno-dir"
[ -n "$RUNSH" ] && install -m755 "$RUNSH" "$SHARE/run.sh"
INITRD=$WORK/out/rig.cpio.gz
if [ $NESTED = 1 ]; then
  cat "$WORK/out/rig.cpio.gz" "$WORK/out/nested.cpio.gz" > "$WORK/out/rig+nested.cpio.gz"
  INITRD=$WORK/out/rig+nested.cpio.gz
fi
case $ACCEL in
  tcg) ACC=(-accel tcg,thread=multi -cpu max) ;;
  kvm) ACC=(-accel kvm -cpu host,-arch-capabilities) ;;
  *) echo "run-vm: bad accelerator $ACCEL" >&2; exit 2 ;;
esac
APPEND="console=ttyS0 panic=-1 quiet rig.tests=$TESTS rig.backstore=$BS rig.deno=$DENO_REL $SEL"
[ $SHELL_ONLY = 1 ] && APPEND="$APPEND rig.shell=1"
[ $VERBOSE = 1 ] && APPEND="$APPEND rig.verbose=1"
# Three 9p shares: results (rw), the project tree (ro), DENO_DIR (rw).
CMD=(qemu-system-x86_64 "${ACC[@]}" -smp "$CPUS" -m "$MEM" -machine q35 -nodefaults
     -display none -no-reboot
     -kernel "$WORK/root/boot/vmlinuz-$KVER" -initrd "$INITRD" -append "$APPEND"
     -virtfs "local,path=$SHARE,mount_tag=rigshare,security_model=none,id=rigshare"
     -virtfs "local,path=$PROJ,mount_tag=prj,security_model=none,readonly=on,id=prj"
     -virtfs "local,path=$WORK/deno-dir,mount_tag=denodir,security_model=none,id=denodir")
echo "+ ${CMD[*]} -serial stdio" >&2
if [ $SHELL_ONLY = 1 ]; then
  exec "${CMD[@]}" -serial mon:stdio
fi
START=$(date +%s.%N)
set +e
timeout "$TMO" "${CMD[@]}" -serial stdio < /dev/null | tee "$SHARE/console.log"
QRC=${PIPESTATUS[0]}
set -e
END=$(date +%s.%N)
echo "run-vm: qemu exit $QRC, wall $(echo "$END - $START" | bc)s" | tee -a "$SHARE/console.log"
# Keep everything of this run where CI can pick it up (tests/vm/out/ is gitignored).
rm -rf "$VM_OUT"; mkdir -p "$VM_OUT"; cp -r "$SHARE"/. "$VM_OUT/"
if grep -aq 'VM-RESULT: PASS' "$SHARE/console.log"; then exit 0
elif grep -aq 'VM-RESULT: FAIL' "$SHARE/console.log"; then exit 1
else echo "run-vm: no VM-RESULT line (timeout or crash); console kept in $VM_OUT/console.log"; exit 2; fi
