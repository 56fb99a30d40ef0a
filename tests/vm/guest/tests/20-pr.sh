#!/bin/sh
# SCSI-3 persistent reservations with sg_persist directly against LIO, two
# I_T nexuses: proves LIO moves and enforces reservations (no helper yet).
. $RIG/lib.sh
lio_ensure || exit 1
KA=0xaaa1 KB=0xbbb2
dd if=/dev/zero of=/tmp/blk bs=512 count=1 2>/dev/null
WRITE10="2a 00 00 00 00 00 00 00 01 00"; READ10="28 00 00 00 00 00 00 00 01 00"
# sg3-utils exit status 24 = SG_LIB_CAT_RES_CONFLICT, 6 = UNIT ATTENTION
expect 0 sg_persist --in --report-capabilities $A
expect 0 sg_persist --out --register --param-sark=$KA $A
expect 0 sg_persist --out --register --param-sark=$KB $B
expect 0 sg_persist --in --read-keys $B;            expect_out '0xaaa1'; expect_out '0xbbb2'
echo "--- path1 reserves, type 1 = Write Exclusive"
expect 0 sg_persist --out --reserve --param-rk=$KA --prout-type=1 $A
expect 0 sg_persist --in --read-reservation $B;     expect_out 'Key=0xaaa1'; expect_out 'Write Exclusive'
expect 0 sg_persist --in --read-full-status $A
echo "--- WRITE(10) from the non-holder path: RESERVATION CONFLICT; READ allowed"
expect 24 sg_raw -s 512 -i /tmp/blk $SGB $WRITE10;   expect_out 'Reservation Conflict'
expect 0 sg_raw -r 512 $SGB $READ10
expect 0 sg_raw -s 512 -i /tmp/blk $SGA $WRITE10
expect 24 sg_persist --out --reserve --param-rk=$KB --prout-type=1 $B
echo "--- release, then path 2 can write"
expect 0 sg_persist --out --release --param-rk=$KA --prout-type=1 $A
expect 0 sg_persist --in --read-reservation $B;     expect_out 'NO reservation held'
expect 0 sg_raw -s 512 -i /tmp/blk $SGB $WRITE10
echo "--- type 5 by path 2; path 1 preempts; path 2 sees UA then conflict"
expect 0 sg_persist --out --reserve --param-rk=$KB --prout-type=5 $B
expect 0 sg_persist --out --preempt --param-rk=$KA --param-sark=$KB --prout-type=5 $A
expect 6 sg_raw -s 512 -i /tmp/blk $SGB $WRITE10;   expect_out 'Registrations preempted'
expect 24 sg_raw -s 512 -i /tmp/blk $SGB $WRITE10;  expect_out 'Reservation Conflict'
expect 0 sg_persist --out --clear --param-rk=$KA $A
expect 0 sg_persist --in --read-keys $B;            expect_out 'there are NO registered reservation keys'
t0=$(up); i=0; while [ $i -lt 20 ]; do sg_persist --in --read-keys $A >/dev/null; i=$((i+1)); done
echo "TIMING sg_persist --read-keys: $(echo "$(up) $t0" | awk '{printf "%.3f", ($1-$2)/20}')s each (avg of 20)"
finish
