#!/bin/bash
# tests/vm/systemd/guest-multipathd.sh - runs inside the systemd VM as the test
# unit (run.sh -g multipathd). Issue 18.1/18.2: the daemon tells multipathd
# the key it registered, so multipathd registers it on a path it reinstates.
# Debian's multipathd builds a map from two LIO paths to one LUN, with
# `reservation_key file`; prhelperd runs from the installed .deb as root, the
# way libvirt starts its helper (`prhelperd -k SOCK -u root`), so it can reach
# multipathd's abstract socket and is uid 0 there.
#   A. multipathd running: path 2 goes offline; REGISTER through prhelperd
#      reaches path 1 only and multipathd learns the key (getprkey, prkeys
#      file); RESERVE (Write Exclusive, Registrants Only) while path 2 is down;
#      path 2 comes back and multipathd registers the key on path 2's I_T
#      nexus (READ FULL STATUS by sg_persist on path 2's /dev/sdX); path 1
#      goes offline and a write through the map (now on path 2) passes the
#      reservation; unregister tells multipathd to forget the key.
#   B. multipathd stopped: the same REGISTER succeeds, without a hang, with
#      one warning for the map; path 2 comes back unregistered (the gap the
#      warning names); `prhelperd check` reports multipathd unreachable.
# Reports "VMTEST-RESULT: PASS|FAIL", then powers off.
set -u
DIR=/opt/prhelperd-test
SOCK=/run/prhelperd-root.sock
LOG=/var/tmp/prhelperd-root.log
FAILS=0
. $DIR/systemd/guest-lib.sh
finish() {
  echo "--- log of prhelperd (root)"
  tail -40 $LOG 2>/dev/null
  echo "--- journal of multipathd"
  journalctl -u multipathd.service -o short-precise --no-pager | grep -v "^-- " | tail -25
  [ -n "${DPID:-}" ] && kill "$DPID" 2>/dev/null
  if [ $FAILS = 0 ]; then echo "VMTEST-RESULT: PASS"; else echo "VMTEST-RESULT: FAIL ($FAILS)"; fi
  sync
  systemctl --no-block poweroff
  exit 0
}
trap finish EXIT

echo "=== prhelperd systemd VM test (multipathd): $(uname -r)"

# 1. the package (its dependency acl comes from the image: no network)
check 'dpkg -i $DIR/acl_*.deb >/dev/null' "dpkg -i acl (the package's dependency)"
deb=$(ls $DIR/prhelperd_*.deb | head -1)
check 'DEBIAN_FRONTEND=noninteractive apt-get install -y "$deb" >/dev/null' "apt-get install $(basename "$deb")"

# 2. one LIO LUN behind two tcm_loop nexuses: two SCSI paths with one WWID
#    (initiator naa.5001405aaaaaaaa1 for path 1, ...aaaa2 for path 2)
lio_two_paths 5a1d0e8c-0000-4000-8000-00000000beef
check '[ -b /dev/$P1 ] && [ -n "$P2" ] && [ -b /dev/$P2 ]' "two SCSI paths: $P1 (initiator ...aa1) $P2 (...aa2)"

# 3. multipathd with reservation_key file builds the map
rm -f /etc/multipath/prkeys
multipathd_map "$(cat <<'CONF'
defaults {
    user_friendly_names yes
    find_multipaths no
    reservation_key file
    polling_interval 2
    no_path_retry fail
}
blacklist {
    devnode "^vd"
}
CONF
)"
check '[ -n "$MAP" ] && [ -b /dev/mapper/$MAP ]' "multipathd made the map /dev/mapper/$MAP"
multipath -ll 2>&1 | sed 's/^/  /'

dm_state() {  # PATH: multipathd's dm state of the path (active/failed)
  multipathd show paths format "%d %t" 2>/dev/null | awk -v p="$1" '$1 == p {print $2}'
}
wait_dm() {  # PATH STATE [SECONDS]
  local i
  for i in $(seq $(( ${3:-40} * 5 ))); do [ "$(dm_state "$1")" = "$2" ] && return 0; sleep 0.2; done
  return 1
}
full_status() { sg_persist --no-inquiry --in --read-full-status "/dev/$1" 2>&1; }
registered() {  # PATH N: is initiator ...aaaaN registered (READ FULL STATUS through PATH)
  full_status "$1" | grep -qi "0x5001405aaaaaaaa$2"
}

# 4. the daemon as libvirt starts it: root, its own socket
/usr/bin/prhelperd -k $SOCK -u root >$LOG 2>&1 &
DPID=$!
for i in $(seq 300); do [ -S $SOCK ] && break; sleep 0.1; done
check '[ -S $SOCK ]' "prhelperd -k $SOCK -u root is listening (pid $DPID)"
check 'wait_dm $P1 active && wait_dm $P2 active' "multipathd has both paths active"

echo "=== A. multipathd running"
echo offline > /sys/block/$P2/device/state
check 'wait_dm $P2 failed' "path $P2 offline: multipathd failed it"
check 'timeout 30 prhelperd client --socket $SOCK --out --register --param-sark=0x5151 /dev/mapper/$MAP' \
  "PR OUT REGISTER 0x5151 on /dev/mapper/$MAP through prhelperd"
check 'grep -q "goes by SG_IO to each path" $LOG' "(the daemon fans out by SG_IO: the kernel refused the PR ioctls)"
full_status $P1 | sed 's/^/  /'
check 'registered $P1 1 && ! registered $P1 2' "registered on path 1's nexus only"
out=$(multipathd getprkey map $MAP 2>&1); echo "  getprkey: $out"
check '[ "$out" = 0x5151 ]' "multipathd knows the key (getprkey map $MAP)"
grep -v "^#" /etc/multipath/prkeys | sed 's/^/  prkeys: /'
check 'grep -qiE "^0x0*5151 " /etc/multipath/prkeys' "multipathd stored it in /etc/multipath/prkeys"
for i in $(seq 50); do [ "$(multipathd getprstatus map $MAP 2>&1)" = 1 ] && break; sleep 0.2; done
out=$(multipathd getprstatus map $MAP 2>&1); echo "  getprstatus: $out"
check '[ "$out" = 1 ]' "multipathd's PR status of the map is set"
out=$(prhelperd check /dev/mapper/$MAP --socket $SOCK 2>&1); echo "$out" | grep multipathd | sed 's/^/  /'
check 'echo "$out" | grep -q "multipathd keeps key 0x5151 for $MAP" && echo "$out" | grep -q "OK.*can tell multipathd"' \
  "prhelperd check: multipathd keeps the key, the daemon (root) can tell it"
check 'prhelperd client --socket $SOCK --out --reserve --param-rk=0x5151 --prout-type=5 /dev/mapper/$MAP' \
  "PR OUT RESERVE (Write Exclusive, Registrants Only) while $P2 is down"
check 'prhelperd client --socket $SOCK --in --read-reservation /dev/mapper/$MAP | grep -q 0x5151' \
  "PR IN READ RESERVATION through prhelperd: 0x5151 holds it"
echo running > /sys/block/$P2/device/state
check 'wait_dm $P2 active' "path $P2 back: multipathd reinstated it"
for i in $(seq 100); do registered $P2 2 && break; sleep 0.2; done
full_status $P2 | sed 's/^/  /'
check 'registered $P2 2' "multipathd registered 0x5151 on $P2's nexus (READ FULL STATUS on /dev/$P2)"
check 'journalctl -u multipathd.service --no-pager | grep -q "checking persistent reservation registration"' \
  "(multipathd's journal: it checked the registration on reinstate)"
echo offline > /sys/block/$P1/device/state
check 'wait_dm $P1 failed' "path $P1 offline: I/O fails over to $P2"
check 'dd if=/dev/urandom of=/dev/mapper/$MAP bs=4096 count=1 oflag=direct status=none' \
  "a write through the map on $P2 passes the Registrants Only reservation"
check 'dd if=/dev/urandom of=/dev/$P2 bs=4096 count=1 oflag=direct status=none' \
  "a write on $P2 itself passes too"
echo running > /sys/block/$P1/device/state
check 'wait_dm $P1 active' "path $P1 back"
check 'prhelperd client --socket $SOCK --out --release --param-rk=0x5151 --prout-type=5 /dev/mapper/$MAP' \
  "PR OUT RELEASE"
check 'prhelperd client --socket $SOCK --out --register-ignore --param-sark=0 /dev/mapper/$MAP' \
  "unregister (REGISTER AND IGNORE EXISTING KEY, key 0)"
# (the daemon tells multipathd after its reply: wait for it)
for i in $(seq 50); do [ "$(multipathd getprkey map $MAP 2>&1)" = none ] && break; sleep 0.2; done
out=$(multipathd getprkey map $MAP 2>&1); echo "  getprkey: $out"
check '[ "$out" = none ] && [ "$(multipathd getprstatus map $MAP)" = 0 ]' \
  "multipathd forgot the key and the PR status"
check '! grep -q "multipathd did not take" $LOG' "no multipathd warning in the daemon's log"

echo "=== B. multipathd stopped"
systemctl stop multipathd.socket multipathd.service 2>/dev/null
check '! grep -q "@/org/kernel/linux/storage/multipathd" /proc/net/unix' "multipathd's socket is gone"
echo offline > /sys/block/$P2/device/state
check 'timeout 30 prhelperd client --socket $SOCK --out --register --param-sark=0x7272 /dev/mapper/$MAP' \
  "PR OUT REGISTER 0x7272 succeeds (no hang) without multipathd"
check 'timeout 30 prhelperd client --socket $SOCK --out --register-ignore --param-sark=0x7373 /dev/mapper/$MAP' \
  "PR OUT REGISTER AND IGNORE EXISTING KEY 0x7373 succeeds too"
sleep 1
grep -i "multipathd did not take" $LOG | sed 's/^/  /'
check '[ "$(grep -c "multipathd did not take .* $MAP: not reachable" $LOG)" = 1 ]' \
  "one warning for map $MAP: multipathd not reachable"
out=$(prhelperd check /dev/mapper/$MAP --socket $SOCK 2>&1); echo "$out" | sed 's/^/  /'
check 'echo "$out" | grep -qi "multipathd.*not reachable"' "prhelperd check reports multipathd unreachable"
echo running > /sys/block/$P2/device/state
sleep 6
check '! registered $P2 2' "(without multipathd, $P2 comes back unregistered: the documented gap)"
check 'prhelperd client --socket $SOCK --out --reserve --param-rk=0x7373 --prout-type=5 /dev/mapper/$MAP' \
  "PR OUT RESERVE (Write Exclusive, Registrants Only) 0x7373"
check 'dd if=/dev/urandom of=/dev/$P1 bs=4096 count=1 oflag=direct status=none' \
  "a write on $P1 (registered) passes"
out=$(dd if=/dev/urandom of=/dev/$P2 bs=4096 count=1 oflag=direct status=none 2>&1); echo "  dd on $P2: $out"
check 'echo "$out" | grep -q "Invalid exchange"' \
  "(a write on the unregistered $P2 meets RESERVATION CONFLICT: what a failover to it would get)"
check 'prhelperd client --socket $SOCK --out --register-ignore --param-sark=0 /dev/mapper/$MAP' \
  "unregister (releases the reservation)"
check 'kill -0 $DPID' "the daemon is still running"
