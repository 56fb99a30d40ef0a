#!/bin/sh
# prhelperd's per-request SELinux (sVirt/MCS) access check (issue 4).
# Needs the SELinux boot: tests/vm/run-vm.sh -S -t svirt
#
# Device nodes of LIO path 1 (block $A and sg $SGA) are made with mknod and
# labelled svirt_image_t at s0:c1,c2, s0:c3,c4 and s0. Staged clients
# (driver/svirt_client.ts under runcon svirt_t:s0:c1,c2 or :c3,c4) connect
# and open them while SELinux is permissive, then the test switches to
# enforcing and lets them send PR OUT REGISTER AND IGNORE EXISTING KEY.
#   enforcing: cross-MCS is refused with CHECK CONDITION 05/20/02 and LIO
#     (read from path 2 with sg_persist) shows nothing changed; same MCS and
#     s0 (shared disk, both clients) succeed; block and sg nodes alike.
#   permissive: cross-MCS is allowed and logged as a would-deny AVC line.
#   control: the same cross-MCS request with --selinux=off goes through, so
#     skipping the check makes the enforcing checks above fail.
. $RIG/lib.sh
# The daemon runs exactly as shipped (the package's launcher, lib.sh
# prd_start) in kernel_t, a domain without execmem: its SG_IO Worker starts on
# first use, after `setenforce 1`, and a daemon with the JIT would abort there
# (issue 13). The clients are test tools in svirt_t, which has no execmem
# either; they run without the JIT (deno_run with this DENO_FLAGS).
DENO_FLAGS="$DENO_FLAGS --v8-flags=--jitless"
[ -d /sys/fs/selinux ] || skip "kernel not booted with SELinux (run-vm.sh -S)"
have_prhelperd || skip "prhelperd not in the tree yet"
have_deno || { echo "no deno"; exit 1; }
grep -q selinuxfs /proc/mounts || mount -t selinuxfs selinuxfs /sys/fs/selinux
echo 0 > /proc/sys/kernel/printk_ratelimit
if [ ! -e /sys/fs/selinux/class/blk_file ]; then
  t0=$(up)
  expect 0 load_policy
  echo "TIMING load_policy: $(elapsed $t0)s"
fi
expect 0 setenforce 0
lio_reset || exit 1

C12=system_u:system_r:svirt_t:s0:c1,c2
C34=system_u:system_r:svirt_t:s0:c3,c4
I12=system_u:object_r:svirt_image_t:s0:c1,c2
I34=system_u:object_r:svirt_image_t:s0:c3,c4
IS0=system_u:object_r:svirt_image_t:s0
SOCK=/run/prhelperd.sock
LOGF=/run/prhelperd.log

# ---- labelled nodes of path 1: /dev/prh-{blk,sg}-{c12,c34,s0}
BDEV=$(cat /sys/class/block/${A##*/}/dev)            # e.g. 8:0
SDEV=$(cat /sys/class/scsi_generic/${SGA##*/}/dev)   # e.g. 21:0
echo "path 1: $A = $BDEV, $SGA = $SDEV"
mk() {  # mk NAME b|c MAJ:MIN CONTEXT
  rm -f /dev/$1
  mknod /dev/$1 $2 ${3%:*} ${3#*:} && chcon $4 /dev/$1 && echo "  /dev/$1: $(getfilecon /dev/$1)"
}
mk prh-blk-c12 b $BDEV $I12; mk prh-blk-c34 b $BDEV $I34; mk prh-blk-s0 b $BDEV $IS0
mk prh-sg-c12 c $SDEV $I12;  mk prh-sg-c34 c $SDEV $I34;  mk prh-sg-s0 c $SDEV $IS0

# ---- helpers
# client NAME CONTEXT JOB... : start a staged client; waits for "ready"
client() {
  local name=$1 ctx=$2 n=0
  shift 2
  rm -f /run/svirt-$name.out /run/svirt-$name.go
  mkfifo /run/svirt-$name.go
  cd $PRJ   # deno.json (import map) is found from the working directory
  _deno_lock   # deno in the guest resolves npm packages from the shared cache through the lockfile
  runcon $ctx "$DENO" run $DENO_FLAGS -A \
    $RIG/driver/svirt_client.ts $SOCK /run/svirt-$name.out /run/svirt-$name.go "$@" \
    > /run/svirt-$name.log 2>&1 &
  eval "CP_$name=\$!"
  cd /
  while ! grep -qs '^ready' /run/svirt-$name.out && [ $n -lt 300 ] && kill -0 $! 2>/dev/null; do
    sleep 0.2; n=$((n+1))
  done
  if grep -qs '^ready' /run/svirt-$name.out; then
    echo "client $name ($ctx) ready: $(cat /run/svirt-$name.out)"
  else
    echo "  FAILED: client $name not ready"; FAILS=$((FAILS+1)); cat /run/svirt-$name.log
  fi
}
# go NAME REGEX : let client NAME go on, wait until its output matches REGEX
go() {
  local pid n=0
  eval "pid=\$CP_$1"
  kill -0 $pid 2>/dev/null && echo > /run/svirt-$1.go
  while ! grep -qsE "$2" /run/svirt-$1.out && [ $n -lt 150 ] && kill -0 $pid 2>/dev/null; do
    sleep 0.2; n=$((n+1))
  done
  grep -qsE "$2" /run/svirt-$1.out || {
    echo "  FAILED: client $1 did not reach /$2/"; FAILS=$((FAILS+1))
    cat /run/svirt-$1.out /run/svirt-$1.log
  }
}
# result NAME LABEL REGEX : the client's result line for LABEL must match
result() {
  R_LINE=$(grep "^RESULT $2 " /run/svirt-$1.out 2>/dev/null) R_RE=$3
  check 'echo "$R_LINE" | grep -qE "$R_RE"' "client $1 $2: ${R_LINE:-no result} ~ /$3/"
}
DENIED='status=02 sense=5/20/02$'
GOOD='status=00$'
# keys : registered keys as LIO reports them through path 2 (root, unconfined)
keys() { sg_persist --in --read-keys $B 2>&1 | grep -E '0x[0-9a-f]+|NO registered' | tr -s ' \n' ' '; }
log_has() { L_RE=$1; check 'grep -qE "$L_RE" $LOGF' "daemon log: /$1/"; }
# started: the socket exists before the start-up lines are logged; wait for them
started() {
  local n=0
  while ! grep -q 'listening on' $LOGF && [ $n -lt 150 ]; do sleep 0.2; n=$((n+1)); done
}

# ================================================================ enforcing
prd_start $SOCK -v || exit 1
started
log_has 'SELinux access check: on \(permissive\)'
client e12 $C12 x-blk,/dev/prh-blk-c34,reg,0xbad1 x-sg,/dev/prh-sg-c34,reg,0xbad2 pause \
  same-blk,/dev/prh-blk-c12,reg,0xc12 pause \
  same-sg,/dev/prh-sg-c12,reg,0xc13 s0-blk,/dev/prh-blk-s0,reg,0x501 s0-sg,/dev/prh-sg-s0,reg,0x502
client e34 $C34 s0-blk,/dev/prh-blk-s0,reg,0x503 x-blk,/dev/prh-blk-c12,reg,0xbad3 \
  x-sg,/dev/prh-sg-c12,reg,0xbad4
echo "--- setenforce 1"
expect 0 setenforce 1
expect 0 getenforce; expect_out Enforcing

echo "--- c1,c2 -> c3,c4 (block, sg): refused, LIO unchanged"
go e12 '^paused 1'
result e12 x-blk "$DENIED"
result e12 x-sg "$DENIED"
K=$(keys); echo "  LIO keys: $K"
check 'echo "$K" | grep -q "NO registered"' "no key registered after the refused requests"
log_has "avc: denied \{ ioctl \} for pid=[0-9]+ uid=0 gid=0 dev=$BDEV scontext=$C12 tcontext=$I34 tclass=blk_file permissive=0 mode=enforcing verdict=deny reason=denied"
log_has "avc: denied \{ ioctl \} for pid=[0-9]+ uid=0 gid=0 dev=$SDEV scontext=$C12 tcontext=$I34 tclass=chr_file permissive=0 mode=enforcing verdict=deny"
check '! grep -q "audit: event=pr-out" $LOGF' "no audit record for refused requests"

echo "--- c1,c2 -> c1,c2 (block): allowed, LIO shows the key"
go e12 '^paused 2'
result e12 same-blk "$GOOD"
K=$(keys); echo "  LIO keys: $K"
check 'echo "$K" | grep -q "0xc12"' "key 0xc12 registered"

echo "--- c1,c2 -> c1,c2 (sg), -> s0 (block, sg): allowed"
go e12 '^done'
result e12 same-sg "$GOOD"
result e12 s0-blk "$GOOD"
result e12 s0-sg "$GOOD"
K=$(keys); echo "  LIO keys: $K"
check 'echo "$K" | grep -q "0x502"' "key 0x502 (last one of path 1) registered"

echo "--- c3,c4 -> s0 (shared disk): allowed; c3,c4 -> c1,c2: refused"
go e34 '^done'
result e34 s0-blk "$GOOD"
result e34 x-blk "$DENIED"
result e34 x-sg "$DENIED"
K=$(keys); echo "  LIO keys: $K"
check 'echo "$K" | grep -q "0x503" && ! echo "$K" | grep -q "0xbad"' "0x503 registered, no 0xbad*"
log_has "scontext=$C34 tcontext=$I12 tclass=blk_file permissive=0 mode=enforcing verdict=deny"

echo "--- audit records (one per PR OUT that reached the device)"
grep 'audit: event=pr-out' $LOGF | sed 's/^/    /'
N=$(grep -c 'audit: event=pr-out' $LOGF)
check '[ "$N" = 5 ]' "5 audit records so far (got $N)"
log_has "audit: event=pr-out peer_pid=[0-9]+ peer_uid=0 peer_gid=0 peer_context=$C12 dev=$BDEV dev_kind=block dev_serial=$LIO_SERIAL dev_naa=naa\.[0-9a-f]+ sa=6 sa_name=REGISTER_AND_IGNORE_EXISTING_KEY scope=0 type=0 type_name=none status=0 result=GOOD"
log_has "audit: .*peer_context=$C12 dev=$SDEV dev_kind=char dev_serial=$LIO_SERIAL dev_naa=naa\."
log_has "audit: .*peer_context=$C34 dev=$BDEV dev_kind=block .*result=GOOD"

echo "--- no JIT abort: the daemon's Worker started under enforcing without execmem"
check 'kill -0 $PRD_PID' "daemon still running after its first SG_IO under enforcing"
check "tr '\\0' ' ' < /proc/$PRD_PID/cmdline | grep -q -- '--jitless'" "the shipped launcher runs it without the JIT"
check "grep -q ':kernel_t:' /proc/$PRD_PID/attr/current" "daemon in kernel_t ($(cat /proc/$PRD_PID/attr/current))"
echo "--- a second daemon started while enforcing (kernel_t, no execmem) serves at once"
rm -f /run/prd2.sock
$PRD -k /run/prd2.sock > /run/prd2.log 2>&1 &
P2=$!
n=0; while [ ! -S /run/prd2.sock ] && [ $n -lt 300 ] && kill -0 $P2 2>/dev/null; do sleep 0.1; n=$((n+1)); done
expect 0 rigtool prh-in /run/prd2.sock $B 0
check "kill -0 $P2" "second daemon alive after a request"
echo "  kernel AVC denials of execmem so far: $(dmesg | grep -c 'denied  { execmem }')"
cat /run/prd2.log | sed 's/^/    prd2: /' | sort | uniq -c | head -8
check "! grep -q 'Fatal error' /run/prd2.log $LOGF" "no V8 fatal error in either daemon's log"
kill $P2 2>/dev/null; wait $P2 2>/dev/null
expect 0 setenforce 0

# ================================================================ permissive
echo "--- permissive: c1,c2 -> c3,c4 allowed and logged as would-deny"
client p12 $C12 px-blk,/dev/prh-blk-c34,reg,0xeee1 px-sg,/dev/prh-sg-c34,reg,0xeee2
go p12 '^done'
result p12 px-blk "$GOOD"
result p12 px-sg "$GOOD"
K=$(keys); echo "  LIO keys: $K"
check 'echo "$K" | grep -q "0xeee2"' "key 0xeee2 registered"
log_has "avc: denied \{ ioctl \} for .*dev=$BDEV scontext=$C12 tcontext=$I34 tclass=blk_file permissive=1 mode=permissive verdict=allow reason=permissive"
log_has "avc: denied \{ ioctl \} for .*dev=$SDEV scontext=$C12 tcontext=$I34 tclass=chr_file permissive=1 mode=permissive verdict=allow"
check 'kill -0 $PRD_PID' "daemon still running"
prd_stop
cp $LOGF /run/prhelperd-checked.log

# ================================================================ control
echo "--- control: with --selinux=off the cross-MCS request goes through (enforcing)"
lio_reset > /dev/null || exit 1
prd_start $SOCK -v --selinux=off || exit 1
started
log_has 'SELinux access check: off: disabled by option'
client c12 $C12 x-blk,/dev/prh-blk-c34,reg,0xbad9
expect 0 setenforce 1
go c12 '^done'
result c12 x-blk "$GOOD"
K=$(keys); echo "  LIO keys: $K"
check 'echo "$K" | grep -q "0xbad9"' "without the check LIO took key 0xbad9"
expect 0 setenforce 0
prd_stop

echo "--- daemon log (checked run)"; cat /run/prhelperd-checked.log
echo "--- daemon log (control run)"; cat $LOGF
for c in e12 e34 p12 c12; do echo "--- client $c"; cat /run/svirt-$c.out /run/svirt-$c.log; done
dmesg | grep -c 'avc:  denied' | sed 's/^/kernel AVC denials logged: /'
finish
