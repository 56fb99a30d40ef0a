#!/bin/sh
# Debian's qemu-pr-helper in the guest, driven by rigtool (the independent
# C client): greeting, PR through the helper with the fd in SCM_RIGHTS,
# effects seen from the other path, and the helper's 1 ms SG_IO time-out
# flakiness counted (must be 0 with a quiet console).
. $RIG/lib.sh
lio_reset || exit 1
SOCK=/run/prh.sock
prh_start $SOCK || exit 1
echo "qemu-pr-helper pid $PRH_PID, $(grep -E '^(CapEff)' /proc/$PRH_PID/status | tr '\n' ' ')"
expect 0 rigtool prh-hello $SOCK;                   expect_out 'greeting: 00 00 00 00'
echo "--- register 0x1234 on path 1 through the helper"
expect 0 rigtool prh-out $SOCK $A 0 0 0 0x1234
expect 0 rigtool prh-in $SOCK $A 0;                 expect_out ' 0x1234'
echo "--- reserve (type 5) through the helper, check from path 2 with sg_persist"
expect 0 rigtool prh-out $SOCK $A 1 5 0x1234 0
expect 0 sg_persist --in --read-reservation $B;     expect_out 'Key=0x1234'
echo "--- path 2 (unregistered) reserves through the helper -> RESERVATION CONFLICT"
expect 1 rigtool prh-out $SOCK $B 1 5 0x9999 0;      expect_out 'RESERVATION CONFLICT'
echo "--- 20 x PR IN, 20 x PR OUT (REGISTER AND IGNORE): count LUN COMMUNICATION FAILUREs"
good=0; bad=0; i=0
while [ $i -lt 20 ]; do
  case $(rigtool prh-in $SOCK $A 0) in *"(GOOD)"*) good=$((good+1));; *) bad=$((bad+1));; esac
  case $(rigtool prh-out $SOCK $A 6 0 0 0x1234) in *"(GOOD)"*) good=$((good+1));; *) bad=$((bad+1));; esac
  i=$((i+1))
done
echo "PRH-STATS good=$good bad=$bad"
check '[ $bad = 0 ]' "no failed helper round trip in 40"
expect 0 rigtool prh-out $SOCK $A 3 0 0x1234 0       # CLEAR
expect 0 sg_persist --in --read-keys $B;            expect_out 'NO registered reservation keys'
prh_stop
finish
