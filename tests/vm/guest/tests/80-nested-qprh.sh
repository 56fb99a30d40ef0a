#!/bin/sh
# Nested real QEMU against Debian's qemu-pr-helper (proves the plumbing that
# 85 uses for prhelperd).  Needs `run.sh --nested`; about 4 min under TCG.
. $RIG/lib.sh; . $RIG/nested.sh
have_nested || skip "nested qemu not in the image (run with --nested)"
lio_reset || exit 1
prh_start /run/prh-nested.sock || exit 1
qemu-system-x86_64 --version | head -1
nested_qmp /run/prh-nested.sock
nested_pr /run/prh-nested.sock
prh_stop
finish
