#!/usr/bin/env bash
# Installs the Debian packages cloudsteer's build, tests and demo use (the
# browser tests: chromium, and a Japanese font for the screenshots), and
# any further packages named as arguments, when any is missing, then the
# browser tests' npm packages (e2e/browser, from its lockfile) when they are
# missing or stale. Needs root (apt-get). Quiet when nothing is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
pkgs=(clang llvm libbpf-dev linux-libc-dev make git gcc
	iproute2 nftables iputils-ping curl dnsutils
	squid-openssl apache2-utils ca-certificates
	chromium fonts-ipafont-gothic mmdebstrap systemd util-linux  # browser tests; the package test: a Debian root, systemd-analyze, setpriv
	qemu-system-x86 qemu-system-arm ovmf qemu-efi-aarch64 mtools udhcpc xz-utils squashfs-tools openssh-client  # the kernel compatibility test, the image boot test
	"$@")
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
# Node.js and npm by command, not by package: a machine's Node.js may come
# from elsewhere (NodeSource's nodejs bundles npm; Debian's npm package
# would then conflict with it).
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
if ((${#missing[@]})); then
	if [ "$(id -u)" != 0 ]; then
		echo "missing packages: ${missing[*]}; run as root to install them" >&2
		exit 1
	fi
	echo "installing: ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	# The squid package may start a Squid in the root namespace; the lab runs its own.
	service squid stop >/dev/null 2>&1 || true
fi

# The browser driver's npm packages (playwright-core, which drives the
# chromium above; it never downloads a browser of its own). Installed from
# the lockfile when node_modules is missing or was installed from another
# lockfile.
browser=e2e/browser
stamp=$browser/node_modules/.package-lock.sha256
want=$(sha256sum "$browser/package-lock.json" | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
	echo "installing: npm packages of $browser (npm ci)"
	(cd "$browser" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
	echo "$want" >"$stamp"
fi
