# tests/vm/common.sh - shared settings for the host-side rig scripts (sourced).
# WORK: cache/scratch dir (downloads, unpacked packages, initramfs, DENO_DIR).
WORK=${WORK:-/var/tmp/prhelperd-vm}
VMDIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)      # tests/vm
PROJ=$(cd "$VMDIR/../.." && pwd)                          # project root
export WORK

# find_deno: print the path of the pinned deno binary (the real ELF, not the
# npm wrapper script), or fail.
find_deno() {
  local c
  for c in "$PROJ/tools/toolchain/node_modules/@deno/linux-x64-glibc/deno" \
           "$PROJ/node_modules/@deno/linux-x64-glibc/deno"; do
    [ -x "$c" ] && { echo "$c"; return 0; }
  done
  return 1
}

# install_deno: install the pinned Deno with npm (the project's toolchain).
install_deno() {
  if [ -x "$PROJ/tools/setup.sh" ]; then "$PROJ/tools/setup.sh"
  elif [ -f "$PROJ/tools/toolchain/package.json" ]; then (cd "$PROJ/tools/toolchain" && npm install --no-audit --no-fund)
  else (cd "$PROJ" && npm install --no-audit --no-fund)
  fi
}

# ensure_host_tools: apt-get install whatever the rig needs and is missing.
HOST_PKGS="qemu-system-x86 qemu-system-common qemu-utils sg3-utils busybox-static cpio gcc bc dmsetup"
ensure_host_tools() {
  local missing="" c
  for c in qemu-system-x86_64 qemu-pr-helper qemu-img sg_persist busybox cpio gcc bc dmsetup; do
    command -v "$c" >/dev/null 2>&1 || missing="$missing $c"
  done
  # the static C helper needs libc.a
  [ -f /usr/lib/x86_64-linux-gnu/libc.a ] || missing="$missing libc.a"
  [ -z "$missing" ] && return 0
  echo "rig: missing on the host:$missing -> apt-get install" >&2
  if [ "$(id -u)" != 0 ]; then
    echo "rig: NOT ROOT: cannot install $HOST_PKGS; the VM tier cannot run" >&2
    return 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q $HOST_PKGS libc6-dev
}
