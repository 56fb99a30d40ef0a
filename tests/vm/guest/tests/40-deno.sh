#!/bin/sh
# Deno inside the guest: the project's pinned binary from the 9p project
# share, DENO_DIR from the denodir share.  Measures start-up under TCG.
. $RIG/lib.sh
have_deno || { echo "deno not found (DENO=${DENO:-unset})"; exit 1; }
echo "deno: $DENO"
t0=$(up)
expect 0 "$DENO" --version
echo "TIMING deno --version (first, cold 9p page cache): $(elapsed $t0)s"
t0=$(up)
expect 0 "$DENO" --version
echo "TIMING deno --version (warm): $(elapsed $t0)s"
t0=$(up)
expect 0 "$DENO" eval 'console.log("deno-in-guest", Deno.version.deno, Deno.build.os, 6*7)'
expect_out 'deno-in-guest 2\.[0-9.]+ linux 42'
echo "TIMING deno eval (start + trivial script): $(elapsed $t0)s"
t0=$(up); i=0
while [ $i -lt 5 ]; do "$DENO" eval 'Deno.exit(0)'; i=$((i+1)); done
echo "TIMING deno eval 'Deno.exit(0)': $(echo "$(up) $t0" | awk '{printf "%.2f", ($1-$2)/5}')s each (avg of 5)"
echo "--- deno run of a project-tree script that opens the LIO disk through Deno FFI"
lio_ensure || exit 1
t0=$(up)
expect 0 deno_run -A $RIG/driver/ffi-inquiry.ts $A
expect_out 'INQUIRY via FFI SG_IO: status=0 vendor="LIO-ORG"'
echo "TIMING deno run ffi-inquiry.ts: $(elapsed $t0)s"
if [ -f $PRJ/deno.json ]; then
  echo "--- the project's npm dependencies resolve from the shared DENO_DIR (no network)"
  t0=$(up)
  _deno_lock
  expect 0 sh -c "cd $PRJ && '$DENO' eval $DENO_FLAGS 'const m = await import(\"commander\"); console.log(\"npm-ok\", typeof m.Command)'"
  expect_out 'npm-ok function'
  echo "TIMING deno eval with npm import: $(elapsed $t0)s"
fi
finish
