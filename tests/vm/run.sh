#!/bin/bash
# tests/vm/run.sh - the VM test tier in one command: prepare (if needed),
# build the initramfs (if needed), boot, run guest tests, report.
#
#   tests/vm/run.sh [--selinux|--apparmor] [--nested] [--verbose] [--fault] [--require] [TEST...]
#     TEST        names of tests/vm/guest/tests/NN-NAME.sh (default: all;
#                 tests whose prerequisites are missing report SKIP)
#     --selinux   boot with SELinux (security=selinux, permissive; tests load the policy)
#     --apparmor  boot with AppArmor (security=apparmor; tests load their profiles)
#     --nested    add qemu-system-x86_64 to the guest (nested tier, ~4 min per nested test)
#     --verbose   stream every guest test's output to the console
#     --fault     self-test of the differential: corrupt one reply byte; the
#                 differential test must then FAIL (run.sh inverts its verdict)
#     --require   a missing prerequisite (not root, no KVM/TCG, ...) is a
#                 failure instead of a loud skip (set automatically when CI is set)
# Output: one line per guest test, `VM-TEST name: PASS|FAIL|SKIP (...)`, then
# `VM-SUMMARY: N passed, N failed, N skipped` and `VM-RESULT: PASS|FAIL`.
# Exit: 0 pass, 1 fail, 77 could not run (only without --require).
# Logs of the last run: tests/vm/out/ (console.log, guest.log, dmesg.log,
# logs/<test>.log, transcripts/).  WORK (cache) defaults to /var/tmp/prhelperd-vm.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/common.sh"
SEL=() NESTED=() VERB=() FAULT=0 REQUIRE=0 TESTS=()
[ -n "${CI:-}" ] && REQUIRE=1
for a in "$@"; do
  case $a in
    --selinux) SEL=(-S) ;;
    --apparmor) SEL=(-A) ;;
    --nested) NESTED=(-N) ;;
    --verbose|-v) VERB=(-v) ;;
    --fault) FAULT=1 ;;
    --require) REQUIRE=1 ;;
    -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
    -*) echo "run.sh: unknown option $a" >&2; exit 2 ;;
    *) TESTS+=("$a") ;;
  esac
done

cannot_run() {
  echo "################################################################" >&2
  echo "## VM TEST TIER NOT RUN: $*" >&2
  echo "## (real-LUN tests: LIO, PR matrix, differential, nested QEMU)" >&2
  echo "################################################################" >&2
  [ $REQUIRE = 1 ] && exit 1
  exit 77
}
[ "$(id -u)" = 0 ] || cannot_run "needs root (apt-get install, apt-get download, dpkg -x)"
[ "$(uname -m)" = x86_64 ] || cannot_run "needs an x86_64 host"
ensure_host_tools || cannot_run "host tools missing and cannot be installed"

T0=$(date +%s)
"$HERE/prepare.sh"
# The guest runs prhelperd as shipped: the .deb's launcher, unpacked into
# build/vm-pkg (guest: /prj/build/vm-pkg). The package is rebuilt when a source
# it is made from is newer than it.
unpack_package() {
  local deb pkg=$PROJ/build/vm-pkg
  deb=$(ls -t "$PROJ"/dist/prhelperd_*.deb 2>/dev/null | head -1 || true)
  # the unpacked tree's stamp is newer than every source it was built from
  if [ -n "$deb" ] && [ -f "$pkg/.stamp" ] && [ -z "$(find "$PROJ/main.ts" "$PROJ/mod.ts" \
      "$PROJ/deno.json" "$PROJ/src" "$PROJ/ffi" "$PROJ/tools/build_deb.ts" \
      "$PROJ/tools/runtime_flags.ts" "$PROJ/packaging" -newer "$pkg/.stamp" -type f | head -1)" ]; then
    echo "run.sh: guest runs the unpacked package in build/vm-pkg (up to date)"
    return 0
  fi
  echo "run.sh: building the package (deno task deb)"
  (cd "$PROJ" && ./tools/deno task deb > "$WORK/deb-build.log" 2>&1) || { tail -20 "$WORK/deb-build.log"; return 1; }
  deb=$(ls -t "$PROJ"/dist/prhelperd_*.deb | head -1)
  rm -rf "$pkg"; mkdir -p "$pkg"
  dpkg-deb -x "$deb" "$pkg" && touch "$pkg/.stamp"
  echo "run.sh: guest runs $(basename "$deb"), unpacked in build/vm-pkg"
}
unpack_package || cannot_run "cannot build or unpack the Debian package"
if [ ${#NESTED[@]} -gt 0 ]; then "$HERE/build-initramfs.sh" --nested; else "$HERE/build-initramfs.sh"; fi
T1=$(date +%s)

LIST=all
[ ${#TESTS[@]} -gt 0 ] && LIST=$(IFS=,; echo "${TESTS[*]}")
if [ $FAULT = 1 ]; then
  LIST=differential
  # the guest reads DIFF_FAULT from a run.sh in the results share
  printf '#!/bin/sh\nexport DIFF_FAULT=1\nexec sh $RIG/tests/65-differential.sh\n' > "$WORK/fault-run.sh"
fi
set +e
if [ $FAULT = 1 ]; then
  "$HERE/run-vm.sh" "${SEL[@]}" "${NESTED[@]}" "${VERB[@]}" -r "$WORK/fault-run.sh" | grep -a --line-buffered -E '^(VM|-----|run-vm)|^[^[]'
else
  "$HERE/run-vm.sh" -t "$LIST" "${SEL[@]}" "${NESTED[@]}" "${VERB[@]}" | grep -a --line-buffered -E '^(VM|-----|run-vm)|^[^[]'
fi
RC=${PIPESTATUS[0]}
set -e
OUTD=${VM_OUT:-$HERE/out}
C=$OUTD/console.log
np=$(grep -ac '^VM-TEST .*: PASS' "$C" || true)
nf=$(grep -ac '^VM-TEST .*: FAIL' "$C" || true)
ns=$(grep -ac '^VM-TEST .*: SKIP' "$C" || true)
echo "VM-SUMMARY: $np passed, $nf failed, $ns skipped (prepare+build $((T1 - T0))s, VM $(( $(date +%s) - T1 ))s)"
if [ $FAULT = 1 ]; then
  if [ $RC = 1 ] && grep -q 'FAILED: prhelperd differs' "$OUTD/logs/run.sh.log"; then
    echo "VM-FAULT-SELFTEST: PASS (the corrupted reply byte was detected)"; exit 0
  fi
  echo "VM-FAULT-SELFTEST: FAIL (the differential did not catch the corrupted byte; rc=$RC)"; exit 1
fi
case $RC in
  0) exit 0 ;;
  1) echo "run.sh: FAIL; logs in $OUTD/ (console.log, logs/<test>.log, dmesg.log)"; exit 1 ;;
  *) echo "run.sh: no verdict from the VM (rc=$RC, timeout or crash); last console lines:"
     tail -30 "$C" 2>/dev/null; exit 1 ;;
esac
