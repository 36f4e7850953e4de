#!/usr/bin/env bash
# Installs the Debian packages `make image` needs on the build host (as root;
# skips what is already there). qemu-system-* and the UEFI firmware are only
# for the sanity boot and the boot test.
set -euo pipefail

pkgs=(
	mmdebstrap            # the root file system from Debian packages
	squashfs-tools        # mksquashfs (xz)
	dosfstools            # mkfs.vfat for the ESP
	mtools                # mcopy/mmd: fill the ESP without mounting it
	fdisk                 # sfdisk: the GPT
	xz-utils              # the .img.xz
	openssl               # ed25519 upgrade key when none is given
	jq                    # check.sh reads sfdisk --json
	qemu-user-static      # arm64 maintainer scripts on an amd64 host (binfmt_misc)
	arch-test             # mmdebstrap checks the foreign architecture runs
	debian-archive-keyring
	ovmf                  # x86_64 UEFI firmware (sanity boot)
	qemu-efi-aarch64      # arm64 UEFI firmware (sanity boot)
	qemu-system-x86
	qemu-system-arm
)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
	echo "host-deps: installing ${missing[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
