#!/usr/bin/env bash
# Installs the Debian packages cloudsteer's build, tests and demo use, and
# any further packages named as arguments, when any is missing. Needs root
# (apt-get).
set -euo pipefail
pkgs=(clang llvm libbpf-dev linux-libc-dev make git gcc
	iproute2 nftables iputils-ping curl dnsutils
	squid-openssl apache2-utils ca-certificates
	mmdebstrap systemd util-linux "$@")  # the package test: a Debian root, systemd-analyze, setpriv
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
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
