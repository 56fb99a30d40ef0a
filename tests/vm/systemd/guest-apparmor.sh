#!/bin/bash
# tests/vm/systemd/guest-apparmor.sh - the AppArmor deployment (issue 17),
# in the systemd VM (Debian's kernel boots with AppArmor, Debian's default):
# tests/vm/systemd/run.sh -g apparmor
#
# 1. apt installs the .deb; its postinst loads /etc/apparmor.d/usr.bin.prhelperd
#    and the socket-activated service runs confined by it, in enforce mode.
# 2. Two LIO LUNs, two domains; libvirt's own virt-aa-helper writes and loads
#    their libvirt-<uuid> profiles from the domain XML (each gets its LUN).
#    The package's abstractions/libvirt-qemu.d/prhelperd rule is included the
#    way an admin includes it on Debian 12's libvirt 9.0 (local/abstractions).
# 3. A real QEMU under VM A's profile connects to the shared socket
#    (pr-manager-helper object).
# 4. rigtool, standing in for QEMU's PR requests, under each VM's profile: own
#    LUN PR OUT/IN pass; VM A cannot open LUN B by name (the kernel), and a
#    node named like its own disk in a private /dev (as libvirt's namespaces
#    build one) but with LUN B's number is refused by prhelperd with
#    05/20/02, LIO unchanged.
# 5. No AppArmor denial for the prhelperd profile during the whole run.
set -u
DIR=/opt/prhelperd-test
SOCK=/run/prhelperd.sock
FAILS=0
ok()   { echo "VMTEST ok: $*"; }
bad()  { echo "VMTEST FAIL: $*"; FAILS=$((FAILS+1)); }
check() { if eval "$1"; then ok "$2"; else bad "$2"; fi; }
denials() {  # every AppArmor record about the prhelperd profile (kernel log and auditd)
  { journalctl -k -o cat --no-pager 2>/dev/null; cat /var/log/audit/audit.log 2>/dev/null; } |
    grep -E 'apparmor="(DENIED|ALLOWED)"' | grep -E 'profile="prhelperd"|peer="prhelperd"' | sort -u
}
finish() {
  echo "--- journal of prhelperd"
  journalctl -u prhelperd.service -o short-precise --no-pager | tail -40
  echo "--- AppArmor records about prhelperd"
  denials | tail -40
  if [ $FAILS = 0 ]; then echo "VMTEST-RESULT: PASS"; else echo "VMTEST-RESULT: FAIL ($FAILS)"; fi
  sync
  systemctl --no-block poweroff
  exit 0
}
trap finish EXIT

echo "=== prhelperd systemd VM test (AppArmor): $(uname -r)"
check 'aa-enabled --quiet' "AppArmor enabled ($(cat /sys/kernel/security/lsm))"

# 1. install: the profile is loaded by postinst
deb=$(ls $DIR/prhelperd_*.deb | head -1)
dpkg -i $DIR/acl_*.deb >/dev/null || bad "dpkg -i acl (the package's dependency)"
if DEBIAN_FRONTEND=noninteractive apt-get install -y "$deb"; then ok "apt-get install"; else bad "apt-get install"; exit 1; fi
check 'grep -qx "prhelperd (enforce)" /sys/kernel/security/apparmor/profiles' \
  "postinst loaded the prhelperd profile in enforce mode"
check '[ -f /etc/apparmor.d/abstractions/libvirt-qemu.d/prhelperd ]' "libvirt-qemu.d snippet installed"

# 2. two LUNs behind one tcm_loop nexus
T=/sys/kernel/config/target
modprobe configfs; mountpoint -q /sys/kernel/config || mount -t configfs configfs /sys/kernel/config
for m in target_core_mod target_core_file tcm_loop sd_mod sg; do modprobe $m; done
mkdir -p /var/target/pr
W=$T/loopback/naa.5001405000000001
mkdir -p $W/tpgt_1
echo naa.5001405aaaaaaaa1 > $W/tpgt_1/nexus   # the nexus first: LUNs linked later are scanned
for n in 0 1; do
  mkdir -p $W/tpgt_1/lun/lun_$n
  truncate -s 32M /var/tmp/lun$n.img
  BS=$T/core/fileio_$n/lun$n; mkdir -p $BS
  echo "fd_dev_name=/var/tmp/lun$n.img,fd_dev_size=33554432" > $BS/control
  echo 1 > $BS/enable
  echo 5a1d0e8c-0000-4000-8000-00000000aa0$n > $BS/wwn/vpd_unit_serial
  ln -s $BS $W/tpgt_1/lun/lun_$n/lun$n
done
addr=$(cat $W/tpgt_1/address)
for i in $(seq 300); do
  DA=$(ls /sys/class/scsi_device/$addr:0/device/block 2>/dev/null)
  DB=$(ls /sys/class/scsi_device/$addr:1/device/block 2>/dev/null)
  [ -n "$DA" ] && [ -n "$DB" ] && [ -b /dev/$DA ] && [ -b /dev/$DB ] && break
  sleep 0.1
done
DA=/dev/$DA DB=/dev/$DB
check '[ -b $DA ] && [ -b $DB ]' "LIO LUNs: A=$DA B=$DB"
keys() { sg_persist --no-inquiry --in --read-keys $1 2>&1 | grep -E '0x[0-9a-f]+|NO registered' | tr -s ' \n' ' '; }

# 3. the service, activated by a first (unconfined) client, runs confined
check "prhelperd client --socket $SOCK --in --read-keys $DA" "first client activates the service"
PID=$(systemctl show -p MainPID --value prhelperd.service)
check '[ "$(cat /proc/$PID/attr/apparmor/current)" = "prhelperd (enforce)" ]' \
  "the service runs as \"$(cat /proc/$PID/attr/apparmor/current 2>&1)\""
check 'journalctl -u prhelperd.service -o cat --no-pager | grep -q "AppArmor access check: on (unconfined clients allowed)"' \
  "the daemon's AppArmor check is on"

# 4. per-VM profiles from libvirt's virt-aa-helper
echo "  include <abstractions/libvirt-qemu.d/prhelperd>" >> /etc/apparmor.d/local/abstractions/libvirt-qemu
# the test's stand-in for QEMU's PR requests must be mappable under the VM profiles
echo "  $DIR/rigtool mr," >> /etc/apparmor.d/local/abstractions/libvirt-qemu
UA=11111111-2222-3333-4444-00000000000a
UB=11111111-2222-3333-4444-00000000000b
domain() {  # domain NAME UUID DISK
  cat <<EOF
<domain type='qemu'>
  <name>$1</name>
  <uuid>$2</uuid>
  <memory unit='MiB'>64</memory>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='block' device='lun'>
      <driver name='qemu' type='raw'/>
      <source dev='$3'>
        <reservations managed='no'>
          <source type='unix' path='$SOCK' mode='client'/>
        </reservations>
      </source>
      <target dev='sda' bus='scsi'/>
    </disk>
    <controller type='scsi' model='virtio-scsi'/>
  </devices>
</domain>
EOF
}
for v in A B; do
  eval "u=\$U$v d=\$D$v"
  domain vm-$v $u $d > /run/vm-$v.xml
  out=$(/usr/lib/libvirt/virt-aa-helper -c -u libvirt-$u < /run/vm-$v.xml 2>&1); rc=$?
  [ -n "$out" ] && echo "$out"
  check '[ $rc = 0 ] && grep -qx "libvirt-$u (enforce)" /sys/kernel/security/apparmor/profiles' \
    "virt-aa-helper made and loaded libvirt-$u (vm-$v)"
  echo "  libvirt-$u.files:"; sed 's/^/    /' /etc/apparmor.d/libvirt/libvirt-$u.files
  check "grep -q '\"$d\" rwk' /etc/apparmor.d/libvirt/libvirt-$u.files" "vm-$v's profile names its disk $d"
  check "apparmor_parser -p /etc/apparmor.d/libvirt/libvirt-$u 2>/dev/null | grep -q 'run/prhelperd.sock rw'" \
    "vm-$v's profile includes the prhelperd socket rule"
done

echo "--- a confined QEMU (libvirt-$UA) connects to the shared helper"
out=$(printf '{"execute":"qmp_capabilities"}\n{"execute":"query-status"}\n{"execute":"quit"}\n' |
  timeout 120 aa-exec -p libvirt-$UA -- qemu-system-x86_64 -machine none -nodefaults -display none \
    -object pr-manager-helper,id=pr0,path=$SOCK -qmp stdio 2>&1); rc=$?
echo "$out" | tail -5
check '[ $rc = 0 ] && echo "$out" | grep -q "\"return\""' "QEMU's pr-manager-helper connected under libvirt-$UA (exit $rc)"

echo "--- each VM's PR requests on its own LUN"
as() { local u=$1; shift; aa-exec -p libvirt-$u -- "$@"; }
R=$DIR/rigtool
out=$(as $UA $R prh-out $SOCK $DA 6 0 0 0xa1 2>&1); rc=$?; echo "$out"
check '[ $rc = 0 ]' "vm-A: PR OUT REGISTER on LUN A"
out=$(as $UA $R prh-in $SOCK $DA 0 2>&1); rc=$?; echo "$out"
check '[ $rc = 0 ] && echo "$out" | grep -q 0xa1' "vm-A: PR IN READ KEYS on LUN A"
out=$(as $UB $R prh-out $SOCK $DB 6 0 0 0xb1 2>&1); rc=$?; echo "$out"
check '[ $rc = 0 ]' "vm-B: PR OUT REGISTER on LUN B"
KB=$(keys $DB); echo "  LUN B keys: $KB"
check 'echo "$KB" | grep -q 0xb1' "LUN B has vm-B's key"

echo "--- cross-VM: vm-A at LUN B"
out=$(as $UA $R prh-out $SOCK $DB 6 0 0 0xbad1 2>&1); rc=$?; echo "$out"
check '[ $rc = 2 ] && echo "$out" | grep -q "Permission denied"' "the kernel: vm-A cannot open $DB"
# a private /dev as libvirt's namespaces make one, where the name vm-A's
# profile allows is a node of LUN B
MAJMIN=$(stat -c '%t %T' $DB)
out=$(unshare -m sh -c "mount -t tmpfs prh-dev /dev && mknod $DA b \$((0x${MAJMIN% *})) \$((0x${MAJMIN#* })) &&
  exec aa-exec -p libvirt-$UA -- $R prh-out $SOCK $DA 6 0 0 0xbad2" 2>&1); rc=$?; echo "$out"
check '[ $rc = 1 ] && echo "$out" | grep -q "sense: key 0x5 asc 0x20 ascq 0x02"' \
  "vm-A's request on LUN B through a node named $DA: 05/20/02"
out=$(unshare -m sh -c "mount -t tmpfs prh-dev /dev && mknod $DA b \$((0x${MAJMIN% *})) \$((0x${MAJMIN#* })) &&
  exec aa-exec -p libvirt-$UA -- $R prh-out $SOCK $DA 3 0 0xb1 0" 2>&1); rc=$?; echo "$out"
check '[ $rc = 1 ] && echo "$out" | grep -q "sense: key 0x5 asc 0x20 ascq 0x02"' "vm-A's CLEAR on LUN B: 05/20/02"
K=$(keys $DB); echo "  LUN B keys: $K"
check '[ "$K" = "$KB" ]' "LUN B unchanged"
check "journalctl -u prhelperd.service -o cat --no-pager | grep -q 'apparmor=\"DENIED\" operation=\"sg_io\" profile=\"libvirt-$UA\" name=\"$DB\"'" \
  "the daemon logged apparmor=\"DENIED\" for libvirt-$UA on $DB"

# 5. the daemon's own profile: no denial all along
check 'kill -0 $PID' "service still running"
check 'systemctl stop prhelperd.service' "systemctl stop"
check '[ "$(systemctl show -p Result --value prhelperd.service)" = success ]' "Result=success"
D=$(denials); [ -n "$D" ] && echo "$D"
check '[ -z "$D" ]' "no AppArmor denial for the prhelperd profile during the run"
