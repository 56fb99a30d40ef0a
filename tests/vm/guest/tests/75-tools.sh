#!/bin/sh
# prhelperd's operator tools (issue 8) on the LIO LUN:
#   client: for every PR IN service action (and the -H forms) over a sequence
#     of LUN states, `prhelperd client` prints what `sg_persist -n` prints on
#     the same device, with the same exit status; RESERVATION CONFLICT (24)
#     and UNIT ATTENTION (6) exit statuses match sg_persist's; PR OUT goes
#     through the helper.
#   check: a whole disk and an sg node pass; a partition, a daemon without
#     CAP_SYS_RAWIO and (SELinux boot, run-vm.sh -S) a device labelled for
#     another VM are flagged, each with its fix.
# TOOLS_PART=client|check|selinux (env, e.g. from a run-vm.sh -r script) runs
# one part only.
. $RIG/lib.sh
have_prhelperd || skip "prhelperd not in the tree yet"
have_deno || { echo "no deno"; exit 1; }
[ -f $PRJ/src/commands/client_command.ts ] || skip "prhelperd client not in the tree yet"
if [ -d /sys/fs/selinux ]; then  # SELinux boot: a policy, permissive, before the daemon starts
  grep -q selinuxfs /proc/mounts || mount -t selinuxfs selinuxfs /sys/fs/selinux
  [ -e /sys/fs/selinux/class/blk_file ] || expect 0 load_policy
  expect 0 setenforce 0
fi
lio_reset || exit 1
SOCK=/run/prd-tools.sock
KA=0xaaa1 KB=0xbbb2
prd_start $SOCK || exit 1

_deno_lock
cl() { (cd $PRJ && "$DENO" run $DENO_FLAGS -P=daemon main.ts client --socket $SOCK "$@"); }
ck() { (cd $PRJ && "$DENO" run $DENO_FLAGS -P=daemon main.ts check "$@"); }
ck_nojit() { (cd $PRJ && "$DENO" run $DENO_FLAGS --v8-flags=--jitless -P=daemon main.ts check "$@"); }
# same DEV ARGS... : sg_persist -n and prhelperd client agree on stdout and exit status
same() {
  local dev=$1 r1 r2
  shift
  sg_persist -n "$@" $dev > /run/ref.out 2> /run/ref.err; r1=$?
  cl "$@" $dev > /run/our.out 2> /run/our.err; r2=$?
  if [ "$r1" = "$r2" ] && cmp -s /run/ref.out /run/our.out; then
    echo "  ok: $* $dev (rc=$r1, $(wc -l < /run/our.out) lines)"
  else
    echo "  FAILED: $* $dev: sg_persist rc=$r1, client rc=$r2"
    echo "  --- sg_persist"; sed 's/^/    /' /run/ref.out /run/ref.err
    echo "  --- client"; sed 's/^/    /' /run/our.out /run/our.err
    FAILS=$((FAILS+1))
  fi
}
state() {  # every PR IN service action (deno starts are slow under TCG: keep this short)
  echo "--- LUN state: $1"
  for f in -k -r -c -s; do same $A $f; done
}

part() { [ -z "${TOOLS_PART:-}" ] || [ "$TOOLS_PART" = "$1" ]; }
if part client; then
echo "=== client vs sg_persist"
t0=$(up)
state "fresh"
expect 0 sg_persist -n --out --register --param-sark=$KA $A
expect 0 cl --out --register --param-sark=$KB $B
expect 0 cl --out --reserve --param-rk=$KA --prout-type=1 $A
state "two registrations (one made through the helper), path 1 holds Write Exclusive"
same $B -s
same $A -k -H; same $A -s -HH; same $A -r -HHH
echo "--- RESERVATION CONFLICT: 24 from both"
expect 24 cl --out --reserve --param-rk=$KB --prout-type=3 $B; expect_out 'Reservation conflict'
expect 24 sg_persist -n --out --reserve --param-rk=$KB --prout-type=3 $B
echo "--- UNIT ATTENTION: path 2 preempts path 1; path 1's next command gets 6"
expect 0 cl --out --preempt --param-rk=$KB --param-sark=$KA --prout-type=5 $B
expect 6 cl -k $A; expect_out 'Unit attention'
same $A -s
expect 0 sg_persist -n --out --register --param-sark=$KA $A
expect 0 cl --out --preempt --param-rk=$KB --param-sark=$KA --prout-type=5 $B
expect 6 sg_persist -n -k $A
echo "--- APTPL registration, then clear"
expect 0 cl --out --register-ignore --param-sark=0x77 --param-aptpl $A
state "APTPL active, path 2 holds Write Exclusive, registrants only"
echo "--- CLEAR from path 2: path 1 gets UNIT ATTENTION through the helper too"
expect 0 cl --out --clear --param-rk=$KB $B
expect 6 cl -r $A; expect_out 'Unit attention'
same $A -r
expect 0 cl --json -c $A; expect_out '"atpC": (true|false)'
echo "TIMING client comparisons: $(elapsed $t0)s"
fi

if part check; then

echo "=== check"
expect 0 ck $A --socket $SOCK
expect_out 'is a whole-disk SCSI block device'; expect_out 'PR supported \(REPORT CAPABILITIES through the helper\)'
expect_out 'the daemon has CAP_SYS_RAWIO'
expect 0 ck $SGA; expect_out 'SCSI generic \(sg\) character device'; expect_out 'by SG_IO'

echo "--- a partition (MBR written with printf/dd, one Linux partition at LBA 2048)"
{
  dd if=/dev/zero bs=446 count=1 2>/dev/null
  printf '\000\040\041\000\203\024\024\000\000\010\000\000\000\100\000\000'
  dd if=/dev/zero bs=48 count=1 2>/dev/null
  printf '\125\252'
} > /run/mbr.bin
dd if=/run/mbr.bin of=$A bs=512 count=1 conv=fsync 2>/dev/null
blockdev --rereadpt $A 2>/dev/null || partprobe $A
n=0; while [ ! -b ${A}1 ] && [ $n -lt 50 ]; do sleep 0.1; n=$((n+1)); done
check "[ -b ${A}1 ]" "partition ${A}1 appeared"
expect 1 ck ${A}1 --socket $SOCK
expect_out "\[FAIL\] device: ${A}1 \([0-9]+:[0-9]+\) is a partition, not a whole disk"
expect_out "fix: give the VM the whole disk $A"
dd if=/dev/zero of=$A bs=512 count=1 conv=fsync 2>/dev/null
blockdev --rereadpt $A 2>/dev/null || partprobe $A

echo "--- a daemon without CAP_SYS_RAWIO (bounding set dropped before exec)"
cat > /run/norawio.ts <<'EOF'
import { Cap, dropFromBoundingSet, execve } from "file:///prj/ffi/privileges.ts";
dropFromBoundingSet(Cap.SYS_RAWIO);
const env = Object.entries(Deno.env.toObject()).map(([k, v]) => `${k}=${v}`);
execve(Deno.args[0], Deno.args, env);
EOF
NSOCK=/run/prd-norawio.sock
rm -f $NSOCK
(cd $PRJ && exec "$DENO" run $DENO_FLAGS -A /run/norawio.ts \
  "$DENO" run $DENO_FLAGS -P=daemon main.ts -k $NSOCK) > /run/norawio.log 2>&1 &
NPID=$!
n=0; while [ ! -S $NSOCK ] && [ $n -lt 600 ] && kill -0 $NPID 2>/dev/null; do sleep 0.1; n=$((n+1)); done
if [ -S $NSOCK ]; then
  grep -m1 CapEff /proc/$NPID/status
  expect 1 ck $A --socket $NSOCK
  expect_out "\[FAIL\] daemon: the daemon \(pid $NPID\) runs without CAP_SYS_RAWIO"
  expect_out 'fix: start prhelperd as root'
else
  echo "  FAILED: the daemon without CAP_SYS_RAWIO did not come up"; cat /run/norawio.log
  FAILS=$((FAILS+1))
fi
kill $NPID 2>/dev/null; wait $NPID 2>/dev/null
fi

if ! part selinux; then
  :
elif [ -d /sys/fs/selinux ]; then
  echo "--- SELinux: a device labelled for another VM"
  C12=system_u:system_r:svirt_t:s0:c1,c2
  C34=system_u:system_r:svirt_t:s0:c3,c4
  BDEV=$(cat /sys/class/block/${A##*/}/dev)
  rm -f /dev/prh-tools-c12
  mknod /dev/prh-tools-c12 b ${BDEV%:*} ${BDEV#*:}
  chcon system_u:object_r:svirt_image_t:s0:c1,c2 /dev/prh-tools-c12
  # enforcing: V8's JIT needs execmem, refused to the guest's domain here (as in 70-svirt.sh)
  expect 0 setenforce 1
  expect 1 ck_nojit /dev/prh-tools-c12 --as $C34
  expect_out "\[FAIL\] selinux: a client at $C34 blk_file:ioctl on system_u:object_r:svirt_image_t:s0:c1,c2: refused \(denied\)"
  expect_out 'fix: label the device for the VM'
  expect 0 ck_nojit /dev/prh-tools-c12 --as $C12
  expect_out "\[ OK \] selinux: a client at $C12 blk_file:ioctl .*: allowed"
  expect 0 setenforce 0
  rm -f /dev/prh-tools-c12
else
  echo "--- SELinux label checks: not booted with SELinux (run-vm.sh -S -t tools)"
fi
prd_stop
finish
