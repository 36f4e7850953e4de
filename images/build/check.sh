#!/usr/bin/env bash
# Build checks of an appliance image (run by build.sh before compressing, and
# by CI after `make image`):
#   images/build/check.sh IMAGE[.img|.img.xz] [ARCH [VERSION]]
# Checks the GPT (labels, types, GUIDs, sizes, 1 MiB alignment), the ESP (FAT
# label, boot loader, entry, kernel, initrd, router.conf), the root squashfs
# (fits its slot, file modes and owners, nothing world-writable, os-release,
# upgrade key, unit, system user) and that the image kernel's config has every
# option of kernel-config.txt. Prints each failure and exits 1 if any.
set -euo pipefail
{
HERE=$(cd "$(dirname "$0")" && pwd)
IMG_IN=${1:?usage: check.sh IMAGE[.img.xz] [ARCH [VERSION]]}
ARCH=${2:-}
VERSION=${3:-}
if [[ -z "$ARCH" ]]; then
	case "$IMG_IN" in *-amd64.img*) ARCH=amd64 ;; *-arm64.img*) ARCH=arm64 ;; *) echo "check.sh: give ARCH" >&2; exit 2 ;; esac
fi
if [[ -z "$VERSION" ]]; then
	VERSION=$(basename "$IMG_IN")
	VERSION=${VERSION#cloudsteer-}
	VERSION=${VERSION%-"$ARCH".img*}
fi
case "$ARCH" in
amd64) ROOT_TYPE=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709 EFI_NAME=BOOTX64.EFI CONSOLE=ttyS0 ;;
arm64) ROOT_TYPE=B921B045-1DF0-41C3-AF44-4C6F280D3FAE EFI_NAME=BOOTAA64.EFI CONSOLE=ttyAMA0 ;;
*) echo "check.sh: unknown architecture $ARCH" >&2; exit 2 ;;
esac
# shellcheck source=images/build/layout.sh
. "$HERE/layout.sh"
export MTOOLS_SKIP_CHECK=1 LC_ALL=C

T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
IMG=$IMG_IN
if [[ "$IMG_IN" == *.xz ]]; then
	IMG=$T/disk.img
	xz -dc "$IMG_IN" >"$IMG"
fi

FAILS=0
fail() { echo "FAIL: $*"; FAILS=$((FAILS + 1)); }
SEC=0
section() { SEC=$FAILS; }
# ok prints only when the section since the last `section` had no failure.
ok() { ((FAILS != SEC)) || echo "ok:   $*"; section; }

# ---- partition table ---------------------------------------------------------
section
sfdisk -J "$IMG" >"$T/pt.json" || { echo "FAIL: no partition table in $IMG_IN"; exit 1; }
[[ $(jq -r .partitiontable.label "$T/pt.json") == gpt ]] || fail "label is not gpt"
[[ $(jq -r .partitiontable.sectorsize "$T/pt.json") == 512 ]] || fail "sector size is not 512"
[[ $(jq -r .partitiontable.id "$T/pt.json") == "$(fixed_uuid disk)" ]] || fail "disk GUID is not the fixed one"
n=$(jq '.partitiontable.partitions | length' "$T/pt.json")
[[ $n == 3 ]] || fail "$n partitions, want 3 (esp, root-a, root-b; data is made on first boot)"
i=0
START_esp=0 START_root_a=0 START_root_b=0
next=$((FIRST_MIB * 2048))
for want in "esp $ESP_TYPE $ESP_MIB" "root-a $ROOT_TYPE $SLOT_MIB" "root-b $ROOT_TYPE $SLOT_MIB"; do
	read -r name type mib <<<"$want"
	p=$(jq -c ".partitiontable.partitions[$i] // empty" "$T/pt.json")
	i=$((i + 1))
	[[ -n "$p" ]] || { fail "partition $i ($name) missing"; continue; }
	got_name=$(jq -r .name <<<"$p")
	got_type=$(jq -r .type <<<"$p")
	start=$(jq -r .start <<<"$p")
	size=$(jq -r .size <<<"$p")
	uuid=$(jq -r .uuid <<<"$p")
	[[ "$got_name" == "$name" ]] || fail "partition $i is labelled '$got_name', want '$name'"
	[[ "${got_type^^}" == "$type" ]] || fail "partition $i ($name) type $got_type, want $type"
	[[ "$size" == $((mib * 2048)) ]] || fail "partition $i ($name) has $size sectors, want $((mib * 2048)) ($mib MiB)"
	((start % 2048 == 0)) || fail "partition $i ($name) starts at sector $start: not 1 MiB aligned"
	[[ "$start" == "$next" ]] || fail "partition $i ($name) starts at $start, want $next"
	[[ "$uuid" == "$(fixed_uuid "$name")" ]] || fail "partition $i ($name) GUID $uuid is not the fixed one"
	next=$((start + size))
	declare "START_${name//-/_}=$start"
done
ok "GPT: esp ${ESP_MIB} MiB, root-a/root-b ${SLOT_MIB} MiB, aligned, fixed GUIDs"

# ---- ESP ---------------------------------------------------------------------
E="$IMG@@$((START_esp * 512))"
label=$(mlabel -i "$E" -s :: 2>/dev/null | sed 's/^ Volume label is //; s/ *$//')
[[ "$label" == CLOUDSTEER ]] || fail "ESP volume label '$label', want CLOUDSTEER"
for f in "EFI/BOOT/$EFI_NAME" loader/loader.conf loader/entries/cloudsteer-a.conf a/vmlinuz a/initrd.img \
	cloudsteer/router.conf cloudsteer/README.txt; do
	mcopy -i "$E" -n "::/$f" "$T/esp-file" 2>/dev/null || { fail "ESP lacks /$f"; continue; }
	[[ -s "$T/esp-file" ]] || fail "ESP /$f is empty"
done
mcopy -i "$E" -n ::/loader/entries/cloudsteer-a.conf "$T/entry" 2>/dev/null || : >"$T/entry"
want_opts="root=PARTLABEL=root-a rootfstype=squashfs ro cloudsteer.slot=a console=tty0 console=$CONSOLE,115200"
for l in "title cloudsteer $VERSION (slot a)" "sort-key cloudsteer" "version $VERSION" \
	"linux /a/vmlinuz" "initrd /a/initrd.img" "options $want_opts"; do
	grep -qxF "$l" "$T/entry" || fail "boot entry lacks the line '$l'"
done
if mcopy -i "$E" -n ::/EFI/BOOT/$EFI_NAME "$T/boot.efi" 2>/dev/null; then
	[[ $(head -c2 "$T/boot.efi") == MZ ]] || fail "/EFI/BOOT/$EFI_NAME is not a PE image"
fi
if mcopy -i "$E" -n ::/a/vmlinuz "$T/vmlinuz" 2>/dev/null; then
	[[ $(head -c2 "$T/vmlinuz") == MZ ]] || fail "/a/vmlinuz is not an EFI-loadable PE image"
fi
ok "ESP: label, systemd-boot, entry a, kernel, initrd, router.conf"

# ---- root-a squashfs -----------------------------------------------------------
off=$((START_root_a * 512))
magic=$(dd if="$IMG" bs=1 skip=$off count=4 status=none)
[[ "$magic" == hsqs ]] || { fail "root-a does not start with a squashfs"; echo "$FAILS check(s) failed"; exit 1; }
# bytes_used: 8 bytes little-endian at offset 40 of the superblock.
used=$(dd if="$IMG" bs=1 skip=$((off + 40)) count=8 status=none | od -An -tu8 | tr -d ' ')
((used <= SLOT_MIB * 1024 * 1024)) || fail "root squashfs ($used bytes) exceeds the slot"
dd if="$IMG" of="$T/root.sqfs" bs=1M iflag=skip_bytes,count_bytes skip=$off count="$used" status=none
unsquashfs -s "$T/root.sqfs" | grep -q 'Compression xz' || fail "root squashfs is not xz-compressed"
unsquashfs -lln "$T/root.sqfs" >"$T/ls" 2>/dev/null
# columns: mode uid/gid size date time path [-> target]
mode_of() { awk -v p="squashfs-root$1" '$6 == p {print $1, $2; exit}' "$T/ls"; }
for want in "/usr/bin/cloudsteer -rwxr-xr-x 0/0" "/usr/lib/systemd/system/cloudsteer.service -rw-r--r-- 0/0" \
	"/usr/share/cloudsteer/upgrade.pub -rw-r--r-- 0/0" "/etc/shadow -rw-r----- 0/42" "/etc/passwd -rw-r--r-- 0/0" \
	"/usr/lib/os-release -rw-r--r-- 0/0"; do
	read -r path mode owner <<<"$want"
	got=$(mode_of "$path")
	[[ "$got" == "$mode $owner" ]] || fail "$path is '${got:-missing}', want '$mode $owner'"
done
# Nothing world-writable but symlinks and sticky directories (/tmp, /var/tmp).
ww=$(awk '$1 !~ /^[lcb]/ && substr($1,9,1) == "w" && !($1 ~ /^d/ && substr($1,10,1) == "t") {print $1, $6}' "$T/ls")
[[ -z "$ww" ]] || fail "world-writable in the root: $(echo "$ww" | head -20 | tr '\n' ' ')"
# Under /usr, /etc and /boot every file is owned by the root user (groups are
# the packages' own: shadow, dip, ...); /var has the packages' own owners.
nr=$(awk '$2 !~ /^0\// && $6 ~ /^squashfs-root\/(usr|etc|boot)\// {print $2, $6}' "$T/ls" | head -20)
[[ -z "$nr" ]] || fail "not owned by root: $(echo "$nr" | tr '\n' ' ')"
sqcat() { unsquashfs -cat "$T/root.sqfs" "$1" 2>/dev/null; }
sqcat usr/lib/os-release | grep -qx 'IMAGE_ID=cloudsteer' || fail "os-release lacks IMAGE_ID=cloudsteer"
sqcat usr/lib/os-release | grep -qx "IMAGE_VERSION=$VERSION" || fail "os-release lacks IMAGE_VERSION=$VERSION"
sqcat etc/passwd | grep -q '^cloudsteer:x:[0-9]*:[0-9]*:.*:/usr/sbin/nologin$' || fail "no cloudsteer system user in /etc/passwd"
[[ -n "$(sqcat usr/share/cloudsteer/upgrade.pub)" ]] || fail "/usr/share/cloudsteer/upgrade.pub is empty"
sqcat usr/share/cloudsteer/upgrade.pub | grep -q PRIVATE && fail "upgrade.pub holds a private key"
[[ -z "$(sqcat etc/machine-id)" ]] || fail "/etc/machine-id is not empty"
grep -q 'squashfs-root/etc/ssh/ssh_host_' "$T/ls" && fail "SSH host keys in the image (they must be made per device)"
grep -q 'squashfs-root/etc/systemd/system/multi-user.target.wants/cloudsteer.service' "$T/ls" || fail "cloudsteer.service is not enabled"
ok "root: squashfs xz $((used / 1024 / 1024)) MiB, modes, owners, os-release, user, key"

# ---- root-b --------------------------------------------------------------------
bz=$(dd if="$IMG" bs=1M skip=$((START_root_b / 2048)) count=1 status=none | tr -d '\0' | wc -c)
[[ $bz == 0 ]] || fail "root-b is not empty"

# ---- kernel config ---------------------------------------------------------------
cfg=$(awk '$6 ~ /^squashfs-root\/boot\/config-/ {sub("squashfs-root/", "", $6); print $6}' "$T/ls" | head -1)
if [[ -z "$cfg" ]]; then
	fail "no /boot/config-* in the root"
else
	sqcat "$cfg" >"$T/config"
	missing=()
	while read -r line; do
		line=${line%%#*}
		line=${line//[[:space:]]/}
		[[ -n "$line" ]] || continue
		found=0
		IFS='|' read -ra alts <<<"$line"
		for o in "${alts[@]}"; do
			grep -qE "^CONFIG_${o}=(y|m)$" "$T/config" && found=1
		done
		((found)) || missing+=("$line")
	done <"$HERE/kernel-config.txt"
	if ((${#missing[@]})); then
		fail "kernel ${cfg#boot/config-} lacks: ${missing[*]}"
	else
		ok "kernel ${cfg#boot/config-}: all $(grep -cvE '^[[:space:]]*(#|$)' "$HERE/kernel-config.txt") options of kernel-config.txt"
	fi
	# The modules cloudsteer and the boot need must survive the pruning:
	# each is a module file in the image or built into the kernel.
	kver=${cfg#boot/config-}
	awk -v d="squashfs-root/usr/lib/modules/$kver/kernel/" 'index($6, d) == 1 {n=$6; sub(".*/", "", n); sub("[.]ko.*", "", n); gsub("-", "_", n); print n}' "$T/ls" | sort -u >"$T/mods"
	sqcat "usr/lib/modules/$kver/modules.builtin" | sed 's|.*/||; s|[.]ko$||; s|-|_|g' | sort -u >"$T/builtin"
	for m in nf_tables nft_redir nft_tproxy nf_flow_table nf_flow_table_inet nft_flow_offload nft_ct nft_connlimit nft_limit \
		nft_reject nft_reject_inet nf_nat nft_masq nft_chain_nat nfnetlink_queue nft_queue veth sch_ingress cls_bpf pppoe \
		virtio_net e1000e igb igc ixgbe r8169 r8152 cdc_ether ax88179_178a squashfs vfat ext4 nvme ahci sd_mod virtio_blk virtio_scsi usb_storage; do
		grep -qx "$m" "$T/mods" "$T/builtin" || fail "module $m is neither in the image nor built into the kernel"
	done
	ok "modules: $(wc -l <"$T/mods") in the image, the router's all present"
fi

if ((FAILS)); then
	echo "check.sh: $FAILS check(s) failed for $IMG_IN"
	exit 1
fi
echo "check.sh: all checks passed for $IMG_IN"
exit 0
}
