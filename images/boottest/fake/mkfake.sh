#!/usr/bin/env bash
# mkfake.sh OUT.img.xz: builds a tiny stand-in for the appliance image, for
# developing the boot test's harness before the real image exists (and for
# `BOOTTEST_FAKE=1 go test`): the same GPT/ESP/systemd-boot layout (ESP
# labelled CLOUDSTEER with /loader/entries/cloudsteer-a.conf, /a/vmlinuz,
# /a/initrd.img, /cloudsteer/router.conf), but the "root" is a busybox
# initramfs that brings up the WAN NIC (10.20.0.1/24), the LAN NIC
# (192.168.77.1/24) with a DHCP server and an HTTP server, and prints
# markers on the serial console. Needs no root: apt-get
# download, dpkg-deb, sfdisk, mkfs.vfat, mtools, xz (cpio: busybox).
set -euo pipefail
out=${1:?usage: mkfake.sh OUT.img.xz}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
kpkg=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image/{print $2; exit}')
apt-get download -q "$kpkg" systemd-boot-efi busybox-static >/dev/null 2>&1
for d in ./*.deb; do dpkg-deb -x "$d" x; done
kver=$(ls x/lib/modules)
mods=x/lib/modules/$kver/kernel

mkdir -p ir/bin ir/lib/modules ir/proc ir/sys ir/dev ir/run ir/etc ir/var/lib/misc ir/www
cp x/bin/busybox ir/bin/busybox
for m in drivers/virtio/virtio.ko drivers/virtio/virtio_ring.ko \
	drivers/virtio/virtio_pci_modern_dev.ko drivers/virtio/virtio_pci_legacy_dev.ko \
	drivers/virtio/virtio_pci.ko net/core/failover.ko drivers/net/net_failover.ko \
	drivers/net/virtio_net.ko; do
	[ -f "$mods/$m" ] && cp "$mods/$m" ir/lib/modules/
done
echo "fake cloudsteer LAN page" >ir/www/index.html
cat >ir/etc/udhcpd.conf <<'CONF'
start 192.168.77.100
end 192.168.77.150
interface eth1
lease_file /var/lib/misc/udhcpd.leases
opt router 192.168.77.1
opt dns 192.168.77.1
opt subnet 255.255.255.0
opt lease 3600
CONF
cat >ir/init <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs dev /dev
echo "fake: init reached"
for m in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci failover net_failover virtio_net; do
	[ -f /lib/modules/$m.ko ] && insmod /lib/modules/$m.ko
done
i=0; while [ ! -e /sys/class/net/eth1 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
ip link set lo up; ip link set eth0 up; ip link set eth1 up
ip addr add 10.20.0.1/24 dev eth0; ip route add default via 10.20.0.2
ip addr add 192.168.77.1/24 dev eth1
touch /var/lib/misc/udhcpd.leases
udhcpd /etc/udhcpd.conf
httpd -p 192.168.77.1:80 -h /www
echo "fake: healthy"
ip -br addr
while :; do sleep 3600; done
INIT
chmod 755 ir/init
(cd ir && find . | ../x/bin/busybox cpio -o -H newc 2>/dev/null | gzip -1) >initrd.img

img=disk.img
truncate -s 80M "$img"
sfdisk -q "$img" <<'PT'
label: gpt
start=2048, size=131072, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=esp
size=16384, type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, name=root-a
PT
truncate -s 64M esp.fat
mkfs.vfat -F 32 -n CLOUDSTEER esp.fat >/dev/null
export MTOOLS_SKIP_CHECK=1
mmd -i esp.fat ::/EFI ::/EFI/BOOT ::/loader ::/loader/entries ::/a ::/cloudsteer
mcopy -i esp.fat x/usr/lib/systemd/boot/efi/systemd-bootx64.efi ::/EFI/BOOT/BOOTX64.EFI
printf 'timeout 0\ndefault cloudsteer-*\n' >loader.conf
printf 'title fake cloudsteer (slot a)\nsort-key cloudsteer\nversion fake\nlinux /a/vmlinuz\ninitrd /a/initrd.img\noptions console=ttyS0,115200 panic=-1\n' >entry.conf
printf '# fake router.conf\n' >router.conf
mcopy -i esp.fat loader.conf ::/loader/loader.conf
mcopy -i esp.fat entry.conf ::/loader/entries/cloudsteer-a.conf
mcopy -i esp.fat "x/boot/vmlinuz-$kver" ::/a/vmlinuz
mcopy -i esp.fat initrd.img ::/a/initrd.img
mcopy -i esp.fat router.conf ::/cloudsteer/router.conf
dd if=esp.fat of="$img" bs=1M seek=1 conv=notrunc status=none
xz -T1 -1 -c "$img" >"$out"
