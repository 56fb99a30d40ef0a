#!/bin/sh
# Soak (issue 13): ONE prhelperd instance, started exactly as shipped (the
# package's launcher, no test-only flags), with glibc's heap checking on
# (libc_malloc_debug.so.0 + glibc.malloc.check=3 + MALLOC_PERTURB_), serving:
#   - 20+ connections one after another, each a PR sequence (the matrix and an
#     extra sequence: SPEC_I_PT, odd allocation lengths) on /dev/sdX or
#     /dev/sgN of LUN 1 or LUN 2, from a LUN re-created before every round;
#     every transcript byte-identical to qemu-pr-helper's on the same sequence;
#   - 8 connections at once, twice, each 400+ requests of every PR IN action
#     and state-preserving PR OUT, on sdX and sgN, read-only and read-write
#     fds; every transcript byte-identical to qemu-pr-helper's;
#   - LUN 2 removed under a held fd and re-added, then served again;
# at least 5,000 SG_IO requests in all. Pass: the daemon never aborts, every
# reply matches, and its fd count is back to the baseline at the end.
. $RIG/lib.sh
have_pkg || { echo "no unpacked package at $PKG"; exit 1; }
MDBG=/usr/lib/x86_64-linux-gnu/libc_malloc_debug.so.0
[ -f $MDBG ] || { echo "no $MDBG in the initramfs"; exit 1; }
SOCK=/run/prhelperd-soak.sock QSOCK=/run/prh-soak.sock
W=/run/soak; rm -rf $W; mkdir -p $W/ref $W/prd
lio_reset || exit 1
T0=$(up)

# ---------------------------------------------------------------- LUN 2
# A second backstore, exported as LUN 1 of both tcm_loop targets (so it too has
# two I_T nexuses): $C/$SGC (path 1) and $D/$SGD (path 2).
BS2=$T/core/fileio_1/lun1
lun2_create() {
  local i w addr n dev sg
  rm -f /tmp/lun1.img /var/target/pr/*lun1* 2>/dev/null; truncate -s 16M /tmp/lun1.img
  mkdir -p $BS2 || return 1
  echo "fd_dev_name=/tmp/lun1.img,fd_dev_size=16777216" > $BS2/control
  echo 1 > $BS2/enable || return 1
  echo 5a1d0e8c-0000-4000-8000-00000000c0d2 > $BS2/wwn/vpd_unit_serial
  for i in 1 2; do
    w=$T/loopback/naa.500140500000000$i
    mkdir -p $w/tpgt_1/lun/lun_1
    ln -s $BS2 $w/tpgt_1/lun/lun_1/lun1 || return 1
    addr=$(cat $w/tpgt_1/address); n=0; dev=; sg=
    while [ $n -lt 100 ]; do
      dev=$(ls /sys/class/scsi_device/$addr:1/device/block 2>/dev/null)
      sg=$(ls /sys/class/scsi_device/$addr:1/device/scsi_generic 2>/dev/null)
      [ -n "$dev" ] && [ -n "$sg" ] && [ -b /dev/$dev ] && [ -c /dev/$sg ] && break
      sleep 0.1; n=$((n+1))
    done
    [ -n "$dev" ] || { echo "LUN 2: no block device on path $i"; return 1; }
    if [ $i = 1 ]; then C=/dev/$dev SGC=/dev/$sg; else D=/dev/$dev SGD=/dev/$sg; fi
  done
}
lun2_unlink() { rm -f $T/loopback/naa.500140500000000$1/tpgt_1/lun/lun_1/lun1; }
lun2_remove() { lun2_unlink 1; lun2_unlink 2; rmdir $BS2 2>/dev/null; true; }
# fresh LUNs: both re-created (unexport, delete backstore, re-create, export),
# then TEST UNIT READY on every path (clears the power-on unit attention)
fresh_luns() {
  lio_reset > /dev/null || return 1
  lun2_remove; lun2_create || return 1
  for d in $A $B $C $D; do sg_turs $d > /dev/null 2>&1; sg_turs $d > /dev/null 2>&1; done
  return 0
}

# ---------------------------------------------------------------- sequences
# M: the PR matrix without its shell checks (those run in the matrix test);
# E: SPEC_I_PT registration, READ FULL STATUS and other PR IN at allocation
#    lengths that cut descriptors, 6/7-byte REPORT CAPABILITIES, CLEAR;
# P: state-preserving requests for the concurrent phase (every PR IN action at
#    several lengths on both paths, sd and sg nodes, r and w fds; REGISTER with
#    a wrong key = RESERVATION CONFLICT; PR OUT on a read-only fd = refused).
sh $RIG/seq/gen-matrix.sh | grep -v '^!' > $W/M.seq
KA=000000000000aaa1 KB=000000000000bbb2 KX=0000000000009999
TID2=06000000_5001405aaaaaaaa2_000000000000000000000000
cat > $W/E.seq <<EOS
@ SPEC_I_PT registration of both nexuses from path 1
A w 5f_00_00_00_00_00_00_00_34_00 p=0000000000000000_${KA}_00000000_08000000_00000018_${TID2}
A r 5e_00_00_00_00_00_00_00_ff_00
A r 5e_03_00_00_00_00_00_04_00_00
B r 5e_03_00_00_00_00_00_00_1e_00
B r 5e_03_00_00_00_00_00_00_0c_00
A r 5e_00_00_00_00_00_00_00_0c_00
A r 5e_02_00_00_00_00_00_00_06_00
A r 5e_02_00_00_00_00_00_00_07_00
A r 5e_01_00_00_00_00_00_00_09_00
@ reservation, read back at every length from 1 to 30
A w 5f_01_01_00_00_00_00_00_18_00 p=${KA}_0000000000000000_00000000_00000000
EOS
i=1; while [ $i -le 30 ]; do
  printf 'B r 5e_01_00_00_00_00_00_%02x_%02x_00\nA r 5e_03_00_00_00_00_00_%02x_%02x_00\n' \
    $((i >> 8)) $((i & 255)) $((i >> 8)) $((i & 255)) >> $W/E.seq
  i=$((i+1))
done
cat >> $W/E.seq <<EOS
@ clear
A w 5f_03_00_00_00_00_00_00_18_00 p=${KA}_0000000000000000_00000000_00000000
A r 5e_00_00_00_00_00_00_20_00_00
EOS
# setup for P: path 1 registered (aaa1) and holding WRITE EXCLUSIVE, path 2 registered (bbb2)
cat > $W/Psetup.seq <<EOS
A w 5f_00_00_00_00_00_00_00_18_00 p=0000000000000000_${KA}_00000000_00000000
B w 5f_00_00_00_00_00_00_00_18_00 p=0000000000000000_${KB}_00000000_00000000
A w 5f_01_01_00_00_00_00_00_18_00 p=${KA}_0000000000000000_00000000_00000000
EOS
: > $W/P1.seq
for dev in A B SGA SGB; do
  for m in r w; do
    for sa in 00 01 02 03; do
      for len in 0008 0018 001e 0100 2000; do
        echo "$dev $m 5e_${sa}_00_00_00_00_00_${len}_00" >> $W/P1.seq
      done
    done
    echo "$dev w 5f_00_00_00_00_00_00_00_18_00 p=${KX}_${KX}_00000000_00000000" >> $W/P1.seq
  done
  echo "$dev r 5f_00_00_00_00_00_00_00_18_00 p=${KX}_${KX}_00000000_00000000" >> $W/P1.seq
done
# DEV names in P1 are A/B/SGA/SGB: rigtool takes a path, so substitute
sed -e 's#^SGA #$SGA #' -e 's#^SGB #$SGB #' $W/P1.seq > $W/P1x.seq
P=$W/P.seq; : > $P
for k in 1 2 3; do cat $W/P1x.seq >> $P; done     # 3 x 172 = 516 requests per client
pseq() { sed -e "s#^\$SGA #$SGA #" -e "s#^\$SGB #$SGB #" $P > $1; }
echo "sequences: M $(grep -c '^[AB] ' $W/M.seq), E $(grep -c '^[AB] ' $W/E.seq), P $(grep -vc '^[@#]' $P) requests"

# run_seq SOCK SEQ TRANSCRIPT LUN(1|2) NODE(sd|sg): one connection; the
# sequence's A/B are the chosen LUN's paths on the chosen node type
run_seq() {
  local a b
  case $4$5 in
    1sd) a=$A b=$B ;; 1sg) a=$SGA b=$SGB ;; 2sd) a=$C b=$D ;; 2sg) a=$SGC b=$SGD ;;
  esac
  A=$a B=$b rigtool prh-seq $1 $2 $3 > $3.log 2>&1
  # sg node paths in the transcript by name, so runs compare across re-creations
  sed -i -e "s#^> $SGA #> SGA #" -e "s#^> $SGB #> SGB #" $3
  tail -1 $3.log | grep -q ' 0 failed expectation' || { echo "  expectations failed: $3"; tail -3 $3.log; return 1; }
}
nreq() { grep -c '^<' "$@" | awk -F: '{s+=$NF} END {print s+0}'; }

# ---------------------------------------------------------------- reference
fresh_luns || exit 1
prh_start $QSOCK || exit 1
for s in M E; do for l in 1 2; do for n in sd sg; do
  fresh_luns || exit 1
  run_seq $QSOCK $W/$s.seq $W/ref/$s-$l$n.tr $l $n || FAILS=$((FAILS+1))
done; done; done
fresh_luns || exit 1
run_seq $QSOCK $W/Psetup.seq $W/ref/Psetup.tr 1 sd || FAILS=$((FAILS+1))
pseq $W/P.run.seq
run_seq $QSOCK $W/P.run.seq $W/ref/P.tr 1 sd || FAILS=$((FAILS+1))
prh_stop
echo "reference (qemu-pr-helper): $(ls $W/ref/*.tr | wc -l) transcripts, $(nreq $W/ref/*.tr) replies, $(elapsed $T0)s"

# ---------------------------------------------------------------- the daemon
PRD_ENV="LD_PRELOAD=$MDBG GLIBC_TUNABLES=glibc.malloc.check=3 MALLOC_PERTURB_=165" \
  prd_start $SOCK || exit 1
alive() { kill -0 $PRD_PID 2>/dev/null || { echo "  DAEMON DIED ($1)"; tail -20 /run/prhelperd.log; return 1; }; }
fds() { ls /proc/$PRD_PID/fd | wc -l; }
same() { # same REF GOT: byte-identical transcripts
  if cmp -s "$1" "$2"; then return 0; fi
  echo "  DIFFERS: $2 vs $1"; diff "$1" "$2" | head -6; FAILS=$((FAILS+1)); return 1
}

# concurrent PHASE NAME: 8 clients at once, each P on its own connection
concurrent() {
  local i pids=""
  fresh_luns || return 1
  run_seq $SOCK $W/Psetup.seq $W/prd/$1-setup.tr 1 sd || FAILS=$((FAILS+1))
  same $W/ref/Psetup.tr $W/prd/$1-setup.tr
  pseq $W/P.run.seq
  for i in 1 2 3 4 5 6 7 8; do
    run_seq $SOCK $W/P.run.seq $W/prd/$1-c$i.tr 1 sd &
    pids="$pids $!"
  done
  for i in $pids; do wait $i || FAILS=$((FAILS+1)); done
  alive "concurrent $1" || return 1
  for i in 1 2 3 4 5 6 7 8; do same $W/ref/P.tr $W/prd/$1-c$i.tr; done
  echo "concurrent $1: 8 connections at once, $(nreq $W/prd/$1-c*.tr) replies, $(elapsed $T0)s"
}

concurrent warmup || exit 1      # also starts the Workers: the fd baseline is taken after it
# read once the daemon has served (the socket exists before the daemon's own
# re-exec, and /proc/PID/maps read during that exec need not show the preload yet)
check "grep -q libc_malloc_debug /proc/$PRD_PID/maps" "the daemon runs with glibc's malloc checking ($MDBG loaded)"
check "tr '\\0' ' ' < /proc/$PRD_PID/cmdline | grep -q -- '--jitless'" "the daemon runs as the launcher starts it (--jitless)"
FD0=$(fds)
echo "fd baseline after warm-up: $FD0"

# sequential: 24 connections one after another, each from fresh LUNs
r=0
for s in M E M E M E; do for l in 1 2; do for n in sd sg; do
  r=$((r+1))
  fresh_luns || exit 1
  run_seq $SOCK $W/$s.seq $W/prd/r$r-$s-$l$n.tr $l $n || FAILS=$((FAILS+1))
  alive "round $r ($s on LUN $l $n)" || exit 1
  same $W/ref/$s-$l$n.tr $W/prd/r$r-$s-$l$n.tr
done; done; done
echo "sequential: $r connections, $(nreq $W/prd/r*.tr) replies, $(elapsed $T0)s"

concurrent second || exit 1

# LUN 2 removed under a held fd, then re-added and served again
rm -f /run/soak.fifo; mkfifo /run/soak.fifo
deno_run -A $RIG/driver/lun_removal.ts $SOCK $C $A /run/soak.fifo > $W/lr.out 2>&1 &
DRV=$!
n=0; while ! grep -q READY $W/lr.out && [ $n -lt 600 ]; do sleep 0.2; n=$((n+1)); done
check "grep -q READY $W/lr.out" "a client holds an fd of LUN 2 ($C)"
lun2_unlink 1
n=0; while [ -b $C ] && [ $n -lt 50 ]; do sleep 0.1; n=$((n+1)); done
echo go > /run/soak.fifo
wait $DRV
cat $W/lr.out
check "grep -Eq 'LR after READ KEYS: status 0x02 sz 0' $W/lr.out" "PR IN on the removed LUN's held fd: CHECK CONDITION"
check "grep -Eq 'LR after REGISTER: status 0x02 sz 0' $W/lr.out" "PR OUT on the removed LUN's held fd: CHECK CONDITION"
# LUN 1 answers, GOOD or with the unit attention LIO raises on every LUN of
# the target when its LUN inventory changes (06/3F/0E REPORTED LUNS DATA HAS CHANGED)
check "grep -Eq 'LR other path READ KEYS: status 0x(00 sz [0-9]+|02 sz 0 sense 06/3F/0E)\$' $W/lr.out" \
  "the daemon still serves LUN 1 (the device's own answer)"
alive "LUN removal" || exit 1
fresh_luns || exit 1           # LUN 2 re-added (and LUN 1 fresh), unit attentions cleared
run_seq $SOCK $W/M.seq $W/prd/readded-M-2sd.tr 2 sd || FAILS=$((FAILS+1))
same $W/ref/M-2sd.tr $W/prd/readded-M-2sd.tr
alive "after re-adding LUN 2" || exit 1

# every client is gone: the daemon holds what it held after the warm-up
n=0; while [ "$(fds)" != "$FD0" ] && [ $n -lt 50 ]; do sleep 0.1; n=$((n+1)); done
FD1=$(fds)
check "[ $FD1 = $FD0 ]" "fd count back to the baseline ($FD1 after, $FD0 before)"
TOTAL=$(nreq $W/prd/*.tr)
echo "soak: $TOTAL replies through one daemon instance in $(elapsed $T0)s"
check "[ $TOTAL -ge 5000 ]" "at least 5,000 requests ($TOTAL)"
check "! grep -Eqi 'free\\(\\)|malloc\\(\\)|corrupted|panicked|Fatal error' /run/prhelperd.log" "no heap or runtime error in the daemon's log"
alive "end" || FAILS=$((FAILS+1))
prd_stop
lun2_remove
[ -d /share ] && { mkdir -p /share/soak; cp -r $W/prd $W/ref /run/prhelperd.log /share/soak/ 2>/dev/null; }
lio_reset > /dev/null || true
finish
