/**
 * `deno task deb`: build dist/prhelperd_<version>-1_<arch>.deb with dpkg-deb.
 *
 * Two layouts, chosen by the environment:
 * - DENORT_BIN set: /usr/bin/prhelperd is the `deno compile` output (see
 *   tools/compile.ts) with the "daemon" permission set baked in.
 * - otherwise (the default here: denort cannot be downloaded): the Deno
 *   runtime this project pins, at /usr/lib/prhelperd/deno, runs
 *   /usr/lib/prhelperd/prhelperd.js (`deno bundle` of main.ts) plus
 *   sgio_worker.js and fd_closer_worker.js (the SG_IO and fd closer Workers,
 *   each bundled separately because a Worker is loaded by URL), through the
 *   launcher /usr/bin/prhelperd, which passes the
 *   permission set "daemon" of deno.json as command-line flags.
 *
 * Usage: deno run -A tools/build_deb.ts [--no-lintian]
 *
 * @module
 */

import { compileBinary } from "./compile.ts";
import { v8FlagsArgument } from "./runtime_flags.ts";

const root = new URL("../", import.meta.url).pathname.replace(/\/$/, "");
const config = JSON.parse(await Deno.readTextFile(`${root}/deno.json`));
const version: string = config.version;
const debVersion = `${version}-1`;
const arch = Deno.build.arch === "aarch64" ? "arm64" : "amd64";
const LIBDIR = "/usr/lib/prhelperd";
const stage = `${root}/build/deb/prhelperd`;
const dist = `${root}/dist`;
const debFile = `${dist}/prhelperd_${debVersion}_${arch}.deb`;
/** The Worker modules (loaded by URL, so bundled each as a file of its own): [entry, file]. */
const WORKERS: readonly (readonly [string, string])[] = [
  ["src/sgio_worker.ts", "sgio_worker.js"],
  ["src/fd_closer_worker.ts", "fd_closer_worker.js"],
];

async function run(cmd: string, args: string[], options: { cwd?: string } = {}): Promise<string> {
  const out = await new Deno.Command(cmd, {
    args,
    cwd: options.cwd,
    stdout: "piped",
    stderr: "piped",
    env: { RUST_BACKTRACE: "0" },
  }).output();
  const stderr = new TextDecoder().decode(out.stderr);
  if (!out.success) throw new Error(`${cmd} ${args.join(" ")} failed:\n${stderr}`);
  return new TextDecoder().decode(out.stdout);
}

async function write(path: string, text: string | Uint8Array, mode = 0o644): Promise<void> {
  await Deno.mkdir(path.slice(0, path.lastIndexOf("/")), { recursive: true });
  if (typeof text === "string") await Deno.writeTextFile(path, text);
  else await Deno.writeFile(path, text);
  await Deno.chmod(path, mode);
}

async function copy(from: string, to: string, mode = 0o644): Promise<void> {
  await write(to, await Deno.readFile(from), mode);
}

async function gzipTo(from: Uint8Array, to: string): Promise<void> {
  const tmp = `${to}.in`;
  await write(tmp, from);
  await run("gzip", ["-9n", "-f", tmp]);
  await Deno.rename(`${tmp}.gz`, to);
}

/** Where the package installs the compiled SELinux policy module. */
export const SELINUX_MODULE = "/usr/share/selinux/packages/prhelperd.pp";
const SELINUX_DEVEL_MAKEFILE = "/usr/share/selinux/devel/Makefile";

/**
 * Compile packaging/selinux/prhelperd.{te,fc,if} into prhelperd.pp with the
 * reference policy's development Makefile (Debian: selinux-policy-dev), which
 * builds against the interfaces of the refpolicy it ships. Returns the .pp bytes.
 */
export async function buildSelinuxModule(): Promise<Uint8Array> {
  try {
    await Deno.stat(SELINUX_DEVEL_MAKEFILE);
  } catch {
    throw new Error(
      `${SELINUX_DEVEL_MAKEFILE} not found: the SELinux policy module needs ` +
        "selinux-policy-dev (apt-get install selinux-policy-dev)",
    );
  }
  const dir = await Deno.makeTempDir({ prefix: "prhelperd-selinux-" });
  try {
    for (const ext of ["te", "fc", "if"]) {
      await copy(`${root}/packaging/selinux/prhelperd.${ext}`, `${dir}/prhelperd.${ext}`);
    }
    await run("make", ["-f", SELINUX_DEVEL_MAKEFILE, "prhelperd.pp"], { cwd: dir });
    return await Deno.readFile(`${dir}/prhelperd.pp`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** The deno binary itself (not the npm wrapper script). */
export function denoBinary(): string {
  const real = Deno.realPathSync(Deno.execPath());
  return real;
}

/**
 * The permission set "daemon" of deno.json as `deno run` flags. Relative read
 * entries (the source tree) become `readDir`, where the bundle and the Worker
 * module are installed, or, if `readDir` is a function, what it makes of each
 * entry (tools/prhelperd: the checkout's own directories).
 */
export function permissionFlags(
  set: Record<string, unknown>,
  readDir: string | ((relative: string) => string),
): string[] {
  const flags: string[] = [];
  for (const [kind, value] of Object.entries(set)) {
    if (value === false || value === undefined) continue;
    if (value === true) {
      flags.push(`--allow-${kind}`);
      continue;
    }
    if (!Array.isArray(value)) throw new Error(`permission "${kind}": only true/false/lists`);
    let items = value.map(String);
    if (kind === "read" || kind === "write") {
      const rel = items.filter((p) => !p.startsWith("/"));
      items = items.filter((p) => p.startsWith("/"));
      if (rel.length > 0 && kind === "read") {
        items.push(...(typeof readDir === "string" ? [readDir] : rel.map(readDir)));
      }
    }
    if (items.length > 0) flags.push(`--allow-${kind}=${[...new Set(items)].join(",")}`);
  }
  return flags;
}

/**
 * The flags of the source-tree launcher tools/prhelperd: the same permission
 * set, given as flags and not as `-P=daemon` (Deno prints "Permissions in the
 * config file is an experimental feature" on every start that reads them from
 * deno.json), relative reads under `$root`, and the daemon's V8 flags.
 */
export function sourceLauncherFlags(permissions: Record<string, unknown>): string[] {
  const rel = (p: string) => `$root/${p.replace(/^\.\//, "")}`;
  return [...permissionFlags(permissions, rel), v8FlagsArgument()];
}

/**
 * Everything the launcher passes to `deno run`: the permission set "daemon"
 * (relative reads become `@LIBDIR@`) and the daemon's V8 flags.
 */
export function launcherFlags(permissions: Record<string, unknown>): string[] {
  return [...permissionFlags(permissions, "@LIBDIR@"), v8FlagsArgument()];
}

/**
 * The /usr/bin/prhelperd shell launcher for the runtime+bundle layout. It
 * finds the runtime relative to itself (../lib/prhelperd), so an unpacked
 * package (dpkg-deb -x) runs in place too; `@LIBDIR@` in `flags` stands for
 * that directory.
 */
export function launcherScript(flags: string[]): string {
  const quoted = flags.map((f) => `"${f.replaceAll("@LIBDIR@", "$lib")}"`);
  return `#!/bin/sh
# prhelperd launcher: runs the bundled daemon on the packaged Deno runtime with
# the permission set "daemon" (deno.json) given as flags. Generated by
# tools/build_deb.ts; see prhelperd(8).
set -e
self=$(readlink -f "$0")
lib=$(dirname "$(dirname "$self")")/lib/prhelperd
DENO_NO_UPDATE_CHECK=1
export DENO_NO_UPDATE_CHECK
exec "$lib/deno" run --no-config --no-prompt \\
  ${quoted.join(" \\\n  ")} \\
  "$lib/prhelperd.js" "$@"
`;
}

function controlFile(installedKb: number): string {
  return `Package: prhelperd
Version: ${debVersion}
Architecture: ${arch}
Maintainer: prhelperd developers <prhelperd@example.org>
Installed-Size: ${installedKb}
Depends: libc6 (>= 2.27), libgcc-s1, libselinux1, acl, systemd | systemd-standalone-sysusers
Suggests: libvirt-daemon-system, qemu-system-x86
Section: admin
Priority: optional
Homepage: https://example.org/prhelperd
Description: SCSI persistent reservation helper for QEMU
 prhelperd runs SCSI PERSISTENT RESERVE IN/OUT commands on behalf of QEMU's
 pr-manager-helper object, which guests cannot issue themselves. It speaks
 qemu-pr-helper's protocol and accepts its command line, so libvirt can use it
 as its managed helper (qemu.conf pr_helper) or through a shared,
 socket-activated systemd service that runs as an unprivileged user holding
 only CAP_SYS_RAWIO.
`;
}

// Maintainer scripts, modelled on what dh_installsysusers and
// dh_installsystemd generate.
// The SELinux module is loaded (and the files relabelled) only where SELinux
// is enabled, before the socket starts, so that systemd labels the socket and
// enters prhelperd_t; elsewhere the .pp just stays on disk.
// The AppArmor profile is loaded as dh_apparmor's postinst snippet loads one.
const POSTINST = `#!/bin/sh
set -e
if [ "$1" = "configure" ] || [ "$1" = "abort-upgrade" ] || [ "$1" = "abort-deconfigure" ] || [ "$1" = "abort-remove" ]; then
	if command -v selinuxenabled >/dev/null && selinuxenabled && command -v semodule >/dev/null; then
		semodule -i ${SELINUX_MODULE}
		restorecon -R /usr/bin/prhelperd /usr/lib/prhelperd || true
	fi
	systemd-sysusers \${DPKG_ROOT:+--root="$DPKG_ROOT"} prhelperd.conf
	# the multipath path devices that exist now get the prhelperd ACL (udev rule)
	if [ -z "$DPKG_ROOT" ] && [ -d /run/udev ] && command -v udevadm >/dev/null; then
		udevadm trigger --action=change --subsystem-match=block --property-match=DM_MULTIPATH_DEVICE_PATH=1 || true
	fi
	if [ -x /usr/sbin/apparmor_parser ] || [ -x /sbin/apparmor_parser ]; then
		if aa-enabled --quiet 2>/dev/null; then
			apparmor_parser -r -T -W /etc/apparmor.d/usr.bin.prhelperd || true
		fi
	fi
	if deb-systemd-helper --quiet was-enabled prhelperd.socket; then
		deb-systemd-helper enable prhelperd.socket >/dev/null || true
	else
		deb-systemd-helper update-state prhelperd.socket >/dev/null || true
	fi
	if [ -d /run/systemd/system ]; then
		systemctl --system daemon-reload >/dev/null || true
		deb-systemd-invoke start prhelperd.socket >/dev/null || true
	fi
fi
`;
const PRERM = `#!/bin/sh
set -e
if [ -d /run/systemd/system ] && [ "$1" = remove ]; then
	deb-systemd-invoke stop prhelperd.service prhelperd.socket >/dev/null || true
fi
`;
const POSTRM = `#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
	systemctl --system daemon-reload >/dev/null || true
fi
if [ "$1" = "remove" ] && [ -x "/usr/bin/deb-systemd-helper" ]; then
	deb-systemd-helper mask prhelperd.socket >/dev/null || true
fi
if [ "$1" = "remove" ] && command -v setfacl >/dev/null && getent passwd prhelperd >/dev/null; then
	# the udev rule is gone: take back what it granted on multipath path devices
	for dev in /dev/sd*; do
		[ -b "$dev" ] && setfacl -x u:prhelperd "$dev" 2>/dev/null || true
	done
fi
if [ "$1" = "purge" ]; then
	rm -f /etc/apparmor.d/disable/usr.bin.prhelperd /etc/apparmor.d/force-complain/usr.bin.prhelperd
fi
if [ "$1" = "purge" ] && [ -x "/usr/bin/deb-systemd-helper" ]; then
	deb-systemd-helper purge prhelperd.socket >/dev/null || true
	deb-systemd-helper unmask prhelperd.socket >/dev/null || true
fi
if [ "$1" = "remove" ] && command -v selinuxenabled >/dev/null && selinuxenabled && command -v semodule >/dev/null; then
	if semodule -l | grep -qx prhelperd; then semodule -r prhelperd || true; fi
fi
`;

const COPYRIGHT = `Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: prhelperd
Source: https://example.org/prhelperd

Files: *
Copyright: prhelperd developers
License: MIT

Files: usr/lib/prhelperd/deno
Copyright: 2018-2025 the Deno authors
License: MIT
Comment: The Deno runtime (${"npm @deno/linux-x64-glibc"}), shipped unmodified
 to run the bundled daemon. It embeds V8 (BSD-3-clause) and Rust crates under
 MIT/Apache-2.0 terms; see https://github.com/denoland/deno.

Files: usr/lib/prhelperd/prhelperd.js
Copyright: commander: TJ Holowaychuk; LogTape: Hong Minhee
License: MIT
Comment: The bundle includes the npm packages commander and @logtape/logtape.

License: MIT
 Permission is hereby granted, free of charge, to any person obtaining a copy
 of this software and associated documentation files (the "Software"), to deal
 in the Software without restriction, including without limitation the rights
 to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
 copies of the Software, and to permit persons to whom the Software is
 furnished to do so, subject to the following conditions:
 .
 The above copyright notice and this permission notice shall be included in
 all copies or substantial portions of the Software.
 .
 THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
 IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
 FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
 AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
 LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
 OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
 SOFTWARE.
`;

function changelog(): string {
  const date = new Date(Number(Deno.env.get("SOURCE_DATE_EPOCH") ?? "1735689600") * 1000);
  const rfc2822 = date.toUTCString().replace(/GMT$/, "+0000");
  return `prhelperd (${debVersion}) unstable; urgency=medium

  * Package built by tools/build_deb.ts.

 -- prhelperd developers <prhelperd@example.org>  ${rfc2822}
`;
}

async function duKb(dir: string): Promise<number> {
  const out = await run("du", ["-sk", "--apparent-size", dir]);
  return Number(out.split(/\s/)[0]);
}

/** Build the package; returns the .deb path. */
export async function buildDeb(options: { lintian: boolean }): Promise<string> {
  await Deno.remove(stage, { recursive: true }).catch(() => {});
  await Deno.mkdir(dist, { recursive: true });
  const compiled = Deno.env.get("DENORT_BIN") !== undefined;

  if (compiled) {
    const bin = await compileBinary(`${root}/build/prhelperd-compiled`);
    await copy(bin, `${stage}/usr/bin/prhelperd`, 0o755);
  } else {
    // Bundle the daemon and, separately, each Worker module it loads by URL.
    await Deno.mkdir(`${stage}${LIBDIR}`, { recursive: true });
    for (const [entry, out] of [["main.ts", "prhelperd.js"], ...WORKERS]) {
      await run(Deno.execPath(), [
        "bundle",
        "--quiet",
        "--platform",
        "deno",
        "-o",
        `${stage}${LIBDIR}/${out}`,
        entry,
      ], { cwd: root });
      await Deno.chmod(`${stage}${LIBDIR}/${out}`, 0o644);
    }
    // The bundle must load each Worker as NAME.js (src/executor.ts and
    // src/fd_closer.ts pick the name by the extension of their own URL); a
    // source-only URL would fail at the first use on an installed system.
    const bundle = await Deno.readTextFile(`${stage}${LIBDIR}/prhelperd.js`);
    for (const [entry, out] of WORKERS) {
      if (!bundle.includes(`"./${out}"`)) {
        const name = out.replace(/\.js$/, "");
        throw new Error(
          `the bundle does not load ./${out}: the module that starts ${entry} must build the ` +
            `Worker URL as new URL(import.meta.url.endsWith(".ts") ? "./${name}.ts" : ` +
            `"./${name}.js", import.meta.url)`,
        );
      }
    }
    await copy(denoBinary(), `${stage}${LIBDIR}/deno`, 0o755);
    const flags = launcherFlags(config.permissions.daemon);
    await write(`${stage}/usr/bin/prhelperd`, launcherScript(flags), 0o755);
  }

  // The Deno runtime (alone, or inside the compiled binary) is an upstream
  // build: it links its own copies of libraries (lcms2 among them) and has no RELRO.
  const runtimePath = compiled ? "usr/bin/prhelperd" : `${LIBDIR.slice(1)}/deno`;
  await write(
    `${stage}/usr/share/lintian/overrides/prhelperd`,
    `# ${runtimePath} is (or embeds) the upstream Deno runtime, shipped unmodified.\n` +
      `prhelperd: embedded-library lcms2 [${runtimePath}]\n` +
      `prhelperd: hardening-no-relro [${runtimePath}]\n`,
  );

  const unitDir = `${stage}/usr/lib/systemd/system`;
  await copy(`${root}/packaging/prhelperd.socket`, `${unitDir}/prhelperd.socket`);
  await copy(`${root}/packaging/prhelperd.service`, `${unitDir}/prhelperd.service`);
  await copy(`${root}/packaging/prhelperd.sysusers`, `${stage}/usr/lib/sysusers.d/prhelperd.conf`);
  await copy(
    `${root}/packaging/prhelperd-multipath.rules`,
    `${stage}/usr/lib/udev/rules.d/61-prhelperd-multipath.rules`,
  );
  await write(`${stage}${SELINUX_MODULE}`, await buildSelinuxModule());
  await gzipTo(
    await Deno.readFile(`${root}/packaging/prhelperd.8`),
    `${stage}/usr/share/man/man8/prhelperd.8.gz`,
  );
  // AppArmor: the daemon's own profile, and the rule that lets libvirt's
  // per-VM profiles reach the shared socket (docs/SECURITY.md)
  const conffiles = [
    "/etc/apparmor.d/usr.bin.prhelperd",
    "/etc/apparmor.d/abstractions/libvirt-qemu.d/prhelperd",
  ];
  await copy(`${root}/packaging/apparmor/usr.bin.prhelperd`, `${stage}${conffiles[0]}`);
  await copy(`${root}/packaging/apparmor/libvirt-qemu.d-prhelperd`, `${stage}${conffiles[1]}`);
  const doc = `${stage}/usr/share/doc/prhelperd`;
  await write(`${doc}/copyright`, COPYRIGHT);
  await gzipTo(new TextEncoder().encode(changelog()), `${doc}/changelog.Debian.gz`);
  for (
    const f of [
      "README.md",
      "docs/libvirt.md",
      "docs/systemd.md",
      "docs/packaging.md",
      "docs/SECURITY.md",
    ]
  ) {
    try {
      await copy(`${root}/${f}`, `${doc}/${f.split("/").pop()}`);
    } catch { /* optional document not written yet */ }
  }

  const installedKb = await duKb(`${stage}/usr`);
  const control = `${stage}/DEBIAN`;
  await write(`${control}/control`, controlFile(installedKb));
  await write(`${control}/conffiles`, conffiles.join("\n") + "\n");
  await write(`${control}/postinst`, POSTINST, 0o755);
  await write(`${control}/prerm`, PRERM, 0o755);
  await write(`${control}/postrm`, POSTRM, 0o755);
  const sums = await run("sh", [
    "-c",
    "find usr -type f | LC_ALL=C sort | xargs md5sum",
  ], { cwd: stage });
  await write(`${control}/md5sums`, sums);

  await run("dpkg-deb", ["--root-owner-group", "-Zxz", "--build", stage, debFile]);
  console.log(`built ${debFile} (${compiled ? "deno compile binary" : "Deno runtime + bundle"})`);
  if (options.lintian) await lintian(debFile);
  return debFile;
}

async function lintian(deb: string): Promise<void> {
  const have = await new Deno.Command("sh", { args: ["-c", "command -v lintian"], stdout: "null" })
    .output();
  if (!have.success) {
    console.log("lintian is not installed (apt-get install lintian); skipped");
    return;
  }
  const out = await new Deno.Command("lintian", {
    args: ["--fail-on", "error", deb],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  if (text.trim() !== "") console.log(text.trim());
  if (!out.success) throw new Error("lintian reported errors");
  console.log("lintian: no errors");
}

if (import.meta.main) {
  try {
    await buildDeb({ lintian: !Deno.args.includes("--no-lintian") });
  } catch (e) {
    console.error(`deb: ${(e as Error).message}`);
    Deno.exit(1);
  }
}
