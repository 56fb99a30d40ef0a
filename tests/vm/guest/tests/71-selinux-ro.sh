#!/bin/sh
# Finding 14.1: the SELinux check must not switch itself off while the kernel
# enforces. Needs the SELinux boot: tests/vm/run.sh --selinux selinux-ro
#
# selinuxfs read-only in the daemon's mount namespace (what container runtimes
# do) makes libselinux's is_selinux_enabled() say 0; a daemon trusting it
# logged "off: SELinux disabled" and let a VM reserve another VM's disk.
#   A. read-only before start, default mode, enforcing: the daemon refuses to
#      start and says why; if it does start (the old behaviour), the cross-MCS
#      request must still be refused (05/20/02) and LIO must show no key.
#   B. the same with --selinux=off: starts, "off: disabled by option" (only an
#      explicit option turns the check off).
#   C. read-only after start (remounted in the daemon's namespace while it
#      runs): the access query cannot be asked, so every request, same-MCS
#      too, is refused with 05/20/02 (fail closed); remounted read-write, the
#      same-MCS request works again.
# The host's own selinuxfs stays read-write throughout (a bind remount changes
# one mount only).
# Nodes, contexts and staged clients as in 70-svirt.sh (copied, not shared).
. $RIG/lib.sh
# Every deno here runs without the JIT, as in 70-svirt.sh: kernel_t and
# svirt_t have no execmem under enforcing.
DENO_FLAGS="$DENO_FLAGS --v8-flags=--jitless"
[ -d /sys/fs/selinux ] || skip "kernel not booted with SELinux (run-vm.sh -S)"
have_prhelperd || skip "prhelperd not in the tree yet"
have_deno || { echo "no deno"; exit 1; }
command -v unshare > /dev/null && command -v nsenter > /dev/null || { echo "no unshare/nsenter"; exit 1; }
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
I12=system_u:object_r:svirt_image_t:s0:c1,c2
I34=system_u:object_r:svirt_image_t:s0:c3,c4
SOCK=/run/prhelperd-ro.sock
LOGF=/run/prhelperd-ro.log
RO_SETUP="mount -o remount,bind,ro /sys/fs/selinux"

BDEV=$(cat /sys/class/block/${A##*/}/dev)
SDEV=$(cat /sys/class/scsi_generic/${SGA##*/}/dev)
echo "path 1: $A = $BDEV, $SGA = $SDEV"
mk() {  # mk NAME b|c MAJ:MIN CONTEXT
  rm -f /dev/$1
  mknod /dev/$1 $2 ${3%:*} ${3#*:} && chcon $4 /dev/$1 && echo "  /dev/$1: $(getfilecon /dev/$1)"
}
mk prh-ro-blk-c12 b $BDEV $I12; mk prh-ro-blk-c34 b $BDEV $I34; mk prh-ro-sg-c12 c $SDEV $I12

# ---- helpers (as in 70-svirt.sh, with driver/selinux_client.ts)
client() {  # client NAME CONTEXT JOB... : start a staged client; waits for "ready"
  local name=$1 ctx=$2 n=0
  shift 2
  rm -f /run/ro-$name.out /run/ro-$name.go
  mkfifo /run/ro-$name.go
  cd $PRJ
  _deno_lock
  runcon $ctx "$DENO" run $DENO_FLAGS -A \
    $RIG/driver/selinux_client.ts $SOCK /run/ro-$name.out /run/ro-$name.go "$@" \
    > /run/ro-$name.log 2>&1 &
  eval "CP_$name=\$!"
  cd /
  while ! grep -qs '^ready' /run/ro-$name.out && [ $n -lt 300 ] && kill -0 $! 2>/dev/null; do
    sleep 0.2; n=$((n+1))
  done
  if grep -qs '^ready' /run/ro-$name.out; then
    echo "client $name ($ctx) ready: $(cat /run/ro-$name.out)"
  else
    echo "  FAILED: client $name not ready"; FAILS=$((FAILS+1)); cat /run/ro-$name.log
  fi
}
go() {  # go NAME REGEX : let client NAME go on, wait until its output matches REGEX
  local pid n=0
  eval "pid=\$CP_$1"
  kill -0 $pid 2>/dev/null && echo > /run/ro-$1.go
  while ! grep -qsE "$2" /run/ro-$1.out && [ $n -lt 150 ] && kill -0 $pid 2>/dev/null; do
    sleep 0.2; n=$((n+1))
  done
  grep -qsE "$2" /run/ro-$1.out || {
    echo "  FAILED: client $1 did not reach /$2/"; FAILS=$((FAILS+1))
    cat /run/ro-$1.out /run/ro-$1.log
  }
}
result() {  # result NAME LABEL REGEX : the client's result line for LABEL must match
  R_LINE=$(grep "^RESULT $2 " /run/ro-$1.out 2>/dev/null) R_RE=$3
  check 'echo "$R_LINE" | grep -qE "$R_RE"' "client $1 $2: ${R_LINE:-no result} ~ /$3/"
}
DENIED='status=02 sense=5/20/02$'
GOOD='status=00$'
keys() { sg_persist --in --read-keys $B 2>&1 | grep -E '0x[0-9a-f]+|NO registered' | tr -s ' \n' ' '; }
log_has() { L_RE=$1; check 'grep -qE "$L_RE" $LOGF' "daemon log: /$1/"; }
host_rw() {  # the host's (this shell's) selinuxfs is still read-write and usable
  check '! grep -E " /sys/fs/selinux selinuxfs ro[, ]" /proc/mounts >/dev/null' "host selinuxfs still read-write"
}
# prd_ns SETUP ARGS... : prhelperd on $SOCK in a new mount namespace where the
# shell command SETUP runs first. Waits until it listens or exits.
prd_ns() {
  local setup=$1 n=0
  shift
  rm -f $SOCK
  _deno_lock
  (cd $PRJ && exec unshare -m --propagation private sh -c "$setup && exec \"\$@\"" prd \
    "$DENO" run $DENO_FLAGS -P=daemon main.ts -k $SOCK -v "$@") > $LOGF 2>&1 &
  PRD_PID=$!
  while ! grep -q 'listening on' $LOGF && [ $n -lt 600 ] && kill -0 $PRD_PID 2>/dev/null; do
    sleep 0.1; n=$((n+1))
  done
  if kill -0 $PRD_PID 2>/dev/null; then
    echo "prhelperd (pid $PRD_PID) listening after $((n/10)).$((n%10))s"
  else
    wait $PRD_PID; PRD_RC=$?
    echo "prhelperd (pid $PRD_PID) exited with $PRD_RC after $((n/10)).$((n%10))s"
    PRD_PID=
  fi
}

# ================================================================ A
echo "--- A: selinuxfs read-only before start, default mode; requests (if any) enforcing"
PRD_RC=
prd_ns "$RO_SETUP"
sed 's/^/    | /' $LOGF
check '[ -z "$PRD_PID" ] && [ "$PRD_RC" != 0 ]' "the daemon refused to start (rc ${PRD_RC:-none, it is running})"
log_has 'SELinux access check not possible while SELinux is active: SELinux is active but selinuxfs is mounted read-only at /sys/fs/selinux in this mount namespace'
check '! grep -q "SELinux access check: off" $LOGF' "never 'SELinux access check: off'"
host_rw
if [ -n "$PRD_PID" ]; then
  # the old behaviour: it runs. Then at least the cross-MCS request must fail.
  client a12 $C12 x-blk,/dev/prh-ro-blk-c34,reg,0xbad1
  expect 0 setenforce 1
  go a12 '^done'
  result a12 x-blk "$DENIED"
  K=$(keys); echo "  LIO keys: $K"
  check 'echo "$K" | grep -q "NO registered"' "no key registered through the read-only daemon"
  prd_stop
fi
expect 0 setenforce 0

# ================================================================ B
echo "--- B: the same namespace with --selinux=off: only the explicit option turns the check off"
prd_ns "$RO_SETUP" --selinux=off
check '[ -n "$PRD_PID" ]' "the daemon runs with --selinux=off"
log_has 'SELinux access check: off: disabled by option'
prd_stop

# ================================================================ C
echo "--- C: selinuxfs read-write at start, read-only while running"
lio_reset > /dev/null || exit 1
prd_ns true
check '[ -n "$PRD_PID" ]' "the daemon runs"
log_has 'SELinux access check: on \(permissive\), policy version [0-9]+ with no ioctl extended-permission rules'
client c12 $C12 same-1,/dev/prh-ro-blk-c12,reg,0xc121 pause \
  x-blk,/dev/prh-ro-blk-c34,reg,0xbad2 same-2,/dev/prh-ro-blk-c12,reg,0xc122 \
  same-sg,/dev/prh-ro-sg-c12,reg,0xc123 pause \
  same-3,/dev/prh-ro-blk-c12,reg,0xc124
expect 0 setenforce 1
echo "--- C1: working state: same MCS allowed"
go c12 '^paused 1'
result c12 same-1 "$GOOD"
echo "--- C2: $RO_SETUP in the daemon's namespace: every request refused"
expect 0 nsenter -m -t $PRD_PID $RO_SETUP
host_rw
go c12 '^paused 2'
result c12 x-blk "$DENIED"
result c12 same-2 "$DENIED"
result c12 same-sg "$DENIED"
log_has "avc: denied \{ ioctl \} for pid=[0-9]+ uid=0 gid=0 dev=$BDEV scontext=$C12 tcontext=$I12 tclass=blk_file permissive=0 mode=enforcing verdict=deny reason=av-query-failed detail=.*EROFS"
K=$(keys); echo "  LIO keys: $K"
check 'echo "$K" | grep -q "0xc121" && ! echo "$K" | grep -qE "0xbad2|0xc122|0xc123"' "only 0xc121 registered"
echo "--- C3: read-write again: same MCS allowed again"
expect 0 nsenter -m -t $PRD_PID mount -o remount,bind,rw /sys/fs/selinux
go c12 '^done'
result c12 same-3 "$GOOD"
check 'kill -0 $PRD_PID' "daemon still running"
expect 0 setenforce 0
prd_stop

echo "--- daemon log (C)"; cat $LOGF
for c in c12; do echo "--- client $c"; cat /run/ro-$c.out /run/ro-$c.log; done
rm -f /dev/prh-ro-*
finish
