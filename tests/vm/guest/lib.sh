# tests/vm/guest/lib.sh - sourced by the guest tests (busybox sh).
#
# Check helpers:   expect WANT_RC CMD...; expect_out REGEX; check COND MSG; finish
# LIO:             lio_ensure (one LUN, two I_T nexuses), lio_reset (fresh PR state)
# Helpers:         prh_start/prh_stop (qemu-pr-helper), prd_start/prd_stop (prhelperd)
# Misc:            up (uptime), elapsed T0, skip MSG, have_prhelperd
T=/sys/kernel/config/target
FAILS=0
PRJ=${PRJ:-/prj}
RIG=${RIG:-$PRJ/tests/vm/guest}

up() { cut -d' ' -f1 /proc/uptime; }
elapsed() { echo "$(up) $1" | awk '{printf "%.2f", $1-$2}'; }
skip() { echo "SKIP: $*"; exit 77; }

# expect WANT_RC CMD... : run, show output indented, compare the exit status
expect() {
  want=$1; shift
  echo "+ $*"
  out=$("$@" 2>&1); rc=$?
  [ -n "$out" ] && echo "$out" | sed 's/^/    /'
  if [ "$rc" = "$want" ]; then echo "  ok (rc=$rc)"
  else echo "  FAILED: rc=$rc, wanted $want"; FAILS=$((FAILS+1)); fi
  LAST_OUT=$out
}
# expect_out REGEX : the last expect's output must match REGEX
expect_out() {
  if echo "$LAST_OUT" | grep -qE -- "$1"; then echo "  ok (output matches /$1/)"
  else echo "  FAILED: output does not match /$1/"; FAILS=$((FAILS+1)); fi
}
# check "shell condition" MESSAGE
check() {
  if eval "$1"; then echo "  ok: $2"; else echo "  FAILED: $2"; FAILS=$((FAILS+1)); fi
}
# kernel_warnings: number of kernel WARNING/BUG splats so far (dmesg), not
# counting the known refcount_t one: any REGISTER AND MOVE makes Debian's 6.1
# LIO warn "refcount_t: addition on 0" when the LUN is later unexported (the
# refcount saturates, nothing breaks; README.md pitfall 4).
kernel_warnings() { dmesg | grep -A1 -- '-----\[ cut here \]-----' | grep -v -e 'cut here' -e '^--$' | grep -vc 'refcount_t:'; }
finish() {
  if [ $FAILS = 0 ]; then echo "test: all checks passed"; exit 0; fi
  echo "test: $FAILS check(s) failed"; exit 1
}

# ------------------------------------------------------------------ LIO
# lio_ensure: one backstore (fileio on tmpfs, or rd_mcp) exported through two
# tcm_loop targets, each with its own I_T nexus, so the same LUN shows up twice:
#   $A/$SGA  = path 1 (initiator naa.5001405aaaaaaaa1 -> target naa.5001405000000001)
#   $B/$SGB  = path 2 (initiator naa.5001405aaaaaaaa2 -> target naa.5001405000000002)
# Only configfs writes; the result is cached in /run/lio.env.
LIO_SERIAL=5a1d0e8c-0000-4000-8000-00000000c0de
lio_ensure() {
  if [ -s /run/lio.env ]; then . /run/lio.env; return 0; fi
  local t0 m i w
  t0=$(up)
  modprobe configfs || return 1
  grep -q ' /sys/kernel/config ' /proc/mounts || mount -t configfs configfs /sys/kernel/config
  for m in target_core_mod target_core_file tcm_loop sd_mod sg; do modprobe $m || return 1; done
  echo "LIO: $(cat $T/version)"
  # PR state changes are persisted (APTPL) under dbroot (/var/target): give it
  # a directory, else every PR OUT logs "filp_open(/var/target/pr/aptpl_...)"
  # at KERN_ERR, and that console noise slows the guest down.
  mkdir -p /var/target/pr
  for i in 1 2; do
    w=$T/loopback/naa.500140500000000$i
    mkdir -p $w/tpgt_1/lun/lun_0
    echo naa.5001405aaaaaaaa$i > $w/tpgt_1/nexus            # creates the I_T nexus
  done
  _lio_backstore_create || return 1
  _lio_export || return 1
  echo "LIO: configured in $(elapsed $t0)s"
}
_lio_backstore_create() {
  case ${BACKSTORE:-fileio} in
    fileio)
      rm -f /tmp/lun0.img; truncate -s 64M /tmp/lun0.img
      BS=$T/core/fileio_0/lun0; mkdir -p $BS
      echo "fd_dev_name=/tmp/lun0.img,fd_dev_size=67108864" > $BS/control ;;
    rd)
      BS=$T/core/rd_mcp_0/lun0; mkdir -p $BS
      echo "rd_pages=16384" > $BS/control ;;        # 16384 x 4 KiB = 64 MiB
    *) echo "LIO: unknown backstore $BACKSTORE"; return 1 ;;
  esac
  echo 1 > $BS/enable || return 1
  # LIO reports no unit serial (VPD 0x80) unless one is set; it must be set
  # before the LUN is exported.
  echo $LIO_SERIAL > $BS/wwn/vpd_unit_serial
}
_lio_export() {  # link the backstore into both targets, wait for sdX/sgN
  local i w addr dev sg n
  for i in 1 2; do
    w=$T/loopback/naa.500140500000000$i
    ln -s $BS $w/tpgt_1/lun/lun_0/lun0 || return 1          # -> scsi_add_device
    addr=$(cat $w/tpgt_1/address)                          # "host:0:tpgt"
    n=0; dev=; sg=
    while [ $n -lt 100 ]; do
      dev=$(ls /sys/class/scsi_device/$addr:0/device/block 2>/dev/null)
      sg=$(ls /sys/class/scsi_device/$addr:0/device/scsi_generic 2>/dev/null)
      [ -n "$dev" ] && [ -n "$sg" ] && [ -b /dev/$dev ] && [ -c /dev/$sg ] && break
      sleep 0.1; n=$((n+1))
    done
    [ -n "$dev" ] || { echo "LIO: no block device for $addr"; return 1; }
    echo "LIO: path$i: $addr:0 initiator $(cat $w/tpgt_1/nexus) -> /dev/$dev /dev/$sg"
    if [ $i = 1 ]; then A=/dev/$dev SGA=/dev/$sg; else B=/dev/$dev SGB=/dev/$sg; fi
  done
  echo "A=$A SGA=$SGA B=$B SGB=$SGB BS=$BS" > /run/lio.env
}
# lio_reset: fresh LUN state (no registrations, PRgeneration 0, zeroed data):
# unexport, delete and re-create the backstore (the PR state lives in it) and
# its APTPL file, re-export.  Device names are re-read into A/SGA/B/SGB.
lio_reset() {
  local t0 i
  lio_ensure || return 1
  t0=$(up)
  for i in 1 2; do
    rm -f $T/loopback/naa.500140500000000$i/tpgt_1/lun/lun_0/lun0
  done
  rmdir $BS || { echo "LIO: cannot remove $BS"; return 1; }
  rm -f /var/target/pr/*
  _lio_backstore_create || return 1
  _lio_export || return 1
  echo "LIO: reset in $(elapsed $t0)s"
}

# ------------------------------------------------------------------ helpers
# prh_start SOCK: start Debian's qemu-pr-helper on SOCK (PRH_PID)
prh_start() {
  local sock=${1:-/run/prh.sock} n=0
  rm -f $sock
  qemu-pr-helper -k $sock -f /run/prh-$$.pid > /run/prh.log 2>&1 &
  PRH_PID=$!
  while [ ! -S $sock ] && [ $n -lt 100 ]; do sleep 0.1; n=$((n+1)); done
  [ -S $sock ] || { echo "qemu-pr-helper did not come up"; cat /run/prh.log; return 1; }
}
prh_stop() { [ -n "${PRH_PID:-}" ] && kill $PRH_PID 2>/dev/null; wait $PRH_PID 2>/dev/null; PRH_PID=; }

have_deno() { [ -n "${DENO:-}" ] && [ -x "$DENO" ]; }
# DENO_FLAGS: what deno needs in the guest.  The project share is read-only:
# --node-modules-dir=none (npm code from $DENO_DIR/npm, filled by
# prepare.sh), a writable copy of the lockfile prepare.sh made, and
# --cached-only (no network in the guest).
_deno_lock() { [ -f /run/deno.lock ] || cp /deno-dir/deno.lock /run/deno.lock 2>/dev/null || echo '{"version":"5"}' > /run/deno.lock; }
DENO_FLAGS="--node-modules-dir=none --lock=/run/deno.lock --cached-only --no-prompt"
# deno_run ARGS...: deno run with DENO_FLAGS
deno_run() { _deno_lock; "$DENO" run $DENO_FLAGS "$@"; }

# have_prhelperd: true once the daemon and its client library exist
have_prhelperd() { [ -f $PRJ/main.ts ] && [ -f $PRJ/mod.ts ] && grep -q PrHelperClient $PRJ/mod.ts; }
# PKG: the .deb as CI built it, unpacked by tests/vm/run.sh on the host
# (dpkg-deb -x dist/prhelperd_*.deb build/vm-pkg). Its /usr/bin/prhelperd is
# the launcher users run: the packaged Deno runtime, the bundle, the
# permission set and the V8 flags, nothing the tests add.
PKG=${PKG:-$PRJ/build/vm-pkg}
PRD=$PKG/usr/bin/prhelperd
have_pkg() { [ -x $PRD ] && [ -x $PKG/usr/lib/prhelperd/deno ]; }
# prd_start SOCK [ARGS...]: start prhelperd on SOCK (PRD_PID), exactly as
# shipped: the package's launcher, no test-only flags. PRD_ENV (optional)
# is put in front of it by env(1), e.g. glibc's malloc checking.
# PRD_MODE=source runs main.ts from the tree with -P=daemon instead (only for
# the tools test, which exercises the tree's CLI).
prd_start() {
  local sock=${1:-/run/prhelperd.sock} n=0
  shift || true
  rm -f $sock
  if [ "${PRD_MODE:-pkg}" = source ]; then
    _deno_lock
    (cd $PRJ && exec env ${PRD_ENV:-} "$DENO" run $DENO_FLAGS -P=daemon main.ts -k $sock "$@") \
      > /run/prhelperd.log 2>&1 &
  else
    have_pkg || { echo "no unpacked package at $PKG (tests/vm/run.sh unpacks dist/*.deb)"; return 1; }
    env ${PRD_ENV:-} $PRD -k $sock "$@" > /run/prhelperd.log 2>&1 &
  fi
  PRD_PID=$!
  while [ ! -S $sock ] && [ $n -lt 600 ] && kill -0 $PRD_PID 2>/dev/null; do sleep 0.1; n=$((n+1)); done
  [ -S $sock ] || { echo "prhelperd did not come up (mode ${PRD_MODE:-pkg})"; cat /run/prhelperd.log; return 1; }
  echo "prhelperd up on $sock after $((n/10)).$((n%10))s (pid $PRD_PID, ${PRD_MODE:-pkg})"
}
prd_stop() { [ -n "${PRD_PID:-}" ] && kill $PRD_PID 2>/dev/null; wait $PRD_PID 2>/dev/null; PRD_PID=; }
