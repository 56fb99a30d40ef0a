#!/bin/bash
# tests/vm/systemd/stage-multipathd.sh STAGE - host side of guest-multipathd.sh:
# the same staging as guest-multipath.sh's (the package's dependency acl).
set -euo pipefail
exec bash "$(dirname "$0")/stage-multipath.sh" "$@"
