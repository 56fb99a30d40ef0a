#!/bin/bash
# tests/vm/systemd/stage-selinux.sh STAGE - host side of `run.sh -g selinux`.
#
# Prepares the staged rootfs for an SELinux-enforcing boot under Debian's
# refpolicy (selinux-policy-default, in the rootfs): /etc/selinux/config says
# enforcing, the sVirt test client is bundled into one JS file, and every
# file gets its label from the rootfs's own file_contexts (setfiles -r; the
# labels are xattrs, which mkfs.ext4 -d copies into the image), as
# Debian's first-boot relabel would, without the extra boot. The test script
# itself is labelled initrc_exec_t: systemd (init_t) then runs it in initrc_t,
# refpolicy's unconfined domain for init scripts.
set -euo pipefail
S=$1
HERE=$(cd "$(dirname "$0")" && pwd)
PROJ=$(cd "$HERE/../../.." && pwd)
POL=$S/etc/selinux/default
[ -f "$POL/contexts/files/file_contexts" ] || {
  echo "stage-selinux: no refpolicy in the rootfs ($POL)" >&2; exit 1; }
sed -i 's/^SELINUX=.*/SELINUX=enforcing/' "$S/etc/selinux/config"
"$PROJ/tools/deno" bundle --quiet --platform deno \
  -o "$S/opt/prhelperd-test/svirt_client.js" "$PROJ/tests/vm/guest/driver/svirt_client.ts"
pol=$(ls "$POL"/policy/policy.* | sort -V | tail -1)
setfiles -r "$S" -c "$pol" "$POL/contexts/files/file_contexts" "$S"
chcon system_u:object_r:initrc_exec_t:s0 "$S/opt/prhelperd-test/guest-test.sh"
