#!/usr/bin/env bash
# A quick sanity boot of an image under qemu (TCG, no network), not a test:
#   images/build/qemu-boot.sh IMAGE[.img|.img.xz] [TIMEOUT_SECONDS]
# Boots with the UEFI firmware (OVMF / AAVMF), logs the serial console to
# images/out/boot-ARCH.log, and stops as soon as the console shows a login
# prompt (or systemd's multi-user target), printing how long that took.
# Exits 1 when neither appears before the timeout. The image file itself is not
# written: the VM boots a sparse copy grown to DISK_SIZE (default 4G).
set -euo pipefail
{
IMG_IN=${1:?usage: qemu-boot.sh IMAGE [TIMEOUT]}
TIMEOUT=${2:-900}
case "$IMG_IN" in
*-arm64.img*) ARCH=arm64 ;;
*) ARCH=amd64 ;;
esac
HERE=$(cd "$(dirname "$0")" && pwd)
OUTDIR=$HERE/../out
mkdir -p "$OUTDIR"
LOG=$OUTDIR/boot-$ARCH.log
T=$(mktemp -d /var/tmp/qemu-boot.XXXXXX)
QPID=""
cleanup() {
	if [[ -n "$QPID" ]] && kill -0 "$QPID" 2>/dev/null; then
		kill "$QPID" 2>/dev/null || true
		wait "$QPID" 2>/dev/null || true
	fi
	rm -rf "$T"
}
trap cleanup EXIT
# A copy grown to DISK_SIZE: the data partition is made by systemd-repart on
# first boot in the space after the slots, and the image itself has none.
IMG=$T/disk.img
if [[ "$IMG_IN" == *.xz ]]; then
	xz -dc "$IMG_IN" >"$IMG"
else
	cp --sparse=always "$IMG_IN" "$IMG"
fi
truncate -s "${DISK_SIZE:-4G}" "$IMG"

if [[ $ARCH == amd64 ]]; then
	cmd=(qemu-system-x86_64 -accel tcg -m 1024 -nographic -bios /usr/share/ovmf/OVMF.fd)
else
	# AAVMF wants 64 MiB flash images: code read-only, variables a scratch copy.
	cp /usr/share/AAVMF/AAVMF_VARS.fd "$T/vars.fd"
	# shellcheck disable=SC2054 # the commas are qemu's
	cmd=(qemu-system-aarch64 -M virt -cpu cortex-a57 -accel tcg -m 1024 -nographic
		-drive if=pflash,format=raw,readonly=on,file=/usr/share/AAVMF/AAVMF_CODE.fd
		-drive "if=pflash,format=raw,file=$T/vars.fd")
fi
cmd+=(-drive "file=$IMG,format=raw,if=virtio" -nic none -serial mon:stdio)

start=$(date +%s.%N)
"${cmd[@]}" </dev/null >"$LOG" 2>&1 &
QPID=$!
echo "qemu-boot: $ARCH, pid $QPID, serial log $LOG"
marks=("Linux version" "Run /init" "Reached target.*[Ss]witch [Rr]oot" "Reached target.*[Mm]ulti-[Uu]ser" "login:")
declare -A seen=()
while :; do
	now=$(date +%s.%N)
	el=$(awk -v a="$start" -v b="$now" 'BEGIN {printf "%.0f", b - a}')
	for m in "${marks[@]}"; do
		[[ -n "${seen[$m]:-}" ]] && continue
		if grep -aqE "$m" "$LOG"; then
			seen[$m]=1
			echo "  ${el}s  $m"
		fi
	done
	if grep -aqE 'login:' "$LOG"; then
		echo "qemu-boot: login prompt after ${el}s"
		exit 0
	fi
	if ! kill -0 "$QPID" 2>/dev/null; then
		echo "qemu-boot: qemu ended after ${el}s; last lines:"; tail -n 30 "$LOG"; exit 1
	fi
	if ((el > TIMEOUT)); then
		echo "qemu-boot: no login prompt after ${TIMEOUT}s; last lines:"; tail -n 30 "$LOG" | tr -d '\r'; exit 1
	fi
	sleep 2
done
}
