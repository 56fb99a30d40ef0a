#!/bin/sh
# The PR matrix of issue 3 (guest/seq/gen-matrix.sh) through prhelperd, with
# mod.ts's client (guest/driver/seq.ts): every PR IN/OUT service action,
# reservation types 1 3 5 6 7 8, ALL_TG_PT, APTPL, PREEMPT (+ unit
# attention), the safe PREEMPT AND ABORT variants, REGISTER AND MOVE; each
# effect checked from the other path with sg_persist, enforcement with
# sg_raw WRITE(10).  Transcript kept for the differential (65).
. $RIG/lib.sh
have_prhelperd || skip "prhelperd not in the tree yet"
lio_reset || exit 1
export A B SGA SGB
dd if=/dev/zero of=/tmp/blk bs=512 count=1 2>/dev/null
sh $RIG/seq/gen-matrix.sh > /run/matrix.seq
mkdir -p /run/tr
prd_start /run/prhelperd.sock || exit 1
t0=$(up)
deno_run -A $RIG/driver/seq.ts /run/prhelperd.sock /run/matrix.seq /run/tr/prd-client.tr; rc=$?
echo "TIMING matrix through prhelperd (deno client, incl. deno start): $(elapsed $t0)s"
check 'kill -0 $PRD_PID' "daemon still running"
prd_stop
[ -d /share ] && { mkdir -p /share/transcripts; cp /run/tr/*.tr /share/transcripts/; }
[ $rc = 0 ] || { echo "--- daemon log (tail)"; tail -30 /run/prhelperd.log; }
[ $rc = 0 ] || FAILS=$((FAILS+1))
finish
