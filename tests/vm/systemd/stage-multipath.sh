#!/bin/bash
# tests/vm/systemd/stage-multipath.sh STAGE - host side of guest-multipath.sh:
# the package's new dependency "acl" is not in the cached rootfs, and the VM
# has no network, so its .deb (Debian's, for the rootfs's release) goes into
# the image beside prhelperd's. Cached in $WORK/systemd/debs.
set -euo pipefail
STAGE=$1
cache=${WORK:-/var/tmp/prhelperd-vm}/systemd/debs
mkdir -p "$cache"
if ! ls "$cache"/acl_*.deb >/dev/null 2>&1; then
  (cd "$cache" && apt-get download acl >/dev/null)
fi
install -m644 "$cache"/acl_*.deb "$STAGE/opt/prhelperd-test/"
