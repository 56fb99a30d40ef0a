#!/bin/bash
# tests/vm/systemd/build-rootfs.sh - a Debian bookworm root file system for the
# real-systemd-boot test: debootstrap (minbase) + systemd as PID 1, udev, the
# Debian kernel with its initramfs, sg3-utils for cross-checks, and what the
# deployment tests drive: libvirt + QEMU (issue 15), Debian's SELinux refpolicy
# and tools (enforcing boots), AppArmor's parser and tools (issue 17),
# multipath-tools (issue 18). Those are installed by apt in the chroot after
# debootstrap, without recommends. Cached in $WORK/systemd/rootfs; rebuilt only
# when this script changes.
#
#   tests/vm/systemd/build-rootfs.sh            (root; needs network to the mirror)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/../common.sh"
ROOTFS=$WORK/systemd/rootfs
STAMP=$WORK/systemd/rootfs.stamp
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SUITE=${SUITE:-bookworm}
PKGS=systemd-sysv,udev,kmod,initramfs-tools,linux-image-amd64,sg3-utils,procps,apt,ca-certificates
want=$(sha256sum "$0" | cut -c1-16)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && [ -x "$ROOTFS/sbin/init" ]; then
  echo "rootfs: cached ($ROOTFS)"; exit 0
fi
[ "$(id -u)" = 0 ] || { echo "rootfs: must run as root" >&2; exit 1; }
command -v debootstrap >/dev/null || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap
}
rm -rf "$ROOTFS"; mkdir -p "$ROOTFS"
echo "rootfs: debootstrap $SUITE ($PKGS)"
debootstrap --variant=minbase --include="$PKGS" "$SUITE" "$ROOTFS" "$MIRROR" \
  > "$WORK/systemd/debootstrap.log" 2>&1 || { tail -30 "$WORK/systemd/debootstrap.log"; exit 1; }
# The deployment stack, from Debian's archive (the chroot needs the host's
# resolver and a private /proc, /sys and /dev for the maintainer scripts).
EXTRA=(libvirt-daemon-system libvirt-clients qemu-system-x86 qemu-utils
       selinux-policy-default selinux-utils policycoreutils auditd
       apparmor apparmor-utils multipath-tools busybox-static cpio socat strace)
echo "deb $MIRROR $SUITE main" > "$ROOTFS/etc/apt/sources.list"
cp /etc/resolv.conf "$ROOTFS/etc/resolv.conf"
# no service starts in the chroot
printf '#!/bin/sh\nexit 101\n' > "$ROOTFS/usr/sbin/policy-rc.d"; chmod 755 "$ROOTFS/usr/sbin/policy-rc.d"
mount -t proc proc "$ROOTFS/proc"; mount -t sysfs sysfs "$ROOTFS/sys"; mount --bind /dev "$ROOTFS/dev"
trap 'umount "$ROOTFS/dev" "$ROOTFS/sys" "$ROOTFS/proc" 2>/dev/null || true' EXIT
echo "rootfs: apt-get install ${EXTRA[*]}"
chroot "$ROOTFS" sh -c "apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends ${EXTRA[*]}" \
  >> "$WORK/systemd/debootstrap.log" 2>&1 || { tail -30 "$WORK/systemd/debootstrap.log"; exit 1; }
umount "$ROOTFS/dev" "$ROOTFS/sys" "$ROOTFS/proc"; trap - EXIT
rm -f "$ROOTFS/usr/sbin/policy-rc.d"; : > "$ROOTFS/etc/resolv.conf"
# multipathd would claim the tests' LIO disks: a test that wants it starts it.
chroot "$ROOTFS" systemctl disable multipathd.service multipathd.socket >/dev/null 2>&1 || true

# Guest configuration: root on /dev/vda, serial console, no network, no
# first-boot wizards, a root login on the console for debugging (-x).
echo "prhelperd-vm" > "$ROOTFS/etc/hostname"
echo "/dev/vda / ext4 rw,errors=remount-ro 0 1" > "$ROOTFS/etc/fstab"
chroot "$ROOTFS" passwd -d root >/dev/null
ln -sf /dev/null "$ROOTFS/etc/systemd/system/systemd-firstboot.service"
ln -sf /dev/null "$ROOTFS/etc/systemd/system/apt-daily.timer"
ln -sf /dev/null "$ROOTFS/etc/systemd/system/apt-daily-upgrade.timer"
ln -sf /dev/null "$ROOTFS/etc/systemd/system/e2scrub_all.timer"
ln -sf /dev/null "$ROOTFS/etc/systemd/system/fstrim.timer"
# QEMU's group under libvirt on Debian (prhelperd.socket's SocketGroup).
chroot "$ROOTFS" sh -c 'getent group kvm >/dev/null || groupadd --system kvm'
# The initramfs must find the root disk on virtio.
printf 'virtio_pci\nvirtio_blk\next4\n' >> "$ROOTFS/etc/initramfs-tools/modules"
chroot "$ROOTFS" update-initramfs -u -k all > /dev/null
chroot "$ROOTFS" apt-get clean
ls "$ROOTFS"/boot
echo "$want" > "$STAMP"
echo "rootfs: ready ($(du -sh "$ROOTFS" | cut -f1))"
