#!/bin/bash
# tests/vm/systemd/guest-selinux.sh - `run.sh -g selinux`: the installed
# package under SELinux enforcing (Debian's refpolicy), in a systemd boot.
# Runs as prhelperd-vmtest.service in initrc_t (stage-selinux.sh labels it).
#
#  1. The boot enforces (selinux=1 security=selinux enforcing=1, labelled
#     rootfs); apt installs the .deb, whose postinst loads the prhelperd
#     module and relabels the package's files.
#  2. Two LIO LUNs, A and B. Their nodes are labelled like libvirt labels a
#     domain's disks: A svirt_image_t:s0:c1,c2, B svirt_image_t:s0:c3,c4.
#  3. The first connection (a plain connect) activates the service, which
#     must run in prhelperd_t. Clients run as sVirt QEMUs do (svirt_t:s0:c1,c2
#     and :c3,c4: the staged test client, run by a copy of the runtime
#     labelled qemu_exec_t, entered from virtd_t like libvirt does).
#  4. Each domain's own LUN works (block and sg nodes). Domain A holding an fd
#     of LUN B (opened while the node still carried A's label, then relabelled
#     to B's, as libvirt does when the disk moves to another domain) is
#     refused with CHECK CONDITION 05/20/02, the daemon logs the denial, and
#     LUN B's registrations (read with sg_persist, directly) are unchanged.
#  5. Root's `prhelperd -k` started from this script (initrc_t, as an init
#     script would; libvirt's managed mode also runs it as root with -k) lands
#     in prhelperd_t, drops to the prhelperd user and serves domain A.
#  6. No AVC denial naming prhelperd's types in the audit log or the journal
#     during the whole run.
set -u
DIR=/opt/prhelperd-test
SOCK=/run/prhelperd.sock
FAILS=0
ok()   { echo "VMTEST ok: $*"; }
bad()  { echo "VMTEST FAIL: $*"; FAILS=$((FAILS+1)); }
check() { if eval "$1"; then ok "$2"; else bad "$2"; fi; }
kernel_avcs() {  # the kernel's AVC denials of this boot (audit log, kernel and audit journal)
  { cat /var/log/audit/audit.log 2>/dev/null
    journalctl -b -k -o cat --no-pager 2>/dev/null
    journalctl -b _TRANSPORT=audit -o cat --no-pager 2>/dev/null; } | grep -E 'avc: +denied'
}
avcs() { kernel_avcs | grep -E 'prhelperd_(t|exec_t|runtime_t)'; }
finish() {
  echo "--- journal of prhelperd"
  journalctl -u prhelperd.service -u prhelperd.socket -o short-precise --no-pager | tail -40
  for c in c12 c34 m12; do
    echo "--- client $c"; cat /var/tmp/svirt-$c/out /var/tmp/svirt-$c/log 2>/dev/null
  done
  echo "--- AVC denials naming prhelperd"; avcs | sed 's/^.*avc: /avc: /' | sort -u
  echo "--- AVC denials of the boot (audit log and journal), first 40"
  kernel_avcs | sed 's/^.*avc: /avc: /' | sort -u | head -40
  if [ $FAILS = 0 ]; then echo "VMTEST-RESULT: PASS"; else echo "VMTEST-RESULT: FAIL ($FAILS)"; fi
  sync
  systemctl --no-block poweroff
  exit 0
}
trap finish EXIT

echo "=== prhelperd systemd VM test (SELinux): $(uname -r), systemd $(systemctl --version | head -1 | cut -d' ' -f2)"
check '[ "$(getenforce)" = Enforcing ]' "SELinux enforcing ($(getenforce))"
check 'grep -q "^SELINUXTYPE=default" /etc/selinux/config && [ -e /sys/fs/selinux/enforce ]' \
  "refpolicy (default) loaded"
echo "test script context: $(id -Z)"

# 1. install: the module is loaded, the files labelled
deb=$(ls $DIR/prhelperd_*.deb | head -1)
# the package's dependency acl (staged: the VM has no network)
check 'dpkg -i $DIR/acl_*.deb >/dev/null' "dpkg -i acl (the package's dependency)"
if DEBIAN_FRONTEND=noninteractive apt-get install -y "$deb"; then
  ok "apt-get install $(basename "$deb")"
else
  bad "apt-get install $(basename "$deb")"; exit 1
fi
check 'semodule -l | grep -qx prhelperd' "postinst loaded the prhelperd policy module"
for f in /usr/bin/prhelperd /usr/lib/prhelperd/deno /usr/lib/prhelperd/prhelperd.js; do
  check "[ \"\$(stat -c %C $f)\" = system_u:object_r:prhelperd_exec_t:s0 ]" \
    "$f labelled prhelperd_exec_t ($(stat -c %C $f))"
done
check '[ "$(systemctl is-active prhelperd.socket)" = active ]' "prhelperd.socket active"
check '[ "$(stat -c %C $SOCK)" = system_u:object_r:prhelperd_runtime_t:s0 ]' \
  "$SOCK labelled prhelperd_runtime_t ($(stat -c %C $SOCK))"
check '[ "$(systemctl is-active prhelperd.service)" = inactive ]' "service not started before a client"

# the first connection (a plain connect from this unconfined script) starts
# the service; it must run in prhelperd_t
socat -u /dev/null UNIX-CONNECT:$SOCK
for i in $(seq 60); do [ "$(systemctl is-active prhelperd.service)" = active ] && break; sleep 1; done
if [ "$(systemctl is-active prhelperd.service)" != active ]; then
  bad "service activated by a connection ($(systemctl is-active prhelperd.service))"
  journalctl -u prhelperd.service -o short-precise --no-pager | tail -30
  avcs | head -30
  exit 1
fi
ok "service activated by a connection"
PID=$(systemctl show -p MainPID --value prhelperd.service)
ps -o pid,label,args -p $PID | cut -c1-160
check "ps -o label= -p $PID | grep -q '^system_u:system_r:prhelperd_t:s0\$'" \
  "the unit's daemon runs in prhelperd_t: $(ps -o label= -p $PID)"
check "! ps -eL -o label=,comm=,pid= | awk '\$3 == $PID' | grep -v prhelperd_t" \
  "every thread of the daemon in prhelperd_t"
check "tr '\\0' ' ' < /proc/$PID/cmdline | grep -q -- '--jitless'" "the daemon runs V8 without the JIT"
check 'journalctl -u prhelperd.service -o cat --no-pager | grep -q "SELinux access check: on (enforcing)"' \
  "the daemon's access check is on (enforcing)"

# 2. LIO: two fileio LUNs behind one tcm_loop I_T nexus
T=/sys/kernel/config/target
modprobe configfs; mountpoint -q /sys/kernel/config || mount -t configfs configfs /sys/kernel/config
for m in target_core_mod target_core_file tcm_loop sd_mod sg; do modprobe $m; done
mkdir -p /var/target/pr
W=$T/loopback/naa.5001405000000001
mkdir -p $W/tpgt_1
echo naa.5001405aaaaaaaa1 > $W/tpgt_1/nexus
for n in 0 1; do
  truncate -s 16M /var/tmp/lun$n.img
  BS=$T/core/fileio_$n/lun$n; mkdir -p $BS $W/tpgt_1/lun/lun_$n
  echo "fd_dev_name=/var/tmp/lun$n.img,fd_dev_size=16777216" > $BS/control
  echo 1 > $BS/enable
  echo 5a1d0e8c-0000-4000-8000-00000000fee$n > $BS/wwn/vpd_unit_serial
  ln -s $BS $W/tpgt_1/lun/lun_$n/lun$n
done
addr=$(cat $W/tpgt_1/address)
devs() {  # LUN: "sdX sgY" of LUN
  local b s
  b=$(ls /sys/class/scsi_device/$addr:$1/device/block 2>/dev/null)
  s=$(ls /sys/class/scsi_device/$addr:$1/device/scsi_generic 2>/dev/null)
  [ -n "$b" ] && [ -n "$s" ] && [ -b /dev/$b ] && [ -c /dev/$s ] && echo "$b $s"
}
for i in $(seq 100); do
  A=$(devs 0) && B=$(devs 1) && break
  sleep 0.1
done
read -r BLK_A SG_A <<< "$A"; read -r BLK_B SG_B <<< "$B"
check '[ -b /dev/$BLK_A ] && [ -b /dev/$BLK_B ] && [ -c /dev/$SG_A ]' \
  "LIO LUN A /dev/$BLK_A (/dev/$SG_A), LUN B /dev/$BLK_B"

# labelled nodes, as libvirt labels the disks of two running domains
I12=system_u:object_r:svirt_image_t:s0:c1,c2
I34=system_u:object_r:svirt_image_t:s0:c3,c4
node() {  # node NAME b|c sysfs-dev CONTEXT
  rm -f /dev/$1
  mknod /dev/$1 $2 $(tr : ' ' < $3) && chcon $4 /dev/$1 && echo "  /dev/$1: $(stat -c %C /dev/$1)"
}
node prh-a b /sys/class/block/$BLK_A/dev $I12
node prh-a-sg c /sys/class/scsi_generic/$SG_A/dev $I12
node prh-b b /sys/class/block/$BLK_B/dev $I34
# LUN B's node that domain A opens while it still carries A's label
node prh-b-moved b /sys/class/block/$BLK_B/dev $I12

# 3. sVirt clients: virtd_t (a shell labelled virtd_exec_t, entered from
# initrc_t) runs `runcon svirt_t:s0:cX,cY` on a runtime copy labelled
# qemu_exec_t (svirt_t's entry point), the way libvirtd starts QEMU.
install -m755 /bin/sh $DIR/virtd-sh
chcon system_u:object_r:virtd_exec_t:s0 $DIR/virtd-sh
install -m755 /usr/lib/prhelperd/deno $DIR/qemu-deno
chcon system_u:object_r:qemu_exec_t:s0 $DIR/qemu-deno $DIR/svirt_client.js
client() {  # client NAME MCS JOB...: start; wait for "ready"
  local name=$1 mcs=$2 d=/var/tmp/svirt-$1 n=0
  shift 2
  rm -rf $d; mkdir -p $d/deno; mkfifo $d/go; : > $d/out; : > $d/log
  chcon -R system_u:object_r:svirt_image_t:s0:$mcs $d
  DENO_DIR=$d/deno HOME=$d DENO_NO_UPDATE_CHECK=1 $DIR/virtd-sh -c "cd $d && exec runcon \
    system_u:system_r:svirt_t:s0:$mcs $DIR/qemu-deno run --no-config --no-prompt \
    --v8-flags=--jitless -A $DIR/svirt_client.js $SOCK $d/out $d/go $* \
    >> $d/log 2>&1 < /dev/null" &
  while ! grep -qs '^ready' $d/out && [ $n -lt 300 ]; do sleep 0.2; n=$((n+1)); done
  check "grep -qs '^ready' $d/out" "client $name (svirt_t:s0:$mcs) connected, opened its nodes: $(head -1 $d/out)"
}
go() {  # go NAME REGEX: let client NAME go on until its output matches REGEX
  local d=/var/tmp/svirt-$1 n=0
  echo > $d/go
  while ! grep -qsE "$2" $d/out && [ $n -lt 300 ]; do sleep 0.2; n=$((n+1)); done
  check "grep -qsE '$2' $d/out" "client $1 reached /$2/"
}
result() {  # result NAME LABEL REGEX
  local line
  line=$(grep "^RESULT $2 " /var/tmp/svirt-$1/out 2>/dev/null)
  check "echo '$line' | grep -qE '$3'" "client $1 $2: ${line:-no result} ~ /$3/"
}
keys() { sg_persist --no-inquiry --in --read-keys /dev/$1 2>&1 | grep -E '0x[0-9a-f]+|no registered' | xargs; }
DENIED='status=02 sense=5/20/02$'
GOOD='status=00$'

client c12 c1,c2 a-blk,/dev/prh-a,reg,0xa1 a-sg,/dev/prh-a-sg,reg,0xa2 \
  x-blk,/dev/prh-b-moved,reg,0xbad1
check "[ \"\$(systemctl show -p MainPID --value prhelperd.service)\" = $PID ]" \
  "the same daemon serves the sVirt client"

# domain B's node moves away from A: the relabel libvirt makes when B starts
chcon $I34 /dev/prh-b-moved
echo "  /dev/prh-b-moved (held open by c12): $(stat -c %C /dev/prh-b-moved)"
go c12 '^done'
result c12 a-blk "$GOOD"
result c12 a-sg "$GOOD"
result c12 x-blk "$DENIED"
K=$(keys $BLK_B); echo "  LUN B keys: $K"
check 'echo "$K" | grep -qi "no registered"' "LUN B unchanged after the refused request"
K=$(keys $BLK_A); echo "  LUN A keys: $K"
# (block and sg node share LIO's one I_T nexus: the second registration replaced the first)
check 'echo "$K" | grep -q 0xa2 && ! echo "$K" | grep -q 0xbad' "LUN A has A's key 0xa2 (registered through the sg node)"
check 'journalctl -u prhelperd.service -o cat --no-pager | grep -qE "avc: denied \{ ioctl \} .*scontext=system_u:system_r:svirt_t:s0:c1,c2 tcontext=$I34 tclass=blk_file .*verdict=deny"' \
  "the daemon logged the refusal (avc: denied, verdict=deny)"

client c34 c3,c4 b-blk,/dev/prh-b,reg,0xb1
go c34 '^done'
result c34 b-blk "$GOOD"
K=$(keys $BLK_B); echo "  LUN B keys: $K"
check 'echo "$K" | grep -q 0xb1 && ! echo "$K" | grep -q 0xbad' "LUN B has B's key 0xb1 only"

# 5. the daemon's own domain: no AVC denial at all
check 'systemctl stop prhelperd.service' "systemctl stop prhelperd.service"
check '[ "$(systemctl show -p Result --value prhelperd.service)" = success ]' "Result=success"

# 6. a managed-style start: root runs `prhelperd -k` as libvirt's managed mode
# does, here from this script's initrc_t, which refpolicy lets enter
# prhelperd_t on prhelperd_exec_t (libvirtd itself runs it from virtd_t,
# without a transition). Its output goes to a file it may write.
echo "--- managed-style start from initrc_t: prhelperd -k /run/prh-managed.sock"
: > /run/prh-managed.log; chcon -t prhelperd_runtime_t /run/prh-managed.log
(cd / && exec /usr/bin/prhelperd -k /run/prh-managed.sock < /dev/null >> /run/prh-managed.log 2>&1) &
MPID=$!
# (stage 1 makes the socket; the re-executed stage 2 logs "listening on" once it serves)
for i in $(seq 240); do
  grep -q "listening on" /run/prh-managed.log && break; kill -0 $MPID 2>/dev/null || break; sleep 0.5
done
ctx=$(tr -d '\0' < /proc/$MPID/attr/current 2>/dev/null)
check '[ "$ctx" = system_u:system_r:prhelperd_t:s0 ]' "root's prhelperd -k from initrc_t runs in prhelperd_t ($ctx)"
check '[ "$(stat -c %C /run/prh-managed.sock 2>/dev/null)" = system_u:object_r:prhelperd_runtime_t:s0 ]' \
  "its socket is prhelperd_runtime_t (type transition in /run)"
muid=$(awk '/^Uid:/ { print $2 }' /proc/$MPID/status 2>/dev/null)
check '[ "$muid" = "$(id -u prhelperd)" ] && grep -q "running as uid $muid .*CAP_SYS_RAWIO effective" /run/prh-managed.log' \
  "it dropped to the prhelperd user (uid $muid)"
SOCK=/run/prh-managed.sock client m12 c1,c2 m-blk,/dev/prh-a,reg,0xa3
go m12 '^done'
result m12 m-blk "$GOOD"
K=$(keys $BLK_A); echo "  LUN A keys: $K"
check 'echo "$K" | grep -q 0xa3' "LUN A has 0xa3 (through the managed-style helper)"
kill -TERM $MPID 2>/dev/null; wait $MPID; rc=$?
check '[ $rc = 0 ]' "SIGTERM: exit 0"
grep -v turbocall /run/prh-managed.log | sed 's/^/  managed: /' | tail -12

# 7. the daemon's own domain: no AVC denial at all, in the whole run
n=$(avcs | wc -l)
avcs | head -20
check '[ -s /var/log/audit/audit.log ] && [ "$n" = 0 ]' \
  "no AVC denial naming prhelperd in /var/log/audit/audit.log or the journal ($n)"
