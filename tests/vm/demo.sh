#!/bin/bash
# tests/vm/demo.sh - boot the VM rig and show a reservation being taken
# through prhelperd and read back, with sg_persist's view beside it
# (guest/demo.sh).  Needs root; prepares and builds what is missing first.
# About 1-2 min, most of it TCG boot and deno start-up.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/common.sh"
[ "$(id -u)" = 0 ] || { echo "demo.sh: needs root (the VM rig installs packages and builds an initramfs)" >&2; exit 77; }
"$HERE/prepare.sh" > /dev/null
"$HERE/build-initramfs.sh" > /dev/null
set +e
# -v streams the demo's output to the console; drop kernel lines and the rig's own
"$HERE/run-vm.sh" -v -r "$HERE/guest/demo.sh" 2>/dev/null | grep -av -E '^\[ *[0-9]+\.[0-9]+\]|^VM-|^VM:|^=====|^-----'
exit "${PIPESTATUS[0]}"
