#!/bin/sh
# Differential: the same sequence, each run from a fresh LUN (lio_reset),
#   1. rigtool    -> Debian's qemu-pr-helper   (reference)
#   2. rigtool    -> prhelperd                 (same client, other helper)
#   3. mod.ts     -> prhelperd                 (from test 60, or run here)
# Transcripts (status, sz, all 96 sense bytes, data, shell-check results)
# must be byte-identical, except sections listed in
# guest/seq/differential-allow.txt (documented improvements; one label
# regex per line).  DIFF_FAULT=1 corrupts one reply byte of run 2 first, to
# prove that the comparison catches it (the test must then FAIL).
. $RIG/lib.sh
have_prhelperd || skip "prhelperd not in the tree yet"
export A B SGA SGB
dd if=/dev/zero of=/tmp/blk bs=512 count=1 2>/dev/null
sh $RIG/seq/gen-matrix.sh > /run/matrix.seq
cat $RIG/seq/wire.seq >> /run/matrix.seq 2>/dev/null
mkdir -p /run/tr
W0=$(kernel_warnings)
lio_reset || exit 1
prh_start /run/prh.sock || exit 1
rigtool prh-seq /run/prh.sock /run/matrix.seq /run/tr/d-qprh-rigtool.tr > /run/d1.log 2>&1
echo "run 1 (rigtool -> qemu-pr-helper): $(tail -1 /run/d1.log)"
prh_stop
lio_reset || exit 1
prd_start /run/prhelperd.sock || exit 1
rigtool prh-seq /run/prhelperd.sock /run/matrix.seq /run/tr/d-prd-rigtool.tr > /run/d2.log 2>&1
echo "run 2 (rigtool -> prhelperd): $(tail -1 /run/d2.log)"
lio_reset || exit 1
deno_run -A $RIG/driver/seq.ts /run/prhelperd.sock /run/matrix.seq /run/tr/d-prd-client.tr > /run/d3.log 2>&1
echo "run 3 (mod.ts client -> prhelperd): $(tail -1 /run/d3.log)"
check 'kill -0 $PRD_PID' "daemon still running"
for i in 1 2 3; do
  check "tail -1 /run/d$i.log | grep -q ' 0 failed expectation'" "run $i met every expectation"
  grep CHECK-FAIL /run/d$i.log | head -5
done
prd_stop
if [ "${DIFF_FAULT:-0}" = 1 ]; then
  echo "DIFF_FAULT=1: flipping one sense byte in run 2's first CHECK CONDITION reply"
  awk 'BEGIN{d=0} /^< st=02 / && !d {sub(/sense=70/, "sense=71"); d=1} {print}' \
    /run/tr/d-prd-rigtool.tr > /run/tr/x && mv /run/tr/x /run/tr/d-prd-rigtool.tr
fi
# drop allowed sections (label matches a regex in differential-allow.txt)
filter() {
  if [ -s $RIG/seq/differential-allow.txt ]; then
    awk -v allow="$RIG/seq/differential-allow.txt" '
      BEGIN { while ((getline r < allow) > 0) if (r !~ /^#/ && r != "") re[++n] = r }
      /^@ / { skip = 0; for (i = 1; i <= n; i++) if (substr($0, 3) ~ re[i]) skip = 1 }
      !skip { print }' "$1"
  else cat "$1"; fi
}
for t in d-qprh-rigtool d-prd-rigtool d-prd-client; do filter /run/tr/$t.tr > /run/tr/$t.cmp; done
echo "transcript lines: $(wc -l < /run/tr/d-qprh-rigtool.tr) (compared: $(wc -l < /run/tr/d-qprh-rigtool.cmp))"
if cmp -s /run/tr/d-qprh-rigtool.cmp /run/tr/d-prd-rigtool.cmp; then
  echo "  ok: prhelperd's replies are byte-identical to qemu-pr-helper's (rigtool)"
else
  echo "  FAILED: prhelperd differs from qemu-pr-helper:"; FAILS=$((FAILS+1))
  diff /run/tr/d-qprh-rigtool.cmp /run/tr/d-prd-rigtool.cmp | head -40
fi
if cmp -s /run/tr/d-prd-rigtool.cmp /run/tr/d-prd-client.cmp; then
  echo "  ok: mod.ts's client sees exactly what rigtool sees"
else
  echo "  FAILED: mod.ts client transcript differs from rigtool's:"; FAILS=$((FAILS+1))
  diff /run/tr/d-prd-rigtool.cmp /run/tr/d-prd-client.cmp | head -40
fi
[ -d /share ] && { mkdir -p /share/transcripts; cp /run/tr/*.tr /share/transcripts/; }
check "[ $(kernel_warnings) = $W0 ]" "no kernel WARNING during the sequences"
finish
