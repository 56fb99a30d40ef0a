#!/bin/bash
# bench/lio_vm.sh - the LIO part of the benchmark (issue 9, item 2): boots the
# VM rig of tests/vm/ once with bench/lio_guest.sh as its script, and prints
# the table it wrote.  Needs tests/vm/prepare.sh and build-initramfs.sh to
# have run (the rig's own CI step does both).  Uses a private results share
# and leaves tests/vm/out/ alone.
#
#   bench/lio_vm.sh [-i ITERATIONS] [-r ROUNDS] [-a tcg|kvm] [-c CPUS] [-T TIMEOUT_S]
#                   [-d pkg|jit|jitless]
#     -d  which prhelperd: the package as shipped (default), or main.ts from
#         the tree with V8's JIT, or the same without it (the JIT's cost)
set -euo pipefail
BENCH=$(cd "$(dirname "$0")" && pwd)
. "$BENCH/../tests/vm/common.sh"
ITER=200 ROUNDS=5 ACCEL=tcg CPUS=2 TMO=900 DAEMON=pkg
while getopts i:r:a:c:T:d: o; do
  case $o in
    i) ITER=$OPTARG ;; r) ROUNDS=$OPTARG ;; a) ACCEL=$OPTARG ;; c) CPUS=$OPTARG ;;
    T) TMO=$OPTARG ;; d) DAEMON=$OPTARG ;; *) sed -n '2,12p' "$0"; exit 2 ;;
  esac
done
for f in "$WORK/KVER" "$WORK/out/rig.cpio.gz"; do
  [ -f "$f" ] || { echo "lio_vm: $f missing: run tests/vm/prepare.sh and build-initramfs.sh" >&2; exit 2; }
done
KVER=$(cat "$WORK/KVER")
DENO=$(find_deno) || { echo "lio_vm: deno not found (run tests/vm/prepare.sh)" >&2; exit 2; }
DENO_REL=${DENO#"$PROJ"/}
SHARE=$(mktemp -d /tmp/prhelperd-lio-bench.XXXXXX)
trap 'rm -rf "$SHARE"' EXIT
install -m755 "$BENCH/lio_guest.sh" "$SHARE/run.sh"
case $DAEMON in pkg|jit|jitless) ;; *) echo "lio_vm: -d \"$DAEMON\" must be pkg, jit or jitless" >&2; exit 2 ;; esac
printf 'ITER=%s ROUNDS=%s LIO_DAEMON=%s\n' "$ITER" "$ROUNDS" "$DAEMON" > "$SHARE/lio-params"
case $ACCEL in
  tcg) ACC=(-accel tcg,thread=multi -cpu max) ;;
  kvm) ACC=(-accel kvm -cpu host,-arch-capabilities) ;;
  *) echo "lio_vm: accelerator \"$ACCEL\" must be tcg or kvm" >&2; exit 2 ;;
esac
APPEND="console=ttyS0 panic=-1 quiet rig.tests=none rig.backstore=fileio rig.deno=$DENO_REL"
set +e
timeout "$TMO" qemu-system-x86_64 "${ACC[@]}" -smp "$CPUS" -m 2048 -machine q35 -nodefaults \
  -display none -no-reboot \
  -kernel "$WORK/root/boot/vmlinuz-$KVER" -initrd "$WORK/out/rig.cpio.gz" -append "$APPEND" \
  -virtfs "local,path=$SHARE,mount_tag=rigshare,security_model=none,id=rigshare" \
  -virtfs "local,path=$PROJ,mount_tag=prj,security_model=none,readonly=on,id=prj" \
  -virtfs "local,path=$WORK/deno-dir,mount_tag=denodir,security_model=none,id=denodir" \
  -serial stdio < /dev/null > "$SHARE/console.log" 2>&1
set -e
if [ -s "$SHARE/lio-bench.txt" ]; then
  echo "LIO benchmark in the VM rig ($ACCEL, $CPUS vCPUs; host: $(nproc) CPUs, $(uname -r))"
  cat "$SHARE/lio-bench.txt"
  grep -aq 'VM-RESULT: PASS' "$SHARE/console.log" && exit 0
fi
echo "lio_vm: no result; console and the guest's log:" >&2
tail -40 "$SHARE/console.log" >&2
[ -f "$SHARE/logs/run.sh.log" ] && tail -40 "$SHARE/logs/run.sh.log" >&2
exit 1
