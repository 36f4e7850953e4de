#!/usr/bin/env bash
# Installs the Debian packages `make bench` compares cloudsteer with, when
# any is missing: redsocks (http-connect redirector), dnsperf (DNS load),
# dnsmasq-base and unbound (the DNS forwarders), squid-openssl (Squid in
# intercept mode with ssl_bump). Needs root (apt-get). The load generator,
# origin and cloud proxy of the benchmark are Go (cmd/cloudsteer-bench).
set -euo pipefail
pkgs=(redsocks dnsperf dnsmasq-base unbound squid-openssl nftables iproute2 openssl)
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
fi
# The packages may start daemons in the root namespace; the benchmark runs
# its own copies inside the lab's namespaces only.
for s in redsocks unbound squid dnsmasq; do
	service "$s" stop >/dev/null 2>&1 || true
done
