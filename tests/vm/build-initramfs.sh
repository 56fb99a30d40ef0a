#!/bin/bash
# tests/vm/build-initramfs.sh - build the guest initramfs (idempotent).
#
#   tests/vm/build-initramfs.sh [--nested] [--force]
#     -> $WORK/out/rig.cpio.gz        base image (always)
#     -> $WORK/out/nested.cpio.gz     with --nested: qemu-system-x86_64 + libs +
#                                     firmware + kernel + the nested guest's initramfs
# Boot rig.cpio.gz alone or `cat rig.cpio.gz nested.cpio.gz` (the kernel
# unpacks concatenated compressed cpio archives in order).
#
# What is NOT in the image: the guest tests, lib.sh, the Deno driver, the
# project and the deno binary.  The guest reads those from the project tree,
# shared read-only over 9p (see run-vm.sh), so editing a test needs no rebuild.
# The image holds: busybox, sg3-utils, qemu-pr-helper, rigtool, the SELinux
# userland + policy, the kernel modules, the shared libraries deno needs
# (found with ldd) and guest/init.
# Each image is rebuilt only when its key (hash of the inputs) changes.
# COMPRESS=gzip|zstd|none (default gzip).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/common.sh"
R=$WORK/root
KVER=$(cat "$WORK/KVER")
OUT=$WORK/out
COMPRESS=${COMPRESS:-gzip}
NESTED=0 FORCE=0
for a in "$@"; do
  case $a in --nested) NESTED=1 ;; --force) FORCE=1 ;; *) echo "usage: $0 [--nested] [--force]" >&2; exit 2 ;; esac
done
mkdir -p "$OUT"
DENO=$(find_deno) || { echo "build-initramfs: deno not found; run prepare.sh" >&2; exit 1; }

# ---------------------------------------------------------------- helpers
# copy_bin SRC [DST]: copy an ELF and every library ldd reports for it.
# ldd runs on the host, so binaries unpacked under $R resolve against the
# host's identical libraries.  ldd of a script fails: `|| true` (pipefail).
copy_bin() {
  local src=$1 dst=${2:-$1} lib
  install -D -m755 "$src" "$S$dst"
  copy_libs "$src"
}
copy_libs() {
  local lib
  { ldd "$1" 2>/dev/null || true; } | awk '/=>/ && $3 ~ /^\// {print $3} /^\t\// {print $1}' |
  while read -r lib; do
    [ -e "$S$lib" ] || install -D -m755 "$(readlink -f "$lib")" "$S$lib"
  done
}
make_layout() {   # Debian 12 is usr-merged; mirror it so ldd paths just work
  mkdir -p "$S"/{usr/bin,usr/sbin,usr/lib/x86_64-linux-gnu,usr/lib64,dev,proc,sys,tmp,run,etc,var,mnt,share,prj,deno-dir,root}
  ln -sfn usr/bin "$S/bin"; ln -sfn usr/sbin "$S/sbin"
  ln -sfn usr/lib "$S/lib"; ln -sfn usr/lib64 "$S/lib64"
  ln -sfn /run "$S/var/run"
}
copy_modules() {  # copy_modules "MOD...": modules + their deps into $S, then depmod
  local DEP=$R/lib/modules/$KVER/modules.dep need="" m line f
  for m in $1; do
    line=$(grep -E "(^|/)$m\.ko(\.[a-z]+)?:" "$DEP") || { echo "module $m not found" >&2; exit 1; }
    need="$need ${line%%:*} ${line#*:}"
  done
  for f in $(echo $need | tr ' ' '\n' | sort -u); do
    install -D -m644 "$R/lib/modules/$KVER/$f" "$S/usr/lib/modules/$KVER/$f"
  done
  cp "$R/lib/modules/$KVER"/modules.{order,builtin,builtin.modinfo} "$S/usr/lib/modules/$KVER/"
  busybox depmod -b "$S" "$KVER"
}
busybox_links() {  # applet symlinks, never shadowing a real binary
  local a d
  install -m755 /usr/bin/busybox "$S/usr/bin/busybox"
  for a in $(busybox --list-full); do
    case $a in
      sbin/*|usr/sbin/*) d=$S/usr/sbin/${a##*/} ;;
      *)                 d=$S/usr/bin/${a##*/} ;;
    esac
    [ -e "$d" ] || [ -L "$d" ] || ln -s /usr/bin/busybox "$d"
  done
}
pack() {          # pack DIR OUTFILE
  local dir=$1 out=$2
  case $COMPRESS in
    gzip) (cd "$dir" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet | gzip -6) > "$out.tmp" ;;
    zstd) (cd "$dir" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet | zstd -q -19 -T0) > "$out.tmp" ;;
    none) (cd "$dir" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) > "$out.tmp" ;;
  esac
  mv "$out.tmp" "$out"
  echo "build-initramfs: $(basename "$out"): $(du -h "$out" | cut -f1) compressed, $(du -sh "$dir" | cut -f1) unpacked"
}
# key NAME FILES...: hash of the inputs of an image
key_of() {
  { echo "$KVER $COMPRESS"; cat "$WORK/stamps/pkgs" "$WORK/stamps/rigtool" 2>/dev/null
    cat "$@"; dpkg-query -W sg3-utils qemu-system-x86 qemu-system-common busybox-static 2>/dev/null
    "$DENO" --version | head -1; } | sha256sum | cut -c1-16
}
fresh() {         # fresh IMAGE KEY: true if IMAGE exists and was built with KEY
  [ $FORCE = 0 ] && [ -s "$1" ] && [ -f "$1.key" ] && [ "$(cat "$1.key")" = "$2" ]
}

# ---------------------------------------------------------------- base image
KEY=$(key_of "$0" "$HERE/guest/init")
if fresh "$OUT/rig.cpio.gz" "$KEY"; then
  echo "build-initramfs: rig.cpio.gz up to date"
else
  S=$OUT/stage-base
  rm -rf "$S"; mkdir -p "$S"; make_layout
  # kernel modules (+ dependencies from modules.dep); target_core_rd is built
  # into target_core_mod
  copy_modules "configfs target_core_mod target_core_file target_core_iblock tcm_loop
                sd_mod sg virtio_pci virtio_console 9p 9pnet_virtio
                dm-mod dm-multipath dm-round-robin"
  # dmsetup: the multipath test builds its dm-multipath map without multipathd
  copy_bin /usr/sbin/dmsetup
  # sg3-utils (all ~80 tools share libsgutils2)
  for b in $(dpkg -L sg3-utils | grep -E '^/usr/bin/[^/]+$'); do copy_bin "$b"; done
  # the reference PR helper (Debian's qemu-pr-helper, no multipath)
  copy_bin /usr/bin/qemu-pr-helper
  # SELinux userland from the unpacked packages + coreutils runcon/chcon
  for b in /sbin/load_policy /usr/sbin/compute_av /usr/sbin/getenforce /usr/sbin/setenforce \
           /usr/sbin/getpidcon /usr/sbin/selinux_check_access /usr/sbin/selinuxenabled \
           /usr/sbin/getfilecon /usr/sbin/setfilecon /usr/sbin/policyvers /usr/sbin/avcstat; do
    copy_bin "$R$b" "${b/#\/sbin/\/usr\/sbin}"
  done
  copy_bin /usr/bin/runcon; copy_bin /usr/bin/chcon
  # AppArmor userland from the unpacked packages (apparmor_parser loads the
  # test profiles, aa-exec runs clients under them); libapparmor is not on the host
  for b in /sbin/apparmor_parser /usr/bin/aa-exec /usr/bin/aa-enabled /usr/sbin/aa-status; do
    install -D -m755 "$R$b" "$S${b/#\/sbin/\/usr\/sbin}"
  done
  install -D -m755 "$R/usr/lib/x86_64-linux-gnu/libapparmor.so.1.8.4" \
    "$S/usr/lib/x86_64-linux-gnu/libapparmor.so.1"
  mkdir -p "$S/etc/apparmor.d"
  cp -a "$R/etc/apparmor.d/abi" "$R/etc/apparmor.d/tunables" "$R/etc/apparmor.d/abstractions" "$S/etc/apparmor.d/"
  install -D -m644 "$R/etc/apparmor/parser.conf" "$S/etc/apparmor/parser.conf"
  install -D -m644 "$R/usr/share/apparmor-features/features" "$S/usr/share/apparmor-features/features"
  mkdir -p "$S/etc/selinux/default/policy" "$S/etc/selinux/default/contexts"
  cp "$R/etc/selinux/config" "$S/etc/selinux/config"
  cp "$R/etc/selinux/default/policy/policy.33" "$S/etc/selinux/default/policy/"
  find "$R/etc/selinux/default/contexts" -maxdepth 1 -type f -exec cp {} "$S/etc/selinux/default/contexts/" \;
  # deno runs from the 9p project share; it needs its shared libraries here.
  # libc and libselinux are also what the daemon dlopen()s through Deno FFI
  # (deno.json "permissions.daemon.ffi" names their /usr/lib paths).
  copy_libs "$DENO"
  # libc_malloc_debug.so.0: glibc's heap checking (LD_PRELOAD beside
  # GLIBC_TUNABLES=glibc.malloc.check=3) for the soak test's daemon.
  for l in libc.so.6 libselinux.so.1 libc_malloc_debug.so.0; do
    f=/usr/lib/x86_64-linux-gnu/$l
    [ -e "$S$f" ] || install -D -m755 "$(readlink -f "$f")" "$S$f"
  done
  # static reference client (qemu-pr-helper protocol, raw replies)
  install -m755 "$WORK/rigtool" "$S/usr/bin/rigtool"
  # minimal /etc
  echo 'root:x:0:0:root:/root:/bin/sh' > "$S/etc/passwd"
  echo 'root:x:0:' > "$S/etc/group"
  echo 'hosts: files' > "$S/etc/nsswitch.conf"
  echo '127.0.0.1 localhost' > "$S/etc/hosts"
  busybox_links   # last, so applets never shadow a real binary
  install -m755 "$HERE/guest/init" "$S/init"
  pack "$S" "$OUT/rig.cpio.gz"
  echo "$KEY" > "$OUT/rig.cpio.gz.key"
  rm -rf "$S"
fi

# ---------------------------------------------------------------- nested extra
if [ $NESTED = 1 ]; then
  KEY=$(key_of "$0" "$HERE/guest/nested-pr-init")
  if fresh "$OUT/nested.cpio.gz" "$KEY"; then
    echo "build-initramfs: nested.cpio.gz up to date"
  else
    S=$OUT/stage-nested
    rm -rf "$S"; mkdir -p "$S"; make_layout
    copy_bin /usr/bin/qemu-system-x86_64
    # TCG is a loadable module in Debian's qemu 7.2
    copy_bin /usr/lib/x86_64-linux-gnu/qemu/accel-tcg-x86_64.so
    mkdir -p "$S/usr/share/qemu" "$S/usr/share/seabios"
    for f in bios-256k.bin linuxboot_dma.bin linuxboot.bin kvmvapic.bin multiboot_dma.bin pvh.bin; do
      cp -L "/usr/share/qemu/$f" "$S/usr/share/qemu/" 2>/dev/null || true
    done
    # Debian's qemu searches /usr/share/qemu:/usr/share/seabios:/usr/lib/ipxe/qemu
    cp -L /usr/share/seabios/{bios-256k.bin,bios.bin,vgabios-stdvga.bin} "$S/usr/share/seabios/"
    mkdir -p "$S/nested"
    cp "$R/boot/vmlinuz-$KVER" "$S/nested/vmlinuz"
    # the nested guest: virtio-scsi + sg_persist; its /init runs the PR steps
    NS=$S; S=$OUT/stage-prguest
    rm -rf "$S"; mkdir -p "$S"; make_layout
    copy_modules "virtio_pci virtio_scsi sd_mod sg"
    for b in sg_persist sg_inq sg_raw; do copy_bin /usr/bin/$b; done
    busybox_links
    install -m755 "$HERE/guest/nested-pr-init" "$S/init"
    COMPRESS=gzip pack "$S" "$NS/nested/pr-guest.cpio.gz"
    rm -rf "$S"; S=$NS
    pack "$S" "$OUT/nested.cpio.gz"
    echo "$KEY" > "$OUT/nested.cpio.gz.key"
    rm -rf "$S"
  fi
fi
