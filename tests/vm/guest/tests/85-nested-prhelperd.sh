#!/bin/sh
# Issue 3 item 5: a nested real QEMU whose pr-manager-helper points at
# prhelperd; the nested guest registers/reserves/reads with sg_persist and
# the outer VM sees the reservation on the right nexus.  Needs --nested.
. $RIG/lib.sh; . $RIG/nested.sh
have_nested || skip "nested qemu not in the image (run with --nested)"
have_prhelperd || skip "prhelperd not in the tree yet"
lio_reset || exit 1
prd_start /run/prhelperd-nested.sock || exit 1
nested_qmp /run/prhelperd-nested.sock
nested_pr /run/prhelperd-nested.sock
check 'kill -0 $PRD_PID' "daemon still running"
prd_stop
echo "--- daemon log (tail)"; tail -20 /run/prhelperd.log
finish
