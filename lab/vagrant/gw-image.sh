#!/usr/bin/env bash
# Makes the disk of the Vagrant lab's gateway VM from the appliance image
# (images/README.md), for `CLOUDSTEER_GW_IMAGE=1 vagrant up --provider=libvirt`
# (see the Vagrantfile): the image decompressed and grown to 4 GiB (room
# for the data partition the first boot makes), the lab's router.conf on
# its FAT boot partition (the same addresses as the namespace lab: WAN
# 10.20.0.1/24 via 10.20.0.2, LAN 10.10.0.1/24, the lab cloud proxy and
# DNS, the lab's tenant code), the NICs picked by MAC, and optionally an
# authorized_keys file (SSH as root on the LAN address), plus a copy of
# OVMF's variable store for the VM's UEFI variables.
#
#   sudo lab/vagrant/gw-image.sh images/out/cloudsteer-VERSION-amd64.img.xz [~/.ssh/id_ed25519.pub]
#
# Writes /var/lib/libvirt/images/cloudsteer-gw.img (DISK= to change; the
# Vagrantfile names it in libvirt's default pool) and
# /var/lib/libvirt/qemu/nvram/cloudsteer-gw_VARS.fd. Needs xz, sfdisk and
# mtools. Not run by CI.
set -euo pipefail

if [[ $# -lt 1 || $# -gt 2 ]]; then
	echo "usage: $0 IMAGE.img.xz [AUTHORIZED_KEYS]" >&2
	exit 2
fi
image=$1
keys=${2:-}
disk=${DISK:-/var/lib/libvirt/images/cloudsteer-gw.img}
vars=${VARS:-/var/lib/libvirt/qemu/nvram/cloudsteer-gw_VARS.fd}

xz -dc -- "$image" | dd of="$disk" bs=64K conv=sparse status=none
truncate -s '>4G' "$disk"
install -D -m 0600 /usr/share/OVMF/OVMF_VARS_4M.fd "$vars"

# The ESP's byte offset, from the GPT (partition name "esp").
start=$(sfdisk --dump "$disk" 2>/dev/null | sed -n 's/.*start= *\([0-9]*\),.*name="esp".*/\1/p')
if [[ -z $start ]]; then
	echo "$0: no partition named esp in $disk" >&2
	exit 1
fi
esp="$disk@@$((start * 512))"
export MTOOLS_SKIP_CHECK=1

conf=$(mktemp)
trap 'rm -f "$conf"' EXIT
chmod 0600 "$conf"
# The MACs are the Vagrantfile's (gw's private networks): NIC order does
# not matter then.
cat >"$conf" <<'CONF'
# written by lab/vagrant/gw-image.sh: the Vagrant lab's gateway
wan = 52:54:00:c5:00:01
lan = 52:54:00:c5:00:02
wan_mode = static
wan_address = 10.20.0.1/24
wan_gateway = 10.20.0.2
wan_dns = 198.51.100.53
lan_address = 10.10.0.1/24
cloud_proxy = http://198.51.100.10:8080
dns = 198.51.100.53
entitlement_code = 3315471d-b831-48ed-a621-17042a74a8e3
CONF
mdir -b -i "$esp" ::cloudsteer >/dev/null 2>&1 || mmd -i "$esp" ::cloudsteer
mcopy -o -i "$esp" "$conf" ::cloudsteer/router.conf
if [[ -n $keys ]]; then
	mcopy -o -i "$esp" "$keys" ::cloudsteer/authorized_keys
fi
echo "wrote $disk (router.conf${keys:+, authorized_keys}) and $vars"
