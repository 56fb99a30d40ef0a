#!/bin/bash
# tests/vm/prepare.sh - fetch and unpack what the VM rig needs (idempotent).
#
#   tests/vm/prepare.sh            # WORK defaults to /var/tmp/prhelperd-vm
#   WORK=/some/dir tests/vm/prepare.sh [--force]
#
# Does, skipping every step whose inputs did not change:
#   1. host tools: apt-get install qemu-system-x86 qemu-utils sg3-utils
#      busybox-static cpio gcc bc (only the missing ones; needs root)
#   2. `apt-get download` the Debian kernel + SELinux + AppArmor packages into
#      $WORK/debs and `dpkg -x` them into $WORK/root (nothing is installed);
#      `busybox depmod` (the .deb has no modules.dep, the host has no kmod)
#   3. builds the binary SELinux policy $WORK/root/etc/selinux/default/policy/
#      policy.33 from selinux-policy-default's .pp modules with the unpacked
#      semodule (what the package's postinst would do)
#   4. compiles the static reference client $WORK/rigtool from src/rigtool.c
#   5. Deno for the guest: installs the pinned toolchain (npm) if missing and
#      fills $WORK/deno-dir (DENO_DIR, shared into the guest over 9p) with the
#      project's npm dependencies (`deno install`).
# Stamps: $WORK/stamps/<step>, each holding the key (hash of its inputs).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/common.sh"
FORCE=0; [ "${1:-}" = "--force" ] && FORCE=1
mkdir -p "$WORK/debs" "$WORK/root" "$WORK/stamps"

# stamp_ok STEP KEY: true if STEP was done with the same KEY
stamp_ok() { [ $FORCE = 0 ] && [ -f "$WORK/stamps/$1" ] && [ "$(cat "$WORK/stamps/$1")" = "$2" ]; }
stamp_set() { echo "$2" > "$WORK/stamps/$1"; }

# ---------------------------------------------------------------- 1. host tools
ensure_host_tools

# ---------------------------------------------------------------- 2. packages
PKGS_BASE="selinux-policy-default policycoreutils selinux-utils libsemanage2
           libsemanage-common libsepol2 semodule-utils checkpolicy apparmor libapparmor1"
# resolve_pkgs: print "name=version" for the kernel image and PKGS_BASE
resolve_pkgs() {
  local kpkg p v
  # linux-image-amd64 is a metapackage; its Depends: names the real image
  kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
  [ -n "$kpkg" ] || return 1
  for p in $kpkg $PKGS_BASE; do
    v=$(apt-cache policy "$p" 2>/dev/null | awk '/Candidate:/{print $2}')
    [ -n "$v" ] && [ "$v" != "(none)" ] || return 1
    echo "$p=$v"
  done
}
PKGV=$(resolve_pkgs) || { apt-get update -qq; PKGV=$(resolve_pkgs); }
KEY_PKGS=$(echo "$PKGV" | sha256sum | cut -c1-16)
if stamp_ok pkgs "$KEY_PKGS" && [ -s "$WORK/KVER" ]; then
  echo "prepare: packages up to date ($(echo $PKGV | tr ' ' '\n' | head -1))"
else
  echo "prepare: downloading $(echo $PKGV | wc -w) packages"
  rm -rf "$WORK/debs" "$WORK/root"; mkdir -p "$WORK/debs" "$WORK/root"
  # apt-get download as root into a root-owned dir warns about the _apt
  # sandbox; harmless.  A stale package list (404) -> update once and retry.
  dl() { (cd "$WORK/debs" && apt-get download $PKGV 2>&1 | grep -v 'Download is performed unsandboxed'; exit "${PIPESTATUS[0]}"); }
  dl || { apt-get update -qq; PKGV=$(resolve_pkgs); KEY_PKGS=$(echo "$PKGV" | sha256sum | cut -c1-16); dl; }
  for d in "$WORK"/debs/*.deb; do dpkg -x "$d" "$WORK/root"; done
  KVER=$(ls "$WORK/root/lib/modules" | head -1)
  busybox depmod -b "$WORK/root" "$KVER"
  echo "$KVER" > "$WORK/KVER"
  rm -f "$WORK/stamps/policy"
  stamp_set pkgs "$KEY_PKGS"
fi
KVER=$(cat "$WORK/KVER")

# ---------------------------------------------------------------- 3. SELinux policy
R="$WORK/root"
if stamp_ok policy "$KEY_PKGS" && [ -s "$R/etc/selinux/default/policy/policy.33" ]; then
  echo "prepare: SELinux policy up to date"
else
  echo "prepare: building the SELinux policy (about 30 s)"
  # libsemanage must be told where the pp->cil compiler, setfiles and
  # sefcontext_compile live under the alternate root (else it uses the host's
  # /usr/libexec and /sbin, which do not exist here).
  CONF="$R/etc/selinux/semanage.conf"
  if ! grep -q '^compiler-directory' "$CONF"; then
    cat >> "$CONF" <<EOF
compiler-directory = $R/usr/libexec/selinux/hll
usepasswd = false
[setfiles]
path = $R/sbin/setfiles
args = -q -c \$@ \$<
[end]
[sefcontext_compile]
path = $R/usr/sbin/sefcontext_compile
args = \$@
[end]
EOF
  fi
  rm -rf "$R/var/lib/selinux"; mkdir -p "$R/var/lib/selinux"
  mods=()
  for m in $(cat "$R/usr/share/selinux/default/.modules"); do
    mods+=("-i$R/usr/share/selinux/default/$m.pp.bz2")
  done
  # the modules the package's postinst disables by default
  for m in amtu bugzilla cobbler condor cyphesis git ksmtuned likewise livecd nessus numad \
           oddjob openca soundserver thunderbird updfstab usernetctl; do
    mods+=("-d$m")
  done
  # The unpacked semodule runs against the host's libsemanage2/libsepol2
  # (same Debian versions as the unpacked ones).
  "$R/usr/sbin/semodule" -p "$R" -s default -X 100 -n "${mods[@]}" 2>&1 \
      | grep -v 'not in password file' || true
  [ -s "$R/etc/selinux/default/policy/policy.33" ] || { echo "prepare: policy build failed" >&2; exit 1; }
  printf 'SELINUX=permissive\nSELINUXTYPE=default\n' > "$R/etc/selinux/config"
  stamp_set policy "$KEY_PKGS"
fi

# ---------------------------------------------------------------- 4. rigtool
KEY_RT=$(cat "$HERE/src/rigtool.c" | sha256sum | cut -c1-16)
if stamp_ok rigtool "$KEY_RT" && [ -x "$WORK/rigtool" ]; then
  echo "prepare: rigtool up to date"
else
  gcc -O2 -Wall -static -o "$WORK/rigtool" "$HERE/src/rigtool.c"
  stamp_set rigtool "$KEY_RT"
fi

# ---------------------------------------------------------------- 5. deno
DENO=$(find_deno) || { install_deno; DENO=$(find_deno); }
KEY_DENO=v2-$(cat "$PROJ/deno.json" "$PROJ/deno.lock" 2>/dev/null | sha256sum | cut -c1-16)-$("$DENO" --version | head -1 | tr ' ' _)
if stamp_ok denodir "$KEY_DENO" && [ -d "$WORK/deno-dir" ]; then
  echo "prepare: DENO_DIR up to date"
else
  mkdir -p "$WORK/deno-dir"
  # Fetch the npm packages of deno.json into the DENO_DIR that the guest
  # uses (shared over 9p).  The guest runs deno with --node-modules-dir=none
  # (the project share is read-only, deno must not write node_modules there),
  # so the npm code must be in $DENO_DIR/npm, and with a lockfile: without
  # one --cached-only needs registry metadata that `deno install` does not
  # keep.  The lockfile is a copy ($WORK/deno-dir/deno.lock): the project's
  # own deno.lock is never written from here.
  if [ -f "$PROJ/deno.json" ]; then
    [ -f "$PROJ/deno.lock" ] && cp "$PROJ/deno.lock" "$WORK/deno-dir/deno.lock"
    (cd "$PROJ" && DENO_DIR="$WORK/deno-dir" "$DENO" install --node-modules-dir=none \
       --lock="$WORK/deno-dir/deno.lock")
    # Also keep the npm registry metadata (registry.json), so that guest code
    # run with --no-lock --cached-only resolves too.
    ents=(); for f in main.ts mod.ts; do [ -f "$PROJ/$f" ] && ents+=("$f"); done
    [ ${#ents[@]} -gt 0 ] && (cd "$PROJ" && DENO_DIR="$WORK/deno-dir" "$DENO" cache --no-lock \
       --node-modules-dir=none "${ents[@]}")
  fi
  stamp_set denodir "$KEY_DENO"
fi
echo "prepare: done (kernel $KVER, deno $("$DENO" --version | head -1))"
