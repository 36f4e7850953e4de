#!/usr/bin/env bash
# Installs the Debian packages `make bench` compares cloudsteer with, when
# any is missing: redsocks (http-connect redirector), dnsperf (DNS load),
# dnsmasq-base and unbound (the DNS forwarders), squid-openssl (Squid in
# intercept mode with ssl_bump). Needs root (apt-get). The load generator,
# origin and cloud proxy of the benchmark are Go (cmd/cloudsteer-bench).
set -euo pipefail
"$(dirname "$0")"/install-deps.sh redsocks dnsperf dnsmasq-base unbound openssl
# The packages may start daemons in the root namespace; the benchmark runs
# its own copies inside the lab's namespaces only.
for s in redsocks unbound squid dnsmasq; do
	service "$s" stop >/dev/null 2>&1 || true
done
