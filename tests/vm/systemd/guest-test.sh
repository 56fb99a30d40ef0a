#!/bin/bash
# tests/vm/systemd/guest-test.sh - runs inside the VM as prhelperd-vmtest.service
# (systemd is PID 1). Installs the .deb with apt, exercises socket activation,
# checks the service's credentials thread by thread, serves PR commands on a
# LIO (tcm_loop) disk through the helper, checks the journal, stops the
# service and reports "VMTEST-RESULT: PASS|FAIL" on the console, then powers off.
set -u
DIR=/opt/prhelperd-test
SOCK=/run/prhelperd.sock
FAILS=0
ok()   { echo "VMTEST ok: $*"; }
bad()  { echo "VMTEST FAIL: $*"; FAILS=$((FAILS+1)); }
check() { if eval "$1"; then ok "$2"; else bad "$2"; fi; }
finish() {
  echo "--- journal of prhelperd (priority-tagged)"
  journalctl -u prhelperd.service -u prhelperd.socket -o short-precise --no-pager | tail -40
  echo "--- the service's own lines with their journal priority (from the <N> prefixes)"
  for p in 0 1 2 3 4 5 6 7; do
    # (not "<N>": this script's own output goes through journald, which would
    # take a leading <N> as a priority prefix, as it does for the daemon)
    journalctl -u prhelperd.service -p $p..$p -o cat --no-pager | sed "s/^/PRIORITY=$p /"
  done | grep -v -- '-- No entries --$' | tail -30
  if [ $FAILS = 0 ]; then echo "VMTEST-RESULT: PASS"; else echo "VMTEST-RESULT: FAIL ($FAILS)"; fi
  sync
  systemctl --no-block poweroff
  exit 0
}
trap finish EXIT

echo "=== prhelperd systemd VM test: $(uname -r), systemd $(systemctl --version | head -1 | cut -d' ' -f2)"
check '[ "$(ps -p 1 -o comm=)" = systemd ]' "systemd is PID 1"

# 1. install with apt (local file; every dependency is already in the rootfs)
deb=$(ls $DIR/prhelperd_*.deb | head -1)
# (no network in the VM: nothing needs downloading; "--no-download" would make
# apt 2.6 reject the local file with "Pathname to install is not absolute")
dpkg -i $DIR/acl_*.deb >/dev/null || bad "dpkg -i acl (the package's dependency)"
if DEBIAN_FRONTEND=noninteractive apt-get install -y "$deb"; then
  ok "apt-get install $(basename "$deb")"
else
  bad "apt-get install $(basename "$deb")"; exit 1
fi
check 'id prhelperd' "sysusers.d created the prhelperd user"
check 'prhelperd --help 2>&1 | grep -q "^Usage: prhelperd \[OPTIONS\]"' "prhelperd --help (installed launcher)"
check 'man -w prhelperd >/dev/null 2>&1 || [ -f /usr/share/man/man8/prhelperd.8.gz ]' "man page prhelperd(8) installed"
U=/usr/lib/systemd/system
out=$(systemd-analyze verify --man=no $U/prhelperd.socket $U/prhelperd.service 2>&1); rc=$?
[ -z "$out" ] || echo "$out"
check '[ $rc = 0 ] && [ -z "$out" ]' "systemd-analyze verify prhelperd.socket prhelperd.service: clean"
out=$(systemd-analyze security --offline=yes --threshold=20 --no-pager $U/prhelperd.service 2>&1); rc=$?
level=$(echo "$out" | sed -n 's/.*Overall exposure level for prhelperd.service: \([0-9.]*\).*/\1/p')
check '[ $rc = 0 ] && [ -n "$level" ]' "systemd-analyze security --offline=yes: exposure $level (goal 2.0 or lower)"
check '[ "$(systemctl is-enabled prhelperd.socket)" = enabled ]' "prhelperd.socket enabled by postinst"
check '[ "$(systemctl is-active prhelperd.socket)" = active ]' "prhelperd.socket active"
check '[ "$(systemctl is-active prhelperd.service)" = inactive ]' "service not started before a client"
check '[ "$(stat -c "%U:%G %a" $SOCK)" = "root:kvm 660" ]' "socket root:kvm 0660 ($(stat -c "%U:%G %a" $SOCK))"

# 2. a LIO disk: fileio backstore behind one tcm_loop I_T nexus
T=/sys/kernel/config/target
modprobe configfs; mountpoint -q /sys/kernel/config || mount -t configfs configfs /sys/kernel/config
for m in target_core_mod target_core_file tcm_loop sd_mod sg; do modprobe $m; done
mkdir -p /var/target/pr
W=$T/loopback/naa.5001405000000001
mkdir -p $W/tpgt_1/lun/lun_0
echo naa.5001405aaaaaaaa1 > $W/tpgt_1/nexus
truncate -s 64M /var/tmp/lun0.img
BS=$T/core/fileio_0/lun0; mkdir -p $BS
echo "fd_dev_name=/var/tmp/lun0.img,fd_dev_size=67108864" > $BS/control
echo 1 > $BS/enable
echo 5a1d0e8c-0000-4000-8000-00000000feed > $BS/wwn/vpd_unit_serial
ln -s $BS $W/tpgt_1/lun/lun_0/lun0
addr=$(cat $W/tpgt_1/address)
for i in $(seq 100); do
  DEV=$(ls /sys/class/scsi_device/$addr:0/device/block 2>/dev/null) && [ -b /dev/$DEV ] && break
  sleep 0.1
done
DEV=/dev/$DEV
check '[ -b $DEV ]' "LIO disk $DEV"

# 3. the first client connection activates the service; PR OUT + PR IN through it
check 'prhelperd client --socket $SOCK --out --register --param-sark=0x1234 $DEV' \
  "PR OUT REGISTER through the activated service"
check '[ "$(systemctl is-active prhelperd.service)" = active ]' "service activated by the connection"
out=$(prhelperd client --socket $SOCK --in --read-keys $DEV 2>&1); echo "$out"
check 'echo "$out" | grep -q 0x1234' "PR IN READ KEYS through the service shows the key"
out=$(sg_persist --no-inquiry --in --read-keys $DEV 2>&1); echo "$out"
check 'echo "$out" | grep -q 0x1234' "sg_persist (direct SG_IO) agrees"
check 'prhelperd client --socket $SOCK --out --reserve --param-rk=0x1234 --prout-type=1 $DEV' \
  "PR OUT RESERVE (write exclusive)"
out=$(prhelperd client --socket $SOCK --in --read-reservation $DEV 2>&1); echo "$out"
check 'echo "$out" | grep -qi "write exclusive"' "PR IN READ RESERVATION"

# 4. credentials of every thread of the running service
PID=$(systemctl show -p MainPID --value prhelperd.service)
UID_P=$(id -u prhelperd); GID_P=$(id -g prhelperd)
echo "service MainPID $PID; prhelperd = $UID_P:$GID_P"
n=0
for st in /proc/$PID/task/*/status; do
  # read once: a thread may end between the glob and the read (an idle pool thread)
  txt=$(cat $st 2>/dev/null)
  [ -n "$txt" ] || { echo "  tid $(basename $(dirname $st)): gone"; continue; }
  n=$((n+1))
  f() { printf '%s\n' "$txt" | awk -v k="$1" '$1 == k":" { $1 = ""; sub(/^ /, ""); print }'; }
  name=$(f Name)
  u=$(f Uid | tr '\t' ' '); g=$(f Gid | tr '\t' ' ')
  grp=$(f Groups | awk '{print $1}')
  ce=$(f CapEff); cp=$(f CapPrm); cb=$(f CapBnd); nnp=$(f NoNewPrivs)
  echo "  tid $(basename $(dirname $st)) $name: Uid $u Gid $g Groups [$grp] CapEff $ce CapPrm $cp CapBnd $cb NoNewPrivs $nnp"
  # Groups: systemd's User= adds the primary group (initgroups); nothing else.
  [ "$u" = "$UID_P $UID_P $UID_P $UID_P" ] && [ "$g" = "$GID_P $GID_P $GID_P $GID_P" ] &&
    { [ -z "$grp" ] || [ "$grp" = "$GID_P" ]; } &&
    [ "$ce" = 0000000000020000 ] && [ "$cp" = 0000000000020000 ] && [ "$cb" = 0000000000020000 ] &&
    [ "$nnp" = 1 ] || bad "thread $(basename $(dirname $st)) ($name) credentials"
done
check '[ $n -ge 5 ]' "checked $n threads: all prhelperd (no other group), CAP_SYS_RAWIO only, no_new_privs"
check '! journalctl -u prhelperd.service -o json --no-pager | grep -q "\"PRIORITY\":\"[0-4]\""' \
  "no warning or error in the service's journal (e.g. no missing CAP_SYS_RAWIO)"
status=$(systemctl show -p StatusText --value prhelperd.service); echo "StatusText: $status"
check '[ -n "$status" ]' "sd_notify STATUS= reached systemd"
check 'journalctl -u prhelperd.service -o json --no-pager | grep -q "\"PRIORITY\":\"6\""' \
  "journal has priority-6 (info) lines from the service"
check 'journalctl -u prhelperd.service -o json --no-pager | grep "\"PRIORITY\":\"6\"" | grep -q listening' \
  "the 'listening' line is tagged <6>"

# 5. stop drains cleanly
prhelperd client --socket $SOCK --out --release --param-rk=0x1234 --prout-type=1 $DEV >/dev/null
prhelperd client --socket $SOCK --out --register --param-rk=0x1234 --param-sark=0 $DEV >/dev/null
check 'systemctl stop prhelperd.service' "systemctl stop prhelperd.service"
check '[ "$(systemctl show -p Result --value prhelperd.service)" = success ]' "Result=success"
check '[ "$(systemctl show -p ExecMainStatus --value prhelperd.service)" = 0 ]' "exit status 0"
check 'journalctl -u prhelperd.service --no-pager | grep -q "stopped cleanly"' "journal: stopped cleanly"
check '[ "$(systemctl is-active prhelperd.socket)" = active ]' "socket still listening after the stop"
# a new client re-activates it
check 'prhelperd client --socket $SOCK --in --read-keys $DEV >/dev/null' "re-activation by the next client"
# the <N> prefixes are parsed: a warning is stored at priority 4, and no
# message keeps a literal "<N>" (journald stores stdout lines at 6 by default,
# so priority 6 alone would prove nothing)
check '! journalctl -u prhelperd.service -o cat --no-pager | grep -q "^<[0-7]>"' \
  "no message keeps a literal <N> prefix"
mkdir -p /run/systemd/system/prhelperd.service.d
printf '[Service]\nExecStart=\nExecStart=/usr/bin/prhelperd -T ignored-trace-spec\n' \
  > /run/systemd/system/prhelperd.service.d/warn.conf
systemctl daemon-reload
systemctl stop prhelperd.service
prhelperd client --socket $SOCK --in --read-keys $DEV > /dev/null
check 'journalctl -u prhelperd.service -p 4..4 -o cat --no-pager | grep -q "ignored-trace-spec"' \
  "a log.warning line (-T) is stored at PRIORITY=4"
rm -rf /run/systemd/system/prhelperd.service.d; systemctl daemon-reload
check 'systemctl stop prhelperd.socket prhelperd.service' "stop socket and service"

# 6. outside systemd, as root: as libvirt runs it (-k only: with the package's
#    prhelperd user present it switches to that user, issue 14.8), with -u root
#    (keeps uid 0), and with -u/-g. All re-execute themselves; SG_IO then runs
#    on a Worker thread of the re-executed process, on the real LUN.
threads_ok() {  # PID UID GID: every thread has exactly these ids, no groups, RAWIO only, CapBnd 0
  local pid=$1 uid=$2 gid=$3 st bad_threads=0
  for st in /proc/$pid/task/*/status; do
    grep -q "^Uid:.$uid.$uid.$uid.$uid\$" $st && grep -q "^Gid:.$gid.$gid.$gid.$gid\$" $st &&
      grep -q "^Groups:[[:space:]]*\$" $st && grep -q "^CapEff:.0000000000020000" $st &&
      grep -q "^CapPrm:.0000000000020000" $st && grep -q "^CapBnd:.0000000000000000" $st &&
      grep -q "^NoNewPrivs:.1" $st || {
        [ -e $st ] || continue   # an idle pool thread exited meanwhile
        bad_threads=$((bad_threads+1)); grep -E "^(Name|Uid|Gid|Groups|Cap|NoNew)" $st; }
  done
  [ $bad_threads = 0 ]
}
for mode in libvirt root drop; do
  sock=/run/prh-$mode.sock
  case $mode in
    libvirt) args="-k $sock"; uid=$(id -u prhelperd); gid=$(id -g prhelperd) ;;
    root) args="-k $sock -u root"; uid=0; gid=0 ;;
    *) args="-k $sock -u nobody -g nogroup"; uid=65534; gid=65534 ;;
  esac
  (cd / && exec /usr/bin/prhelperd $args < /dev/null > /run/prh-$mode.log 2>&1) &
  pid=$!
  for i in $(seq 600); do [ -S $sock ] && break; sleep 0.1; done
  check "prhelperd client --socket $sock --out --register --param-sark=0x77 $DEV" \
    "$mode ($args): PR OUT REGISTER on the LUN"
  out=$(prhelperd client --socket $sock --in --read-keys $DEV 2>&1)
  check 'echo "$out" | grep -q 0x77' "$mode: PR IN READ KEYS shows the key"
  check "threads_ok $pid $uid $gid" "$mode: every thread uid $uid gid $gid, no groups, CAP_SYS_RAWIO only, CapBnd 0"
  prhelperd client --socket $sock --out --register --param-rk=0x77 --param-sark=0 $DEV > /dev/null
  kill -TERM $pid; wait $pid; rc=$?
  check '[ $rc = 0 ]' "$mode: SIGTERM exits 0"
  cat /run/prh-$mode.log
done
