#!/bin/sh
# guest/demo.sh - what `tests/vm/demo.sh` shows a newcomer (runs in the VM):
# prhelperd takes a reservation on a real LIO LUN for a client, and
# sg_persist on the LUN's other path shows it.
. $RIG/lib.sh
say() { echo; echo "=== $*"; }
say "One LIO LUN, seen on two paths (two I_T nexuses)"
lio_ensure > /run/lio.out 2>&1 || { cat /run/lio.out; exit 1; }
grep 'path' /run/lio.out
say "Start prhelperd: deno run -P=daemon main.ts -k /run/prhelperd.sock"
prd_start /run/prhelperd.sock || exit 1
say "A client (mod.ts's PrHelperClient, talking like QEMU) registers key 0x5151 on path 1 ($A) and reserves Write Exclusive, through prhelperd"
deno_run -A $RIG/driver/smoke.ts /run/prhelperd.sock $A 0x5151 || exit 1
say "sg_persist on path 2 ($B), directly to the device, sees:"
sg_persist -n --in --read-keys $B
sg_persist -n --in --read-reservation $B
say "A WRITE from path 2 now gets RESERVATION CONFLICT (sg_raw WRITE(10)):"
sg_raw -s 512 -i /dev/zero $SGB 2a 00 00 00 00 00 00 00 01 00 2>&1 | grep -i 'status'
say "READ RESERVATION through prhelperd again, with rigtool (the rig's independent C client)"
rigtool prh-in /run/prhelperd.sock $A 1
say "Clean up: CLEAR"
rigtool prh-out /run/prhelperd.sock $A 3 0 0x5151 0 | tail -1
prd_stop
echo; echo "prhelperd's log:"; sed 's/^/  /' /run/prhelperd.log | tail -15
