#!/bin/sh
# bench/lio_guest.sh - runs INSIDE the VM rig (tests/vm/) as /share/run.sh:
# one LIO LUN, qemu-pr-helper and prhelperd both started on it, then
# bench/lio_driver.ts measures READ KEYS and REGISTER AND IGNORE EXISTING KEY
# through each helper and as raw SG_IO, interleaved, in the same run.
# The table goes to $SHARE/lio-bench.txt.  Started by bench/lio_vm.sh.
. $RIG/lib.sh
OUT=/share/lio-bench.txt
ITER=${LIO_ITER:-200} ROUNDS=${LIO_ROUNDS:-5}
[ -f /share/lio-params ] && . /share/lio-params
lio_ensure || exit 1
have_deno || { echo "deno not found (DENO=${DENO:-unset})"; exit 1; }
prh_start /run/prh.sock || exit 1
# prhelperd at its default verbosity (no per-request logging on success):
# the package as shipped, or (LIO_DAEMON) main.ts with or without V8's JIT
case ${LIO_DAEMON:-pkg} in
  jit) PRD_MODE=source ;;
  jitless) PRD_MODE=source PRD_ENV=DENO_V8_FLAGS=--jitless ;;
esac
prd_start /run/prd.sock || { prh_stop; exit 1; }
echo "guest: prhelperd ${LIO_DAEMON:-pkg}: $(tr '\0' ' ' < /proc/$PRD_PID/cmdline | cut -c1-200)"
echo "guest: $(nproc) CPUs, kernel $(uname -r), LUN $A"
_deno_lock
(cd $PRJ && "$DENO" run $DENO_FLAGS -A bench/lio_driver.ts --device $A \
   --prhelperd /run/prd.sock --qemu /run/prh.sock \
   --iterations $ITER --rounds $ROUNDS) > /run/lio-bench.txt 2>&1
rc=$?
{ echo "guest: $(nproc) CPUs, kernel $(uname -r), LUN $A (LIO ${BACKSTORE:-fileio}), prhelperd ${LIO_DAEMON:-pkg}"; cat /run/lio-bench.txt; } > $OUT
cat $OUT
prd_stop; prh_stop
exit $rc
