#!/usr/bin/env bash
# Fetches Debian's stock amd64 kernels that cloudsteer's eBPF programs must
# load on, for the kernel compatibility test (dataplane/kernelcompat):
# trixie's (6.12, TCX) and bookworm's (6.1, legacy clsact attach). Uses the
# machine's Debian mirror (the URI of /etc/apt/sources.list.d/debian.sources
# or $DEBIAN_MIRROR) with a private apt state, so the system's sources stay
# as they are. Prints one "SUITE VERSION PATH-TO-VMLINUZ" line per kernel.
# Cached under $KERNEL_CACHE (default /var/cache/cloudsteer-kernels).
set -euo pipefail
cache=${KERNEL_CACHE:-/var/cache/cloudsteer-kernels}
mirror=${DEBIAN_MIRROR:-$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)}
mirror=${mirror:-http://deb.debian.org/debian}
mkdir -p "$cache"
state=$(mktemp -d)
trap 'rm -rf "$state"' EXIT
mkdir -p "$state/lists/partial" "$state/archives/partial" "$state/etc"
for suite in trixie bookworm; do
	cat >"$state/etc/sources.list" <<SRC
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $suite main
SRC
	apt=(apt-get -q -o Dir::Etc::sourcelist="$state/etc/sources.list" -o Dir::Etc::sourceparts=/dev/null
		-o Dir::State::Lists="$state/lists" -o Dir::Cache::Archives="$state/archives"
		-o Dir::Cache::pkgcache="" -o Dir::Cache::srcpkgcache="" -o APT::Architecture=amd64 -o APT::Sandbox::User=root)
	"${apt[@]}" update >/dev/null
	# The metapackage names the versioned image package.
	pkg=$("${apt[@]/apt-get/apt-cache}" depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
	[ -n "$pkg" ] || { echo "fetch-kernels: no kernel package in $suite" >&2; exit 1; }
	ver=${pkg#linux-image-}
	out="$cache/$suite-$ver"
	if [ ! -s "$out/vmlinuz" ]; then
		(cd "$state/archives" && "${apt[@]}" download "$pkg" >/dev/null)
		rm -rf "$out.tmp" && mkdir -p "$out.tmp"
		dpkg-deb -x "$state/archives/${pkg}_"*.deb "$out.tmp/root"
		cp "$out.tmp"/root/boot/vmlinuz-* "$out.tmp/vmlinuz"
		cp "$out.tmp"/root/boot/config-* "$out.tmp/config"
		rm -rf "$out.tmp/root" "$out"
		mv "$out.tmp" "$out"
	fi
	echo "$suite $ver $out/vmlinuz"
	rm -rf "$state/lists"/* && mkdir -p "$state/lists/partial"
done
