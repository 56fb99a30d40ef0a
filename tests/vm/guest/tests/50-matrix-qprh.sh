#!/bin/sh
# The PR matrix (guest/seq/gen-matrix.sh) through Debian's qemu-pr-helper,
# driven by rigtool: proves the matrix and its expectations against the
# reference, and keeps the transcript ($SHARE/transcripts/qprh-rigtool.tr)
# for the differential with prhelperd.
. $RIG/lib.sh
W0=$(kernel_warnings)
lio_reset || exit 1
export A B SGA SGB
dd if=/dev/zero of=/tmp/blk bs=512 count=1 2>/dev/null
sh $RIG/seq/gen-matrix.sh > /run/matrix.seq
mkdir -p /run/tr
prh_start /run/prh.sock || exit 1
t0=$(up)
rigtool prh-seq /run/prh.sock /run/matrix.seq /run/tr/qprh-rigtool.tr; rc=$?
echo "TIMING matrix through qemu-pr-helper: $(elapsed $t0)s"
prh_stop
[ -d /share ] && { mkdir -p /share/transcripts; cp /run/tr/*.tr /share/transcripts/; }
echo "--- kernel messages (scsi/target) during the run"
dmesg | grep -iE 'target|tcm|abort|timeout' | tail -5
[ $(kernel_warnings) = $W0 ] || { echo "FAILED: kernel WARNING during the sequence"; dmesg | grep -A12 -- "cut here" | head -30; rc=1; }
exit $rc
