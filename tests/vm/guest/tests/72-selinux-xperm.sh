#!/bin/sh
# Finding 14.6: the daemon's SELinux question must be the kernel's, ioctl
# extended permissions included. Needs the SELinux boot:
# tests/vm/run.sh --selinux selinux-xperm
#
# Debian's refpolicy has no allowxperm rule; driver/xperm_policy.ts adds two to
# a copy of the loaded policy (as a module would), which load_policy loads:
#   allowxperm svirt_t svirt_image_t:blk_file ioctl 0x5401   (SG_IO not listed)
#   allowxperm svirt_t svirt_image_t:chr_file ioctl 0x2285   (SG_IO listed)
# The client (svirt_t:s0:c1,c2) asks for a PR OUT through prhelperd and issues
# SG_IO (INQUIRY) itself on the same node: the kernel's answer to the client's
# own ioctl is the reference, and prhelperd must agree with it.
#   before: no xperm rule, block node: kernel allows, prhelperd allows.
#   with the rules, enforcing: block nodes (c1,c2 and s0): kernel EACCES,
#     prhelperd 05/20/02 reason=denied-xperm ioctlcmd=0x2285, LIO unchanged;
#     sg node: kernel allows, prhelperd allows.
#   original policy reloaded: the block node is allowed again (the daemon
#     re-read the policy when its sequence number moved).
# Nodes, contexts and staged clients as in 70-svirt.sh (copied, not shared).
. $RIG/lib.sh
DENO_FLAGS="$DENO_FLAGS --v8-flags=--jitless"
[ -d /sys/fs/selinux ] || skip "kernel not booted with SELinux (run-vm.sh -S)"
have_prhelperd || skip "prhelperd not in the tree yet"
have_deno || { echo "no deno"; exit 1; }
grep -q selinuxfs /proc/mounts || mount -t selinuxfs selinuxfs /sys/fs/selinux
echo 0 > /proc/sys/kernel/printk_ratelimit
POL=/etc/selinux/default/policy/policy.33
[ -s $POL ] || { echo "no $POL"; exit 1; }
if [ ! -e /sys/fs/selinux/class/blk_file ]; then
  t0=$(up)
  expect 0 load_policy
  echo "TIMING load_policy: $(elapsed $t0)s"
fi
expect 0 setenforce 0
lio_reset || exit 1

C12=system_u:system_r:svirt_t:s0:c1,c2
I12=system_u:object_r:svirt_image_t:s0:c1,c2
IS0=system_u:object_r:svirt_image_t:s0
SOCK=/run/prhelperd-xp.sock
LOGF=/run/prhelperd.log   # where prd_start writes

BDEV=$(cat /sys/class/block/${A##*/}/dev)
SDEV=$(cat /sys/class/scsi_generic/${SGA##*/}/dev)
echo "path 1: $A = $BDEV, $SGA = $SDEV"
mk() {  # mk NAME b|c MAJ:MIN CONTEXT
  rm -f /dev/$1
  mknod /dev/$1 $2 ${3%:*} ${3#*:} && chcon $4 /dev/$1 && echo "  /dev/$1: $(getfilecon /dev/$1)"
}
mk prh-xp-blk-c12 b $BDEV $I12; mk prh-xp-blk-s0 b $BDEV $IS0; mk prh-xp-sg-c12 c $SDEV $I12

# ---- the policy with the two rules (the original is kept to restore it)
cp $POL /run/policy.orig
cd $PRJ
t0=$(up)
expect 0 deno_run -A $RIG/driver/xperm_policy.ts /run/policy.orig /run/policy.xperm \
  svirt_t,svirt_image_t,blk_file,0x5401 svirt_t,svirt_image_t,chr_file,0x2285
echo "TIMING xperm_policy.ts: $(elapsed $t0)s"
cd /
# on any exit with the rules loaded: the original policy again, for later tests
XPERM_LOADED=
trap '[ -n "$XPERM_LOADED" ] && cp /run/policy.orig $POL && load_policy' EXIT

# ---- helpers (as in 70-svirt.sh, with driver/selinux_client.ts)
client() {  # client NAME CONTEXT JOB... : start a staged client; waits for "ready"
  local name=$1 ctx=$2 n=0
  shift 2
  rm -f /run/xp-$name.out /run/xp-$name.go
  mkfifo /run/xp-$name.go
  cd $PRJ
  _deno_lock
  runcon $ctx "$DENO" run $DENO_FLAGS -A \
    $RIG/driver/selinux_client.ts $SOCK /run/xp-$name.out /run/xp-$name.go "$@" \
    > /run/xp-$name.log 2>&1 &
  eval "CP_$name=\$!"
  cd /
  while ! grep -qs '^ready' /run/xp-$name.out && [ $n -lt 300 ] && kill -0 $! 2>/dev/null; do
    sleep 0.2; n=$((n+1))
  done
  if grep -qs '^ready' /run/xp-$name.out; then
    echo "client $name ($ctx) ready: $(cat /run/xp-$name.out)"
  else
    echo "  FAILED: client $name not ready"; FAILS=$((FAILS+1)); cat /run/xp-$name.log
  fi
}
go() {  # go NAME REGEX : let client NAME go on, wait until its output matches REGEX
  local pid n=0
  eval "pid=\$CP_$1"
  kill -0 $pid 2>/dev/null && echo > /run/xp-$1.go
  while ! grep -qsE "$2" /run/xp-$1.out && [ $n -lt 150 ] && kill -0 $pid 2>/dev/null; do
    sleep 0.2; n=$((n+1))
  done
  grep -qsE "$2" /run/xp-$1.out || {
    echo "  FAILED: client $1 did not reach /$2/"; FAILS=$((FAILS+1))
    cat /run/xp-$1.out /run/xp-$1.log
  }
}
result() {  # result NAME LABEL REGEX : the client's result line for LABEL must match
  R_LINE=$(grep "^RESULT $2 " /run/xp-$1.out 2>/dev/null) R_RE=$3
  check 'echo "$R_LINE" | grep -qE "$R_RE"' "client $1 $2: ${R_LINE:-no result} ~ /$3/"
}
DENIED='status=02 sense=5/20/02$'
GOOD='status=00$'
KERNEL_OK='sgio=ok status=00$'
KERNEL_DENIES='sgio=EACCES$'
keys() { sg_persist --in --read-keys $B 2>&1 | grep -E '0x[0-9a-f]+|NO registered' | tr -s ' \n' ' '; }
log_has() { L_RE=$1; check 'grep -qE "$L_RE" $LOGF' "daemon log: /$1/"; }
# load POLICYFILE: load it as the system's policy (SELinux permissive meanwhile)
load() {
  expect 0 setenforce 0
  XPERM_LOADED=$2
  cp $1 $POL && expect 0 load_policy
  expect 0 setenforce 1
}

# ================================================================
PRD_MODE=daemon prd_start $SOCK -v || exit 1
n=0; while ! grep -q 'listening on' $LOGF && [ $n -lt 150 ]; do sleep 0.2; n=$((n+1)); done
log_has 'SELinux access check: on \(permissive\), policy version 33 with no ioctl extended-permission rules'
client x12 $C12 \
  k-before,/dev/prh-xp-blk-c12,sgio before,/dev/prh-xp-blk-c12,reg,0xb01 pause \
  k-blk,/dev/prh-xp-blk-c12,sgio x-blk,/dev/prh-xp-blk-c12,reg,0xbad1 \
  k-blk-s0,/dev/prh-xp-blk-s0,sgio x-blk-s0,/dev/prh-xp-blk-s0,reg,0xbad2 \
  k-sg,/dev/prh-xp-sg-c12,sgio x-sg,/dev/prh-xp-sg-c12,reg,0x5a1
expect 0 setenforce 1

echo "--- no xperm rule: kernel and prhelperd allow the block node"
go x12 '^paused 1'
result x12 k-before "$KERNEL_OK"
result x12 before "$GOOD"

echo "--- allowxperm rules loaded, enforcing"
t0=$(up)
load /run/policy.xperm yes
echo "TIMING load_policy (xperm): $(elapsed $t0)s"
go x12 '^done'
result x12 k-blk "$KERNEL_DENIES"
result x12 x-blk "$DENIED"
result x12 k-blk-s0 "$KERNEL_DENIES"
result x12 x-blk-s0 "$DENIED"
result x12 k-sg "$KERNEL_OK"
result x12 x-sg "$GOOD"
log_has "avc: denied \{ ioctl \} for pid=[0-9]+ uid=0 gid=0 dev=$BDEV ioctlcmd=0x2285 scontext=$C12 tcontext=$I12 tclass=blk_file permissive=0 mode=enforcing verdict=deny reason=denied-xperm"
log_has "ioctlcmd=0x2285 scontext=$C12 tcontext=$IS0 tclass=blk_file permissive=0 mode=enforcing verdict=deny reason=denied-xperm"
dmesg | grep 'avc:  denied' | grep 'ioctlcmd=0x2285' | tail -3 | sed 's/^/    kernel: /'
K=$(keys); echo "  LIO keys: $K"
check 'echo "$K" | grep -q "0x5a1" && ! echo "$K" | grep -q "0xbad"' "0x5a1 registered, no 0xbad*"

echo "--- original policy again: the block node is allowed again"
# a new client: after a policy load the kernel re-checks each open file at its
# next use, and svirt_t may not read the test's FIFO (opened while permissive)
load /run/policy.orig ""
expect 0 setenforce 0
client y12 $C12 k-after,/dev/prh-xp-blk-c12,sgio after,/dev/prh-xp-blk-c12,reg,0xaf1
expect 0 setenforce 1
go y12 '^done'
result y12 k-after "$KERNEL_OK"
result y12 after "$GOOD"
check 'kill -0 $PRD_PID' "daemon still running"
expect 0 setenforce 0
prd_stop

echo "--- daemon log"; cat $LOGF
for c in x12 y12; do echo "--- client $c"; cat /run/xp-$c.out /run/xp-$c.log; done
rm -f /dev/prh-xp-*
finish
