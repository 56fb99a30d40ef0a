#!/bin/sh
# prhelperd in the guest with its own permission set (-P=daemon): starts,
# answers the greeting, moves a reservation (rigtool and mod.ts's client),
# and the other path sees it.
. $RIG/lib.sh
have_prhelperd || skip "prhelperd (main.ts, mod.ts with PrHelperClient) not in the tree yet"
have_deno || { echo "no deno"; exit 1; }
lio_reset || exit 1
SOCK=/run/prhelperd.sock
t0=$(up)
prd_start $SOCK -v || exit 1
echo "TIMING prhelperd start (-P=daemon) until the socket exists: $(elapsed $t0)s"
expect 0 rigtool prh-hello $SOCK;                   expect_out 'greeting: 00 00 00 00'
echo "--- rigtool through prhelperd"
expect 0 rigtool prh-out $SOCK $A 0 0 0 0x1234
expect 0 rigtool prh-in $SOCK $A 0;                 expect_out ' 0x1234'
expect 0 sg_persist --in --read-keys $B;            expect_out '0x1234'
expect 0 rigtool prh-out $SOCK $A 3 0 0x1234 0       # CLEAR
echo "--- mod.ts client + builders through prhelperd"
t0=$(up)
expect 0 deno_run -A $RIG/driver/smoke.ts $SOCK $A 0x5151
expect_out 'SMOKE reservation: generation=[0-9]+ key=0x5151 type=1'
echo "TIMING deno run smoke.ts: $(elapsed $t0)s"
expect 0 sg_persist --in --read-reservation $B;     expect_out 'Key=0x5151'
expect 24 sg_raw -s 512 -i /dev/zero $SGB 2a 00 00 00 00 00 00 00 01 00
expect 0 rigtool prh-out $SOCK $A 3 0 0x5151 0       # CLEAR
check 'kill -0 $PRD_PID' "daemon still running"
prd_stop
echo "--- daemon log"; cat /run/prhelperd.log
finish
