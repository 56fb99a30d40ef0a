# tests/vm/systemd/guest-lib.sh - sourced by guest scripts in the systemd VM
# (bash; the directory is /opt/prhelperd-test/systemd there).
#
#   ok MSG / bad MSG / check 'SHELL TEST' MSG   one "VMTEST ok|FAIL" line (FAILS counts)
#   lio_two_paths SERIAL                        one LIO fileio LUN behind two tcm_loop
#                                               nexuses (initiators naa.5001405aaaaaaaa1
#                                               and ...aa2): sets P1 and P2 (sdX names)
#   multipathd_map CONF                         writes CONF to /etc/multipath.conf,
#                                               starts multipathd, sets MAP (dm name)
FAILS=${FAILS:-0}
ok()   { echo "VMTEST ok: $*"; }
bad()  { echo "VMTEST FAIL: $*"; FAILS=$((FAILS+1)); }
check() { if eval "$1"; then ok "$2"; else bad "$2"; fi; }

lio_two_paths() {
  local t=/sys/kernel/config/target bs w n i d addr paths=""
  modprobe configfs; mountpoint -q /sys/kernel/config || mount -t configfs configfs /sys/kernel/config
  for m in target_core_mod target_core_file tcm_loop sd_mod sg dm_multipath; do modprobe $m; done
  mkdir -p /var/target/pr
  truncate -s 64M /var/tmp/lun0.img
  bs=$t/core/fileio_0/lun0; mkdir -p $bs
  echo "fd_dev_name=/var/tmp/lun0.img,fd_dev_size=67108864" > $bs/control
  echo 1 > $bs/enable
  echo "$1" > $bs/wwn/vpd_unit_serial
  for n in 1 2; do
    w=$t/loopback/naa.500140500000000$n
    mkdir -p $w/tpgt_1/lun/lun_0
    echo naa.5001405aaaaaaaa$n > $w/tpgt_1/nexus
    ln -s $bs $w/tpgt_1/lun/lun_0/lun0
    addr=$(cat $w/tpgt_1/address)
    for i in $(seq 100); do
      d=$(ls /sys/class/scsi_device/$addr:0/device/block 2>/dev/null) && [ -b /dev/$d ] && break
      sleep 0.1
    done
    paths="$paths $d"
  done
  set -- $paths; P1=${1:-}; P2=${2:-}
}

multipathd_map() {
  local i
  printf '%s\n' "$1" > /etc/multipath.conf
  systemctl start multipathd.service
  MAP=""
  for i in $(seq 150); do
    MAP=$(dmsetup ls --target multipath 2>/dev/null | awk 'NR==1 {print $1}')
    [ -n "$MAP" ] && [ -b /dev/mapper/$MAP ] && break
    sleep 0.2
  done
}
