#!/bin/sh
# LIO loopback LUN via configfs only: one backstore, two I_T nexuses
# (/dev/sda, /dev/sdb); same unit serial and same data on both paths; and
# lio_reset gives a fresh LUN (the differential tests rely on it).
. $RIG/lib.sh
lio_ensure || { echo "lio_ensure failed"; exit 1; }
expect 0 sg_inq $A;  expect_out 'LIO-ORG'
expect 0 sg_vpd --page=sn $A; SN_A=$(echo "$LAST_OUT" | tail -1)
expect 0 sg_vpd --page=sn $B; SN_B=$(echo "$LAST_OUT" | tail -1)
check '[ "$SN_A" = "$SN_B" ]' "same unit serial on both paths ($SN_A)"
check '[ "$A" != "$B" ]' "two distinct block devices ($A, $B)"
# data written through path 1 is read back through path 2 (same backstore)
echo "rig-marker-$$" | dd of=$A bs=512 count=1 conv=sync,fsync 2>/dev/null
expect 0 dd if=$B bs=512 count=1 iflag=direct
expect_out "rig-marker-$$"
echo "--- lio_reset: registrations and PRgeneration are gone afterwards"
expect 0 sg_persist --out --register --param-sark=0x11 $A
expect 0 sg_persist --in --read-keys $B;  expect_out '0x11'
lio_reset || { echo "lio_reset failed"; exit 1; }
expect 0 sg_persist --in --read-keys $B;  expect_out 'PR generation=0x0, there are NO registered'
expect 0 dd if=$B bs=512 count=1 iflag=direct
check '! echo "$LAST_OUT" | grep -q rig-marker' "data zeroed by the reset"
finish
