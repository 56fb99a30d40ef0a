#!/bin/bash
# tests/vm/systemd/stage-apparmor.sh ROOTFS - host-side staging for
# guest-apparmor.sh: the rig's static reference client (rigtool, built by
# tests/vm/prepare.sh), which stands in for QEMU's PR requests under the
# libvirt-generated per-VM profiles.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/../common.sh"
[ -x "$WORK/rigtool" ] || "$HERE/../prepare.sh"
install -m755 "$WORK/rigtool" "$1/opt/prhelperd-test/rigtool"
