#!/bin/bash
# tests/vm/systemd/guest-libvirt.sh - libvirt end to end (issue 15.1), run by
# `tests/vm/systemd/run.sh -g libvirt` as the test unit of the systemd VM.
#
# Debian 12's libvirtd starts two small domains (direct kernel boot: the
# VM's own Debian kernel and a busybox initramfs with sg_persist, built here;
# TCG inside TCG), each with a <disk type='block' device='lun'> on a LIO LUN:
#   prA: <reservations managed='yes'/>: libvirt spawns /usr/bin/prhelperd
#        (qemu.conf pr_helper) for it;
#   prB: <reservations managed='no'> on /run/prhelperd.sock, the packaged
#        socket-activated prhelperd.service.
# The guests register and reserve with sg_persist; the host sees the keys on
# the LUNs. Then: LUN hot-plug (managed into prB: libvirt starts a helper for
# it, and stops it on unplug; shared into prA: both domains on the shared
# helper at once), restarts of libvirtd and prhelperd.service and a killed
# managed helper (PR works again after each), virsh destroy (no helper,
# socket, lock file or pidfile left), and no sd_notify traffic from a managed
# helper to libvirtd's NOTIFY_SOCKET.
#
# AppArmor is kept out (qemu.conf security_driver = "none"): its confinement
# of the helper is another issue's. DAC stays on: QEMU runs as libvirt-qemu.
set -u
DIR=/opt/prhelperd-test
FAILS=0
DONE=0
T0=$(date +%s)
ok()   { echo "VMTEST ok: $*"; }
bad()  { echo "VMTEST FAIL: $*"; FAILS=$((FAILS+1)); }
check() { if eval "$1"; then ok "$2"; else bad "$2"; fi; }
elapsed() { echo $(( $(date +%s) - T0 )); }
finish() {
  echo "--- libvirtd journal (tail)"
  journalctl -u libvirtd.service -o short-precise --no-pager | tail -25
  echo "--- prhelperd.service journal (tail)"
  journalctl -u prhelperd.service -o short-precise --no-pager | tail -15
  for n in prA prB; do
    echo "--- $n: guest serial (tail)"; tail -15 /run/l2-$n.log 2>/dev/null
    echo "--- $n: qemu log (tail)"; tail -8 /var/log/libvirt/qemu/$n.log 2>/dev/null
  done
  echo "TIMING libvirt e2e total: $(elapsed)s"
  # a run cut short (an early exit, the unit's timeout) is no pass
  [ $DONE = 1 ] || bad "the test did not run to its end"
  if [ $FAILS = 0 ]; then echo "VMTEST-RESULT: PASS"; else echo "VMTEST-RESULT: FAIL ($FAILS)"; fi
  sync
  systemctl --no-block poweroff
  exit 0
}
trap finish EXIT

echo "=== prhelperd systemd VM test (libvirt): $(uname -r), $(libvirtd --version)"

# ---------------------------------------------------------------- 1. install
deb=$(ls $DIR/prhelperd_*.deb | head -1)
dpkg -i $DIR/acl_*.deb >/dev/null || bad "dpkg -i acl (the package's dependency)"
if DEBIAN_FRONTEND=noninteractive apt-get install -y "$deb" > /run/apt.log 2>&1; then
  ok "apt-get install $(basename "$deb")"
else
  cat /run/apt.log; bad "apt-get install"; exit 1
fi
check '[ "$(systemctl is-active prhelperd.socket)" = active ]' "prhelperd.socket active"

# ---------------------------------------------------------------- 2. LIO: four LUNs
T=/sys/kernel/config/target
modprobe configfs; mountpoint -q /sys/kernel/config || mount -t configfs configfs /sys/kernel/config
for m in target_core_mod target_core_file tcm_loop sd_mod sg; do modprobe $m; done
W=$T/loopback/naa.5001405000000002
mkdir -p $W/tpgt_1
echo naa.5001405bbbbbbbb2 > $W/tpgt_1/nexus
declare -A DEV
for i in 0 1 2 3; do
  truncate -s 16M /var/tmp/lun$i.img
  BS=$T/core/fileio_$i/lun$i; mkdir -p $BS
  echo "fd_dev_name=/var/tmp/lun$i.img,fd_dev_size=16777216" > $BS/control
  echo 1 > $BS/enable
  echo "5a1d0e8c-0000-4000-8000-0000000000a$i" > $BS/wwn/vpd_unit_serial
  mkdir -p $W/tpgt_1/lun/lun_$i
  ln -s $BS $W/tpgt_1/lun/lun_$i/lun$i
done
addr=$(cat $W/tpgt_1/address)
for i in 0 1 2 3; do
  for n in $(seq 100); do
    d=$(ls /sys/class/scsi_device/$addr:$i/device/block 2>/dev/null) && [ -b /dev/$d ] && break
    sleep 0.1
  done
  DEV[$i]=/dev/$d
done
check '[ -b "${DEV[0]}" ] && [ -b "${DEV[1]}" ] && [ -b "${DEV[2]}" ] && [ -b "${DEV[3]}" ]' \
  "LIO LUNs: ${DEV[*]}"
host_keys() { sg_persist --no-inquiry --in --read-keys "$1" 2>&1; }
host_res()  { sg_persist --no-inquiry --in --read-reservation "$1" 2>&1; }

# ---------------------------------------------------------------- 3. the L2 guests' boot files
# The VM's own kernel; an initramfs with busybox (static), sg_persist and the
# modules virtio-scsi needs. Its /init answers commands on ttyS0, each
# followed by "L2DONE rc=N".
B=/var/lib/libvirt/boot; mkdir -p $B
KVER=$(uname -r)
cp /boot/vmlinuz-$KVER $B/l2-vmlinuz
S=/var/tmp/l2root; rm -rf $S; mkdir -p $S/{bin,dev,proc,sys,tmp,mods}
cp /bin/busybox $S/bin/busybox
for a in sh mount insmod sleep cat echo ls stty poweroff grep sed; do ln -s busybox $S/bin/$a; done
cp /usr/bin/sg_persist $S/bin/
ldd /usr/bin/sg_persist | awk '/=>/ && $3 ~ /^\// {print $3} /^\t\// {print $1}' | while read -r lib; do
  install -D "$(readlink -f "$lib")" "$S$lib"
done
# (--show-depends takes one module: the words after it would be its parameters)
for m in virtio_pci virtio_scsi sd_mod sg; do modprobe --show-depends $m; done |
  awk '$1 == "insmod" {print $2}' | awk '!seen[$0]++' |
  while read -r ko; do cp "$ko" $S/mods/; echo "/mods/$(basename "$ko")"; done > $S/mods/order
cat > $S/init <<'EOF'
#!/bin/sh
export PATH=/bin
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
for k in $(cat /mods/order); do insmod $k 2>/dev/null; done
n=0; while [ ! -b /dev/sda ] && [ $n -lt 600 ]; do sleep 0.1; n=$((n+1)); done
stty -F /dev/ttyS0 -echo 2>/dev/null
echo "L2READY uptime $(cut -d' ' -f1 /proc/uptime)s, disks: $(ls /sys/block)" > /dev/ttyS0
exec < /dev/ttyS0 > /dev/ttyS0 2>&1
while read -r line; do eval "$line"; echo "L2DONE rc=$?"; done
EOF
chmod 755 $S/init
(cd $S && find . | cpio -o -H newc 2>/dev/null | gzip -1) > $B/l2-initrd.gz
check '[ -s $B/l2-initrd.gz ] && grep -q virtio_scsi $S/mods/order && grep -q sd_mod $S/mods/order' "L2 initramfs: $(du -k $B/l2-initrd.gz | cut -f1) KiB, modules: $(wc -l < $S/mods/order)"

# ---------------------------------------------------------------- 4. libvirt set-up
cat >> /etc/libvirt/qemu.conf <<'EOF'
# prhelperd libvirt e2e
pr_helper = "/usr/bin/prhelperd"
security_driver = "none"
EOF
systemctl restart libvirtd.service
check 'virsh -c qemu:///system version >/dev/null' "libvirtd answers (after qemu.conf: pr_helper, security_driver none)"

domain_xml() {  # NAME LUN-DEV RESERVATIONS-XML
  cat <<EOF
<domain type='qemu'>
  <name>$1</name>
  <memory unit='MiB'>160</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>$B/l2-vmlinuz</kernel>
    <initrd>$B/l2-initrd.gz</initrd>
    <cmdline>console=ttyS0 loglevel=1 quiet panic=-1 mitigations=off</cmdline>
  </os>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <controller type='usb' model='none'/>
    <controller type='scsi' index='0' model='virtio-scsi'/>
    <disk type='block' device='lun'>
      <driver name='qemu' type='raw'/>
      <source dev='$2'>
        $3
      </source>
      <target dev='sda' bus='scsi'/>
    </disk>
    <serial type='unix'>
      <source mode='bind' path='/var/lib/libvirt/qemu/$1.serial'/>
      <target port='0'/>
    </serial>
    <memballoon model='none'/>
  </devices>
</domain>
EOF
}
MANAGED="<reservations managed='yes'/>"
SHARED="<reservations managed='no'><source type='unix' path='/run/prhelperd.sock' mode='client'/></reservations>"
lun_xml() {  # DEV TARGET RESERVATIONS-XML
  cat <<EOF
<disk type='block' device='lun'>
  <driver name='qemu' type='raw'/>
  <source dev='$1'>
    $3
  </source>
  <target dev='$2' bus='scsi'/>
</disk>
EOF
}
mkdir -p /run/l2xml
domain_xml prA "${DEV[0]}" "$MANAGED" > /run/l2xml/prA.xml
domain_xml prB "${DEV[1]}" "$SHARED" > /run/l2xml/prB.xml
echo "--- prA.xml"; cat /run/l2xml/prA.xml
check 'virsh define /run/l2xml/prA.xml >/dev/null && virsh define /run/l2xml/prB.xml >/dev/null' \
  "virsh define prA (managed) and prB (shared)"

# the guests' serial consoles: one persistent connection each; a command is a
# line written to /run/l2-NAME.in, the output is appended to /run/l2-NAME.log
attach_serial() {  # NAME
  local sock=/var/lib/libvirt/qemu/$1.serial
  rm -f /run/l2-$1.in; mkfifo /run/l2-$1.in; : > /run/l2-$1.log
  for n in $(seq 300); do [ -S $sock ] && break; sleep 0.1; done
  socat UNIX-CONNECT:$sock "OPEN:/run/l2-$1.in,rdonly,ignoreeof!!OPEN:/run/l2-$1.log,creat,append,wronly" \
    2> /run/l2-$1.socat.err &
  echo $! > /run/l2-$1.socat.pid
}
wait_log() {  # NAME PATTERN SECONDS (a progress line every 30 s keeps run.sh's watchdog calm)
  local n
  for n in $(seq $(( $3 * 2 ))); do
    grep -aq "$2" /run/l2-$1.log && return 0
    [ $((n % 60)) = 0 ] && echo "  waiting for $1 ($2): $((n / 2))s, $(virsh domstate $1 2>&1 | head -1)," \
      "serial $(stat -c %s /run/l2-$1.log) bytes, socat $(kill -0 "$(cat /run/l2-$1.socat.pid)" 2>/dev/null &&
        echo running || echo "gone: $(cat /run/l2-$1.socat.err)"), qemu cpu" \
      "$(ps -o time= -p "$(cat /run/libvirt/qemu/$1.pid 2>/dev/null)" 2>/dev/null)"
    sleep 0.5
  done
  return 1
}
l2() {  # NAME CMD...: run in the guest; prints its output; returns its exit status
  local name=$1; shift
  local before; before=$(grep -ac "L2DONE" /run/l2-$name.log)
  local start; start=$(wc -l < /run/l2-$name.log)
  echo "$*" > /run/l2-$name.in
  local n
  for n in $(seq 240); do
    [ "$(grep -ac "L2DONE" /run/l2-$name.log)" -gt "$before" ] && break
    sleep 0.5
  done
  local out; out=$(tail -n +$((start + 1)) /run/l2-$name.log | tr -d '\r')
  echo "$out" | sed "s/^/  [$name] /" >&2
  echo "$out" | grep -v '^L2DONE'
  echo "$out" | grep -q '^L2DONE rc=0$'
}
retry_l2() {  # NAME TRIES CMD...: the command until it succeeds (QEMU reconnects on a failure)
  local name=$1 tries=$2 i; shift 2
  for i in $(seq $tries); do l2 $name "$@" > /dev/null && return 0; sleep 2; done
  return 1
}

# ---------------------------------------------------------------- 5. start both domains
t=$(date +%s)
check 'virsh start prA' "virsh start prA (managed)"
check 'virsh start prB' "virsh start prB (shared)"
attach_serial prA; attach_serial prB
check 'wait_log prA L2READY 900' "prA booted"
check 'wait_log prB L2READY 900' "prB booted"
grep -ah L2READY /run/l2-prA.log /run/l2-prB.log
echo "TIMING both L2 guests ready: $(( $(date +%s) - t ))s"

# the managed helper, as libvirt started it
QA=$(cat /run/libvirt/qemu/prA.pid)
HA=$(pgrep -f '^/usr/lib/prhelperd/deno .*prhelperd.js -k .*prA' | head -1)
ps -o pid,ppid,user,args -p "$HA" 2>/dev/null
check '[ -n "$HA" ]' "libvirt started prhelperd for prA (pid $HA)"
HA_ARGS=$(tr '\0' ' ' < /proc/$HA/cmdline)
echo "helper command line: $HA_ARGS"
HA_SOCK=$(echo "$HA_ARGS" | sed -n 's/.* -k \([^ ]*\).*/\1/p')
check '[ -S "$HA_SOCK" ]' "its socket $HA_SOCK"
HA_PID=$(ls /run/libvirt/qemu/*prA*pr-helper*.pid /var/lib/libvirt/qemu/domain-*-prA/*pr-helper*.pid 2>/dev/null | head -1)
check '[ -n "$HA_PID" ] && [ "$(cat $HA_PID)" = "$HA" ]' "libvirt's pidfile $HA_PID names it"
ino=$(stat -c %i "$HA_PID" 2>/dev/null)
grep -E "POSIX|OFDLCK" /proc/locks | grep ":$ino " || true
check 'grep -E "POSIX +ADVISORY +WRITE +$HA " /proc/locks | grep -q ":$ino "' \
  "the pidfile's fcntl lock (taken by libvirt before exec) is held by the helper"
check '[ "$(awk -F: "{print \$3}" /proc/$HA/cgroup)" = "$(awk -F: "{print \$3}" /proc/$QA/cgroup)" ] ||
       grep -q "machine-qemu.*prA" /proc/$HA/cgroup' \
  "helper in the VM's cgroup ($(cut -d: -f3 /proc/$HA/cgroup)): its memory counts against prA"
check 'grep -q "^Uid:.$(id -u prhelperd)" /proc/$HA/status && grep -q "^CapEff:.0000000000020000" /proc/$HA/status' \
  "managed helper runs as user prhelperd with CAP_SYS_RAWIO only"
if tr '\0' '\n' < /proc/$HA/environ | grep -q '^NOTIFY_SOCKET='; then
  echo "(the helper inherited libvirtd's NOTIFY_SOCKET: $(tr '\0' '\n' < /proc/$HA/environ | grep -E '^(NOTIFY_SOCKET|SYSTEMD_EXEC_PID)=' | tr '\n' ' '))"
fi

# ---------------------------------------------------------------- 6. PR from the guests
check 'l2 prA sg_persist --out --register --param-sark=0xa1 /dev/sda' "prA (managed): PR OUT REGISTER 0xa1"
check 'l2 prA sg_persist --out --reserve --param-rk=0xa1 --prout-type=5 /dev/sda' "prA: PR OUT RESERVE (type 5)"
out=$(l2 prA sg_persist --in --read-keys /dev/sda)
check 'echo "$out" | grep -q 0xa1' "prA: PR IN READ KEYS shows 0xa1"
out=$(host_keys ${DEV[0]}); echo "$out"
check 'echo "$out" | grep -q 0xa1' "host: LIO LUN 0 has key 0xa1"
out=$(host_res ${DEV[0]}); echo "$out"
check 'echo "$out" | grep -q "Key=0xa1"' "host: LIO LUN 0 reserved by 0xa1"
check 'l2 prB sg_persist --out --register --param-sark=0xb1 /dev/sda' "prB (shared): PR OUT REGISTER 0xb1"
check 'l2 prB sg_persist --out --reserve --param-rk=0xb1 --prout-type=5 /dev/sda' "prB: PR OUT RESERVE"
out=$(host_keys ${DEV[1]}); echo "$out"
check 'echo "$out" | grep -q 0xb1' "host: LIO LUN 1 has key 0xb1"
check '[ "$(systemctl is-active prhelperd.service)" = active ]' "prhelperd.service activated by prB's QEMU"
SVC=$(systemctl show -p MainPID --value prhelperd.service)

# ---------------------------------------------------------------- 7. hot-plug
# a managed LUN into prB (it has no managed helper yet: libvirt starts one)
lun_xml ${DEV[2]} sdb "$MANAGED" > /run/l2xml/lun2.xml
check 'virsh attach-device prB /run/l2xml/lun2.xml --live' "hot-plug LUN 2 (managed) into prB"
HB=$(pgrep -f '^/usr/lib/prhelperd/deno .*prhelperd.js -k .*prB' | head -1)
check '[ -n "$HB" ]' "libvirt started a helper for prB on hot-plug (pid $HB)"
HB_SOCK=$(tr '\0' ' ' < /proc/$HB/cmdline 2>/dev/null | sed -n 's/.* -k \([^ ]*\).*/\1/p')
check 'retry_l2 prB 20 "[ -b /dev/sdb ]"' "prB sees the hot-plugged disk"
check 'l2 prB sg_persist --out --register --param-sark=0xb2 /dev/sdb' "prB: REGISTER 0xb2 on the hot-plugged LUN"
out=$(host_keys ${DEV[2]}); echo "$out"
check 'echo "$out" | grep -q 0xb2' "host: LIO LUN 2 has key 0xb2"
# a shared LUN into prA: both domains on the shared helper at once
lun_xml ${DEV[3]} sdb "$SHARED" > /run/l2xml/lun3.xml
check 'virsh attach-device prA /run/l2xml/lun3.xml --live' "hot-plug LUN 3 (shared) into prA"
check 'retry_l2 prA 20 "[ -b /dev/sdb ]"' "prA sees the hot-plugged disk"
check 'l2 prA sg_persist --out --register --param-sark=0xa3 /dev/sdb' "prA: REGISTER 0xa3 through the shared helper"
out=$(host_keys ${DEV[3]}); echo "$out"
check 'echo "$out" | grep -q 0xa3' "host: LIO LUN 3 has key 0xa3"
check 'l2 prB sg_persist --in --read-keys /dev/sda | grep -q 0xb1' "prB still served by the shared helper"
status=$(systemctl show -p StatusText --value prhelperd.service); echo "prhelperd.service: $status"
check '[ "$(systemctl show -p MainPID --value prhelperd.service)" = "$SVC" ]' \
  "one shared helper (pid $SVC) serves prA and prB"
# hot-unplug: the managed LUN was prB's only managed disk, so its helper stops
check 'virsh detach-device prB /run/l2xml/lun2.xml --live' "hot-unplug LUN 2 from prB"
for n in $(seq 60); do kill -0 "$HB" 2>/dev/null || break; sleep 0.5; done
check '! kill -0 "$HB" 2>/dev/null' "prB's managed helper stopped after the unplug"
check 'retry_l2 prB 20 "[ ! -b /dev/sdb ]"' "prB no longer sees the LUN"
check 'virsh detach-device prA /run/l2xml/lun3.xml --live' "hot-unplug LUN 3 from prA"
check 'kill -0 "$HA"' "prA's managed helper still runs (its own LUN is still there)"

# ---------------------------------------------------------------- 8. restarts
check 'systemctl restart libvirtd.service' "systemctl restart libvirtd"
check 'virsh domstate prA | grep -q running && virsh domstate prB | grep -q running' "domains still running"
check 'kill -0 "$HA"' "the managed helper survived the libvirtd restart"
check 'retry_l2 prA 10 "sg_persist --in --read-keys /dev/sda | grep -q 0xa1"' "prA: PR after the libvirtd restart"
check 'retry_l2 prB 10 "sg_persist --in --read-keys /dev/sda | grep -q 0xb1"' "prB: PR after the libvirtd restart"
check 'systemctl restart prhelperd.service' "systemctl restart prhelperd.service"
check 'retry_l2 prB 15 "sg_persist --in --read-keys /dev/sda | grep -q 0xb1"' \
  "prB: PR works again after the shared helper's restart (QEMU reconnected)"
check '[ "$(systemctl show -p MainPID --value prhelperd.service)" != "$SVC" ]' "a new shared helper serves it"
kill -9 "$HA"
check 'retry_l2 prA 20 "sg_persist --in --read-keys /dev/sda | grep -q 0xa1"' \
  "prA: PR works again after its managed helper was killed (libvirt restarted it)"
HA2=$(pgrep -f '^/usr/lib/prhelperd/deno .*prhelperd.js -k .*prA' | head -1)
check '[ -n "$HA2" ] && [ "$HA2" != "$HA" ]' "libvirt started a new helper for prA (pid ${HA2:-none})"

# ---------------------------------------------------------------- 9. destroy
HA_DIR=$(dirname "$HA_SOCK")
check 'virsh destroy prA' "virsh destroy prA"
for n in $(seq 60); do kill -0 "$HA2" 2>/dev/null || break; sleep 0.5; done
check '! kill -0 "$HA2" 2>/dev/null' "prA's helper stopped by libvirt"
left=$(ls -d "$HA_SOCK" "$HA_SOCK.lock" /run/libvirt/qemu/*prA*pr-helper* "$HA_DIR"/*pr-helper* 2>/dev/null)
check '[ -z "$left" ]' "no socket, lock file or pidfile of prA's helper left behind${left:+: $left}"
check 'virsh destroy prB' "virsh destroy prB"
check '! pgrep -f "prhelperd.js -k /(var/lib|run)/libvirt" >/dev/null' "no managed helper left running"
check '[ "$(systemctl is-active prhelperd.service)" = active ]' "the shared helper keeps running"

# ---------------------------------------------------------------- 10. journal
journalctl -b --no-pager -o cat | grep -iE "notification message from PID|reception only permitted" | head -5
check '! journalctl -b --no-pager -o cat | grep -qiE "notification message from PID|reception only permitted"' \
  "no sd_notify message from a managed helper reached systemd (no journal warning)"
check '! journalctl -u prhelperd.service -o json --no-pager | grep -q "\"PRIORITY\":\"[0-3]\""' \
  "no error in prhelperd.service's journal"
DONE=1
