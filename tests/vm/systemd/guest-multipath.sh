#!/bin/bash
# tests/vm/systemd/guest-multipath.sh - runs inside the systemd VM as the test
# unit (run.sh -g multipath). Issue 18.3: the packaged, socket-activated
# daemon (user prhelperd, CAP_SYS_RAWIO only) serves PR OUT on a dm-multipath
# map built by Debian's multipathd from two LIO paths to one LUN. Debian 12's
# kernel (6.1) refuses the block-layer PR ioctls without CAP_SYS_ADMIN, so the
# daemon sends each PR OUT to the paths itself; the package's udev rule gives
# the prhelperd user an ACL on exactly those path devices. Checks: the ACL is
# on both paths and on no other disk; REGISTER through the map registers the
# key on both I_T nexuses; RESERVE and RELEASE work; with one path's ACL taken
# away a REGISTER fails and leaves no key behind (rolled back); a change event
# gives the ACL back. Reports "VMTEST-RESULT: PASS|FAIL", then powers off.
set -u
DIR=/opt/prhelperd-test
SOCK=/run/prhelperd.sock
FAILS=0
. $DIR/systemd/guest-lib.sh
finish() {
  echo "--- journal of prhelperd"
  journalctl -u prhelperd.service -o short-precise --no-pager | tail -30
  echo "--- journal of multipathd"
  journalctl -u multipathd.service -o short-precise --no-pager | tail -15
  if [ $FAILS = 0 ]; then echo "VMTEST-RESULT: PASS"; else echo "VMTEST-RESULT: FAIL ($FAILS)"; fi
  sync
  systemctl --no-block poweroff
  exit 0
}
trap finish EXIT

echo "=== prhelperd systemd VM test (multipath): $(uname -r)"

# 1. the package (its new dependency acl comes from the image: no network)
check 'dpkg -i $DIR/acl_*.deb >/dev/null' "dpkg -i acl (the package's dependency)"
deb=$(ls $DIR/prhelperd_*.deb | head -1)
check 'DEBIAN_FRONTEND=noninteractive apt-get install -y "$deb" >/dev/null' "apt-get install $(basename "$deb")"
check '[ -f /usr/lib/udev/rules.d/61-prhelperd-multipath.rules ]' "the package's udev rule is installed"

# 2. one LIO LUN behind two tcm_loop nexuses: two SCSI paths with one WWID
lio_two_paths 5a1d0e8c-0000-4000-8000-00000000beef
check '[ -b /dev/$P1 ] && [ -n "$P2" ] && [ -b /dev/$P2 ]' "two SCSI paths: $P1 $P2"

# 3. multipathd builds the map (every non-virtio disk is a path; no wwids file needed)
multipathd_map "$(cat <<'CONF'
defaults {
    user_friendly_names yes
    find_multipaths no
}
blacklist {
    devnode "^vd"
}
CONF
)"
check '[ -n "$MAP" ] && [ -b /dev/mapper/$MAP ]' "multipathd made the map /dev/mapper/$MAP"
multipath -ll 2>&1 | sed 's/^/  /'
check '[ "$(ls /sys/block/$(basename $(readlink -f /dev/mapper/$MAP))/slaves | sort | tr "\n" " ")" = "$(printf "%s\n" $P1 $P2 | sort | tr "\n" " ")" ]' \
  "the map's slaves are $P1 and $P2"
udevadm trigger --action=change --subsystem-match=block --property-match=DM_MULTIPATH_DEVICE_PATH=1
udevadm settle -t 30
acl_of() { getfacl -cp "$1" 2>/dev/null | grep -c '^user:prhelperd:rw-'; }
for p in $P1 $P2; do
  getfacl -cp /dev/$p | sed "s|^|  /dev/$p: |"
  check '[ "$(acl_of /dev/$p)" = 1 ]' "/dev/$p (a path) has the ACL user:prhelperd:rw-"
done
check '[ "$(acl_of /dev/vda)" = 0 ]' "/dev/vda (not a path) has no prhelperd ACL"

keys_on() {  # DEV: the registered keys, one per line, as the LUN lists them
  sg_persist --no-inquiry --in --read-keys "$1" 2>/dev/null | awk '/^ *0x/ {print $1}'
}

# 4. REGISTER through the map, by the socket-activated service
check 'prhelperd client --socket $SOCK --out --register --param-sark=0x5151 /dev/mapper/$MAP' \
  "PR OUT REGISTER on /dev/mapper/$MAP through the packaged service"
keys_on /dev/$P1 | sed 's/^/  keys: /'
check '[ "$(keys_on /dev/$P1 | grep -c 0x5151)" = 2 ]' "the key is registered on both I_T nexuses"
PID=$(systemctl show -p MainPID --value prhelperd.service)
check '[ "$(awk "/^Uid:/ {print \$2}" /proc/$PID/status)" = "$(id -u prhelperd)" ]' \
  "the service runs as the prhelperd user"
check 'grep -q "^CapEff:.0000000000020000" /proc/$PID/status' "with CAP_SYS_RAWIO only"
check 'journalctl -u prhelperd.service --no-pager | grep -q "goes by SG_IO to each path"' \
  "the daemon went to the paths (the kernel refused the PR ioctls)"
check 'prhelperd client --socket $SOCK --out --reserve --param-rk=0x5151 --prout-type=1 /dev/mapper/$MAP' \
  "PR OUT RESERVE through the map"
out=$(sg_persist --no-inquiry --in --read-reservation /dev/$P2 2>&1); echo "$out" | sed 's/^/  /'
check 'echo "$out" | grep -q 0x5151' "the reservation is held (seen from $P2)"
check 'prhelperd client --socket $SOCK --out --release --param-rk=0x5151 --prout-type=1 /dev/mapper/$MAP' \
  "PR OUT RELEASE through the map"
out=$(sg_persist --no-inquiry --in --read-reservation /dev/$P1 2>&1)
check '! echo "$out" | grep -q 0x5151' "no reservation after RELEASE"

# 5. without the ACL on one path the fan-out cannot reach it: the REGISTER (a
#    key change) fails and is rolled back as dm-multipath's own pr_ops roll
#    back: the new key is unregistered where it was registered
setfacl -x u:prhelperd /dev/$P2
check '! prhelperd client --socket $SOCK --out --register --param-rk=0x5151 --param-sark=0x6262 /dev/mapper/$MAP' \
  "REGISTER fails while $P2 has no ACL"
keys_on /dev/$P1 | sed 's/^/  keys: /'
check '[ "$(keys_on /dev/$P1 | grep -c 0x6262)" = 0 ]' "no 0x6262 left on any nexus (rolled back)"
check '[ "$(keys_on /dev/$P1 | grep -c 0x5151)" = 1 ]' "$P2's nexus, never reached, keeps 0x5151"
udevadm trigger --action=change /dev/$P2; udevadm settle -t 30
check '[ "$(acl_of /dev/$P2)" = 1 ]' "a change event gives /dev/$P2 the ACL back"
check 'prhelperd client --socket $SOCK --out --register-ignore --param-sark=0 /dev/mapper/$MAP' \
  "unregister through the map (REGISTER AND IGNORE EXISTING KEY, key 0)"
check '[ -z "$(keys_on /dev/$P1)" ]' "no registration left"
check '! journalctl -u prhelperd.service -o json --no-pager | grep -q "\"PRIORITY\":\"[0-3]\""' \
  "no error in the service's journal"
