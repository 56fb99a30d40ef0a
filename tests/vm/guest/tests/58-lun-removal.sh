#!/bin/sh
# A LUN path removed in the middle of a run (issue 7's fault matrix): a client
# holds an fd of /dev/sda while path 1's LUN is unexported from LIO. Its next
# PR IN and PR OUT must get an error reply from the SG_IO errno/host table
# (CHECK CONDITION, sz 0), never GOOD, and the daemon must go on serving the
# other path.
. $RIG/lib.sh
have_prhelperd || skip "prhelperd not in the tree"
have_deno || { echo "no deno"; exit 1; }
lio_reset || exit 1
SOCK=/run/prhelperd.sock
prd_start $SOCK -v || exit 1
rm -f /run/lr.fifo; mkfifo /run/lr.fifo
deno_run -A $RIG/driver/lun_removal.ts $SOCK $A $B /run/lr.fifo > /run/lr.out 2>&1 &
DRV=$!
n=0; while ! grep -q READY /run/lr.out && [ $n -lt 600 ]; do sleep 0.2; n=$((n+1)); done
check 'grep -q READY /run/lr.out' "driver ready with an fd of $A"
echo "--- removing path 1's LUN ($A) from LIO"
rm -f $T/loopback/naa.5001405000000001/tpgt_1/lun/lun_0/lun0
n=0; while [ -b $A ] && [ $n -lt 50 ]; do sleep 0.1; n=$((n+1)); done
check "[ ! -b $A ]" "$A is gone"
echo go > /run/lr.fifo
wait $DRV; rc=$?
cat /run/lr.out
check "[ $rc = 0 ]" "driver exited 0 (every request got a reply)"
check "grep -q 'LR before READ KEYS: status 0x00' /run/lr.out" "READ KEYS was GOOD before the removal"
# the table's outcomes for a vanished device: ENODEV/ENXIO-class errnos or a host error
table='sense (04/44/00|0B/00/06|0B/05/00|0B/08/00|0B/29/07|02/3A/00)'
check "grep -Eq 'LR after READ KEYS: status 0x02 sz 0 $table' /run/lr.out" "PR IN on the removed LUN: CHECK CONDITION from the table"
check "grep -Eq 'LR after REGISTER: status 0x02 sz 0 $table' /run/lr.out" "PR OUT on the removed LUN: CHECK CONDITION from the table"
check "grep -q 'LR other path READ KEYS: status 0x00' /run/lr.out" "the daemon still serves $B"
check 'kill -0 $PRD_PID' "daemon still running"
prd_stop
echo "--- daemon log"; cat /run/prhelperd.log
lio_reset >/dev/null || true
finish
