#!/bin/sh
# dm-multipath through prhelperd (issue 6): a multipath map over the two
# tcm_loop paths of the one LUN, built with dmsetup (no multipathd: prhelperd
# uses the kernel's block-layer PR ioctls, which dm-multipath fans out).
#  - REGISTER + RESERVE through prhelperd on /dev/mapper/mpatha; sg_persist on
#    each path shows the key on its own nexus
#  - READ KEYS / READ RESERVATION / REPORT CAPABILITIES / READ FULL STATUS
#    through prhelperd are byte-identical to what the LUN returns (sg_raw)
#  - what the ioctls cannot carry is refused (05/24/00, 05/26/00, 05/1A/00)
#  - path 1 offline + failed in dm: the reservation holds and is usable (I/O,
#    PR IN, RESERVE) through path 2
#  - a multipath PR OUT stuck in the kernel (queue_if_no_path, no path) does
#    not delay another client's request on a plain disk
# Never executes a PREEMPT AND ABORT that LIO would run (README pitfall 3).
. $RIG/lib.sh
have_prhelperd || skip "prhelperd not in the tree yet"
have_deno || { echo "no deno"; exit 1; }
command -v dmsetup >/dev/null || skip "dmsetup is not in the initramfs (build-initramfs.sh)"
modprobe dm_multipath && modprobe dm_round_robin || skip "no dm-multipath modules in the initramfs"
lio_reset || exit 1
SOCK=/run/prhelperd.sock
NA=${A#/dev/} NB=${B#/dev/}
DA=$(cat /sys/block/$NA/dev) DB=$(cat /sys/block/$NB/dev)
SZ=$(cat /sys/block/$NA/size)
WWID=36001405$(echo $LIO_SERIAL | tr -d -)
M=/dev/mapper/mpatha Q=/dev/mapper/mpathq
BG=
cleanup() {
  [ -n "$BG" ] && kill $BG 2>/dev/null
  dmsetup message mpathq 0 reinstate_path $DB 2>/dev/null
  echo running > /sys/block/$NA/device/state 2>/dev/null
  dmsetup remove mpathq 2>/dev/null; dmsetup remove mpatha 2>/dev/null
  prd_stop
}
trap cleanup EXIT

echo "--- dm-multipath map over $A ($DA) and $B ($DB), $SZ sectors, no multipathd"
expect 0 dmsetup create mpatha --uuid mpath-$WWID \
  --table "0 $SZ multipath 0 0 1 1 round-robin 0 2 1 $DA 1 $DB 1"
dmsetup mknodes
expect 0 dmsetup status mpatha
expect 0 cat /sys/dev/block/$(dmsetup info -c --noheadings -o major,minor mpatha)/dm/uuid
expect_out "^mpath-$WWID"

prd_start $SOCK -v || exit 1
D="deno_run -A $RIG/driver/mpath.ts $SOCK"

echo "--- REGISTER 0x1111 and RESERVE Write Exclusive - All Registrants through prhelperd on $M"
expect 0 $D $M 'out 0 0 0x1111' 'out 1 0x1111 0 7'
expect_out 'MP out 0 0 0x1111: status 0x00 len 0'
expect_out 'MP out 1 0x1111 0 7: status 0x00 len 0'
echo "--- each path shows the key on its own nexus"
expect 0 sg_persist -n --in -k $A;  expect_out '2 registered reservation keys'; expect_out '0x1111'
expect 0 sg_persist -n --in -k $B;  expect_out '2 registered reservation keys'
expect 0 sg_persist -n --in -s $A
expect_out 'Relative port address: 0x1'; expect_out 'Relative port address: 0x2'
expect_out 'SAS address: 0x5001405aaaaaaaa1'; expect_out 'SAS address: 0x5001405aaaaaaaa2'
check "! echo \"\$LAST_OUT\" | grep -q 'Key=0x[^1]'" "every registration carries key 0x1111"
# an all-registrants reservation reports key 0 (SPC-4)
expect 0 sg_persist -n --in -r $B;  expect_out 'Key=0x0$'; expect_out 'Write Exclusive, all registrants'

compare_prin() {  # compare_prin SA NAME: prhelperd on $M vs sg_raw on path 2
  expect 0 $D $M "in $1 /tmp/mp-got.bin";  expect_out "status 0x00"
  rm -f /tmp/mp-ref.bin
  sg_raw -r 8192 -o /tmp/mp-ref.bin $B 5e 0$1 00 00 00 00 00 20 00 00 >/dev/null 2>&1
  check "cmp /tmp/mp-got.bin /tmp/mp-ref.bin" \
    "$2 through prhelperd = sg_raw on $B ($(wc -c < /tmp/mp-got.bin) bytes, not padded to 8192)"
}
echo "--- PR IN through prhelperd vs the LUN"
compare_prin 0 "READ KEYS"
compare_prin 1 "READ RESERVATION"
compare_prin 2 "REPORT CAPABILITIES"
compare_prin 3 "READ FULL STATUS"

echo "--- what the PR ioctls cannot carry is refused"
expect 0 $D $M 'out 7 0x1111 0x2222' 'tids 1' 'tids 300' 'out 0 0x1111 0x2222 0 4' \
  'out 0 0x1111 0x2222 0 0 25' 'out 8 0x1111 0' 'out 1 0x1111 0 2' 'out 3 0x1111 0 0 0x08'
expect_out 'MP out 7 0x1111 0x2222: status 0x02 sense 5/24/00'      # REGISTER AND MOVE
expect_out 'MP tids 1: status 0x02 sense 5/26/00'                    # SPEC_I_PT
expect_out 'MP tids 300: status 0x02 sense 5/26/00'                  # 300 TIDs (7228 bytes)
expect_out 'MP out 0 0x1111 0x2222 0 4: status 0x02 sense 5/26/00'   # ALL_TG_PT
expect_out 'MP out 0 0x1111 0x2222 0 0 25: status 0x02 sense 5/1a/00' # 25-byte list
expect_out 'MP out 8 0x1111 0: status 0x02 sense 5/24/00'            # REPLACE LOST RESERVATION
expect_out 'MP out 1 0x1111 0 2: status 0x02 sense 5/24/00'          # type 2 (obsolete)
expect_out 'MP out 3 0x1111 0 0 0x08: status 0x02 sense 5/26/00'     # SPEC_I_PT on CLEAR
echo "--- PREEMPT AND ABORT of a key nobody holds: LIO refuses it before any abort"
expect 0 $D $M 'out 5 0x1111 0xdead 7';  expect_out 'status 0x18'
expect 0 sg_persist -n --in -k $B;  expect_out '2 registered reservation keys'

echo "--- path 1 fails: $A offline, failed in dm"
echo offline > /sys/block/$NA/device/state
expect 0 dmsetup message mpatha 0 fail_path $DA
expect 0 dmsetup status mpatha;  expect_out " $DA F "
expect 0 $D $M 'in 0 /tmp/mp-keys.bin' 'in 1 /tmp/mp-resv.bin' 'out 1 0x1111 0 7'
expect_out 'MP in 0 /tmp/mp-keys.bin: status 0x00 len 24'           # both registrations
expect_out 'MP in 1 /tmp/mp-resv.bin: status 0x00 len 24'
expect_out 'MP out 1 0x1111 0 7: status 0x00'                        # RESERVE again: holder, GOOD
expect 0 sg_persist -n --in -r $B;  expect_out 'Key=0x0$'; expect_out 'all registrants'
echo "--- I/O through the map still works (path 2 is a registrant of the all-registrants reservation)"
expect 0 sg_raw -s 512 -i /dev/zero $M 2a 00 00 00 00 08 00 00 01 00
echo "--- REGISTER AND IGNORE EXISTING KEY with path 1 down: goes to the running path"
expect 0 $D $M "out 6 0 0x1111";  expect_out "status 0x00"
echo "--- path 1 back"
echo running > /sys/block/$NA/device/state
expect 0 dmsetup message mpatha 0 reinstate_path $DA
expect 0 sg_persist -n --in -k $A;  expect_out '0x1111'

echo "--- a multipath PR OUT stuck in the kernel does not delay a plain-disk request"
# mpathq: path 2 only, queue_if_no_path; with its path failed the kernel
# holds a CLEAR in dm until the path is back (on a Worker, not the loop)
expect 0 dmsetup create mpathq --uuid mpath-q$WWID \
  --table "0 $SZ multipath 1 queue_if_no_path 0 1 1 round-robin 0 1 1 $DB 1"
dmsetup mknodes
expect 0 dmsetup message mpathq 0 fail_path $DB
t0=$(up)
$D $Q announce 'out 3 0xdead 0' > /tmp/mp-bg.out 2>&1 &
BG=$!
n=0; while ! grep -q 'MP sending' /tmp/mp-bg.out && [ $n -lt 300 ]; do sleep 0.1; n=$((n+1)); done
sleep 1   # the CLEAR is now in dm's retry loop
check "kill -0 $BG 2>/dev/null" "the multipath CLEAR is in progress (no reply yet)"
t1=$(up)
# two requests: the first one also starts a second SG_IO Worker (the first is held)
expect 0 $D $B 'in 0' 'in 1';  expect_out "MP in 0: status 0x00"; expect_out "MP in 1: status 0x00"
plain_ms=$(echo "$LAST_OUT" | sed -n 's/.* ms //p' | tr '\n' ' ')
check "kill -0 $BG 2>/dev/null" "the plain-disk replies came while the multipath CLEAR was still pending"
echo "TIMING plain-disk READ KEYS, READ RESERVATION: ${plain_ms}ms in prhelperd (first incl. a Worker start; client process $(elapsed $t1)s)"
expect 0 dmsetup message mpathq 0 reinstate_path $DB
wait $BG; BG=
cat /tmp/mp-bg.out | sed 's/^/    /'
check "grep -q 'MP out 3 0xdead 0: status 0x18' /tmp/mp-bg.out" \
  "the stuck CLEAR completed once the path was back (RESERVATION CONFLICT: wrong key)"
echo "TIMING multipath CLEAR: $(sed -n 's/.*status.* ms //p' /tmp/mp-bg.out) ms in prhelperd (held until reinstate_path; client $(elapsed $t0)s)"

echo "--- CLEAR through prhelperd"
expect 0 $D $M 'out 3 0x1111 0';  expect_out 'status 0x00'
sg_persist -n --in -k $B > /dev/null 2>&1   # consumes the UNIT ATTENTION (2A/03) CLEAR left on path 2
expect 0 sg_persist -n --in -k $B;  expect_out 'NO registered reservation keys'
check 'kill -0 $PRD_PID' "daemon still running"
echo "--- daemon log"; cat /run/prhelperd.log | tail -30
finish
