# tests/vm/guest/nested.sh - sourced by the nested-QEMU tests (after lib.sh).
#
# nested_qmp SOCK: qemu -machine none with -object pr-manager-helper on SOCK,
#   QMP query-pr-managers must say connected (about 1 s).
# nested_pr SOCK: the end-to-end run (about 230 s under TCG-in-TCG): path 1
#   registers 0xaaa1 from the outer VM; a nested guest, whose virtio-scsi disk
#   is scsi-block passthrough of path 2 with pr-manager=pr0 -> SOCK, runs
#   sg_persist register 0x77 / read-keys / reserve type 5 / read-reservation;
#   then the outer VM checks the reservation is held by 0x77 on path 2's
#   nexus (relative port 2, TransportID of initiator naa.5001405aaaaaaaa2).
have_nested() { command -v qemu-system-x86_64 >/dev/null && [ -f /nested/vmlinuz ]; }
nested_qmp() {
  local sock=$1 t0
  t0=$(up)
  expect 0 sh -c "printf '%s\n' '{\"execute\":\"qmp_capabilities\"}' '{\"execute\":\"query-pr-managers\"}' '{\"execute\":\"quit\"}' |
    timeout 120 qemu-system-x86_64 -machine none -nodefaults -display none -qmp stdio \
      -object pr-manager-helper,id=pr0,path=$sock"
  expect_out '"connected": true'
  echo "TIMING nested qemu -machine none + QMP: $(elapsed $t0)s"
}
nested_pr() {
  local sock=$1 t0 qrc
  expect 0 sg_persist --out --register --param-sark=0xaaa1 $A
  t0=$(up)
  timeout ${NESTED_TIMEOUT:-600} qemu-system-x86_64 -accel tcg -machine pc -m 256 -nodefaults \
    -display none -serial stdio -no-reboot -trace 'pr_manager_*' \
    -object pr-manager-helper,id=pr0,path=$sock \
    -blockdev driver=host_device,filename=$B,node-name=d0,pr-manager=pr0 \
    -device virtio-scsi-pci,id=scsi0 -device scsi-block,drive=d0,bus=scsi0.0 \
    -kernel /nested/vmlinuz -initrd /nested/pr-guest.cpio.gz \
    -append "console=ttyS0 panic=-1 quiet" > /run/nested.out 2>&1
  qrc=$?
  echo "TIMING nested PR guest (boot + 4 x sg_persist): $(elapsed $t0)s (qemu rc=$qrc)"
  grep -E 'PRGUEST|pr_manager' /run/nested.out | sed 's/^/  | /'
  check "grep -q 'pr_manager_run' /run/nested.out" "PR commands went through the pr-manager"
  check "[ \$(grep -c '^PRGUEST rc=0' /run/nested.out) = 4 ]" "all 4 sg_persist in the nested guest succeeded"
  check "grep '^PRGUEST' /run/nested.out | grep -A6 'read-keys' | grep -q '0x77'" "nested guest reads its key 0x77"
  check "grep -q 'PRGUEST.*Key=0x77' /run/nested.out" "nested guest reads the reservation of 0x77"
  echo "--- state seen from the outer VM"
  expect 0 sg_persist --in --read-keys $A;          expect_out '0x77'; expect_out '0xaaa1'
  expect 0 sg_persist --in --read-reservation $A;   expect_out 'Key=0x77'
  expect_out 'Write Exclusive, registrants only'
  expect 0 sg_persist --in --read-full-status $A
  # the holder's descriptor: key 0x77, '<< Reservation holder >>', relative port 0x2, initiator ...aaaa2
  check "echo \"\$LAST_OUT\" | grep -A6 'Key=0x77' | grep -q 'Reservation holder'" "0x77 holds the reservation"
  check "echo \"\$LAST_OUT\" | grep -A6 'Key=0x77' | grep -qi 'relative port.*0x2'" "on relative target port 2 (path 2)"
  check "echo \"\$LAST_OUT\" | grep -A8 'Key=0x77' | grep -qi '5001405aaaaaaaa2'" "with path 2's initiator TransportID"
  expect 0 sg_persist --out --clear --param-rk=0xaaa1 $A
}
