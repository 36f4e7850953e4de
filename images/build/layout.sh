# shellcheck shell=bash
# The disk layout of the appliance image (sourced by build.sh and check.sh).
# GPT, 512-byte sectors, every partition 1 MiB aligned:
#   1 esp     EFI System            256 MiB  FAT32, label CLOUDSTEER
#   2 root-a  root-{x86-64,arm64}   640 MiB  squashfs (xz)
#   3 root-b  root-{x86-64,arm64}   640 MiB  empty until the first upgrade
#   (4 data: made on first boot by systemd-repart, grows to the end of the disk)
# The GUIDs and the FAT volume id are fixed (derived from the architecture), so
# that two builds of one commit give the same bytes.

ESP_MIB=256
SLOT_MIB=640
FIRST_MIB=1
ESP_TYPE=C12A7328-F81F-11D2-BA4B-00A0C93EC93B
# 1 MiB after root-b for the backup GPT; systemd-repart moves it when it grows data.
DISK_MIB=$((FIRST_MIB + ESP_MIB + SLOT_MIB + SLOT_MIB + 1))

# fixed_uuid NAME: a stable UUID (RFC 9562 version 8 layout) from the architecture and NAME.
fixed_uuid() {
	local h
	h=$(printf 'cloudsteer-image:%s:%s' "$ARCH" "$1" | sha256sum | cut -c1-32)
	printf '%s-%s-8%s-%x%s-%s\n' "${h:0:8}" "${h:8:4}" "${h:13:3}" $(((0x${h:16:1} & 0x3) | 0x8)) "${h:17:3}" "${h:20:12}" |
		tr '[:lower:]' '[:upper:]'
}
ESP_VOLID=$(printf 'cloudsteer-image:%s:esp-volid' "$ARCH" | sha256sum | cut -c1-8)

# make_esp DIR OUT: a FAT32 file system of ESP_MIB holding DIR, made without
# mounting (mkfs.vfat + mtools), files added in sorted order with their mtimes
# set to SOURCE_DATE_EPOCH.
make_esp() {
	local dir=$1 out=$2 p
	rm -f "$out"
	mkfs.vfat -F 32 -n CLOUDSTEER -i "$ESP_VOLID" --invariant -C "$out" $((ESP_MIB * 1024)) >/dev/null
	find "$dir" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
	export MTOOLS_SKIP_CHECK=1
	while IFS= read -r -d '' p; do
		p=${p#./}
		if [[ -d "$dir/$p" ]]; then
			mmd -i "$out" "::/$p"
		else
			mcopy -i "$out" -m -p "$dir/$p" "::/$p"
		fi
	done < <(cd "$dir" && find . -mindepth 1 -print0 | sort -z)
}

# make_disk IMG ESP_IMG ROOT_SQUASHFS: the GPT disk image, written with sfdisk
# and dd (no loop devices).
make_disk() {
	local img=$1 esp=$2 root=$3 s=2048
	local esp_start=$((FIRST_MIB * s)) esp_size=$((ESP_MIB * s)) slot=$((SLOT_MIB * s))
	local a_start=$((esp_start + esp_size))
	local b_start=$((a_start + slot))
	rm -f "$img"
	truncate -s "${DISK_MIB}M" "$img"
	sfdisk --quiet --no-reread --no-tell-kernel "$img" <<EOF
label: gpt
label-id: $(fixed_uuid disk)
unit: sectors
first-lba: 2048
sector-size: 512

start=$esp_start, size=$esp_size, type=$ESP_TYPE, uuid=$(fixed_uuid esp), name="esp"
start=$a_start, size=$slot, type=$ROOT_TYPE, uuid=$(fixed_uuid root-a), name="root-a"
start=$b_start, size=$slot, type=$ROOT_TYPE, uuid=$(fixed_uuid root-b), name="root-b"
EOF
	dd if="$esp" of="$img" bs=1M seek=$FIRST_MIB conv=notrunc,sparse status=none
	dd if="$root" of="$img" bs=1M seek=$((FIRST_MIB + ESP_MIB)) conv=notrunc,sparse status=none
}
