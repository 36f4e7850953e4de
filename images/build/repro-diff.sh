#!/usr/bin/env bash
# Compares two builds of the image and lists what differs:
#   images/build/repro-diff.sh A.img[.xz] B.img[.xz]
# Exits 0 when the two are byte for byte identical. Otherwise it compares the
# parts: the GPT, the ESP's files, the root squashfs (its superblock, then the
# listing of modes/owners/sizes and every file's content), and prints the files
# that differ, so the cause can be named. Exits 1 then.
set -euo pipefail
{
A_IN=${1:?usage: repro-diff.sh A.img[.xz] B.img[.xz]}
B_IN=${2:?usage: repro-diff.sh A.img[.xz] B.img[.xz]}
export MTOOLS_SKIP_CHECK=1 LC_ALL=C
T=$(mktemp -d /var/tmp/repro-diff.XXXXXX)
trap 'rm -rf "$T"' EXIT

if [[ "$A_IN" == *.xz && "$B_IN" == *.xz ]] && cmp -s "$A_IN" "$B_IN"; then
	echo "identical: $(sha256sum <"$A_IN" | cut -c1-64) (compressed images equal)"
	exit 0
fi
raw() { if [[ "$1" == *.xz ]]; then xz -dc "$1" >"$2"; else cp --sparse=always "$1" "$2"; fi; }
raw "$A_IN" "$T/a.img"
raw "$B_IN" "$T/b.img"
if cmp -s "$T/a.img" "$T/b.img"; then
	echo "raw images identical (sha256 $(sha256sum <"$T/a.img" | cut -c1-64)); only the xz streams differ"
	exit 1
fi
echo "raw images differ: $(cmp -l "$T/a.img" "$T/b.img" | wc -l) bytes"

part() { sfdisk -J "$1" | jq -r ".partitiontable.partitions[] | select(.name == \"$2\") | \"\(.start) \(.size)\""; }
for x in a b; do
	sfdisk -d "$T/$x.img" | grep -v '^device:' | sed "s|$T/$x.img||" >"$T/$x.gpt"
	read -r s n < <(part "$T/$x.img" esp)
	dd if="$T/$x.img" of="$T/$x.esp" bs=512 skip="$s" count="$n" status=none
	read -r s n < <(part "$T/$x.img" root-a)
	dd if="$T/$x.img" of="$T/$x.root" bs=512 skip="$s" count="$n" status=none
done
diff -u "$T/a.gpt" "$T/b.gpt" && echo "GPT: same" || echo "GPT: differs (above)"
dd if="$T/a.img" bs=1M count=1 status=none | cmp -s - <(dd if="$T/b.img" bs=1M count=1 status=none) &&
	echo "first MiB (protective MBR, GPT header and entries): same" || echo "first MiB: differs"

if cmp -s "$T/a.esp" "$T/b.esp"; then
	echo "ESP: same"
else
	echo "ESP: differs; its files:"
	for x in a b; do
		mkdir -p "$T/$x.espdir"
		mcopy -s -n -m -i "$T/$x.esp" ::/ "$T/$x.espdir/" 2>/dev/null
		mdir -/ -a -i "$T/$x.esp" :: >"$T/$x.esplist" 2>/dev/null || true
	done
	diff -rq "$T/a.espdir" "$T/b.espdir" | sed "s|$T/||g" || true
	diff "$T/a.esplist" "$T/b.esplist" | head -20 || true
fi

if cmp -s "$T/a.root" "$T/b.root"; then
	echo "root-a (squashfs): same"
else
	echo "root-a (squashfs): differs"
	diff <(unsquashfs -s "$T/a.root") <(unsquashfs -s "$T/b.root") | sed 's/^/  superblock: /' || true
	for x in a b; do
		unsquashfs -lln "$T/$x.root" | sed 's|squashfs-root||' >"$T/$x.ls" 2>/dev/null
		unsquashfs -q -n -d "$T/$x.tree" "$T/$x.root" >/dev/null 2>&1
	done
	diff "$T/a.ls" "$T/b.ls" | head -40 | sed 's/^/  listing: /' || true
	diff -rq --no-dereference "$T/a.tree" "$T/b.tree" 2>&1 | sed "s|$T/[ab].tree||g; s/^/  content: /" | head -60 || true
fi
exit 1
}
