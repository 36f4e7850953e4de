#!/usr/bin/env bash
# Builds the cloudsteer appliance image for one architecture:
#   images/build/build.sh amd64|arm64
# Output (images/out/): cloudsteer-VERSION-ARCH.img.xz, SHA256SUMS, and with the
# upgrade tool (cmd/cloudsteer-image) cloudsteer-VERSION-ARCH.upgrade.
# The layout it makes is the one of /images/README.md and the design contract
# (GPT: esp, root-a, root-b; data is made on first boot by systemd-repart).
#
# Environment:
#   VERSION            image version (default: 0.COMMITS.gHASH, sorts by commit count)
#   SOURCE_DATE_EPOCH  timestamps (default: the commit time of HEAD)
#   MIRROR             Debian mirror (default: the first URI of the machine's debian.sources)
#   SUITE              Debian suite (default: trixie)
#   CACHE              cache of .debs and root trees (default: /var/cache/cloudsteer-image)
#   ROOTFS_CACHE=0     do not reuse the cached mmdebstrap tree (the .debs are still reused)
#   UPGRADE_KEY        ed25519 private key (PEM) that signs the bundle; default
#                      images/out/keys/upgrade.key, made on first use
#   KEEP_WORK=1        keep images/out/work/ARCH (the root tree, squashfs, ESP)
#   OUT                output directory (default images/out)
# Needs root and the host tools of images/build/host-deps.sh.
set -euo pipefail
# (one brace group: bash reads it whole, so editing this file mid-build is safe)
{
ARCH=${1:?usage: build.sh amd64|arm64}
# shellcheck disable=SC2034 # ROOT_TYPE is used by layout.sh
case "$ARCH" in
amd64) EFI_ARCH=x64 EFI_NAME=BOOTX64.EFI ROOT_TYPE=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709 CONSOLE=ttyS0 GOARCH=amd64 ;;
arm64) EFI_ARCH=aa64 EFI_NAME=BOOTAA64.EFI ROOT_TYPE=B921B045-1DF0-41C3-AF44-4C6F280D3FAE CONSOLE=ttyAMA0 GOARCH=arm64 ;;
*) echo "build.sh: unknown architecture $ARCH (amd64, arm64)" >&2; exit 2 ;;
esac

HERE=$(cd "$(dirname "$0")" && pwd)
TOP=$(cd "$HERE/../.." && pwd)
cd "$TOP"
# shellcheck source=images/build/layout.sh
. "$HERE/layout.sh"

# systemd-boot sorts entries by version, newest first, and an upgrade must
# sort newer than what it replaces: a bare commit hash does not, so the
# default is 0.COMMITS.gHASH (COMMITS = commits up to HEAD).
if [[ -z "${VERSION:-}" ]]; then
	VERSION=0.$(git rev-list --count HEAD 2>/dev/null || echo 0).g$(git rev-parse --short HEAD 2>/dev/null || echo dev)
	git diff --quiet HEAD 2>/dev/null || VERSION=$VERSION.dirty
fi
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}
export SOURCE_DATE_EPOCH
SUITE=${SUITE:-trixie}
if [[ -z "${MIRROR:-}" ]]; then
	MIRROR=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
	MIRROR=${MIRROR:-http://deb.debian.org/debian}
fi
CACHE=${CACHE:-/var/cache/cloudsteer-image}
OUT=${OUT:-$TOP/images/out}
WORK=$OUT/work/$ARCH
ROOT=$WORK/root
IMG=$OUT/cloudsteer-$VERSION-$ARCH.img
export LC_ALL=C.UTF-8 TZ=UTC

[[ $(id -u) == 0 ]] || { echo "build.sh: needs root (mmdebstrap, chroot)" >&2; exit 1; }

# ---- step timing -------------------------------------------------------------
T0=$(date +%s)
TSTEP=$T0
STEPNAME=""
step() {
	local now
	now=$(date +%s)
	[[ -z "$STEPNAME" ]] || printf '== [%s] %-28s %4ds\n' "$ARCH" "$STEPNAME" $((now - TSTEP))
	STEPNAME=$1
	TSTEP=$now
	[[ "$1" == "done" ]] || echo "== [$ARCH] $1 ..."
}

# ---- cleanup of what this script mounted ------------------------------------
BINFMT_MOUNTED=0
BINFMT_REGISTERED=""
cleanup() {
	if [[ -n "$BINFMT_REGISTERED" && -e /proc/sys/fs/binfmt_misc/$BINFMT_REGISTERED ]]; then
		echo -1 >"/proc/sys/fs/binfmt_misc/$BINFMT_REGISTERED" || true
	fi
	if ((BINFMT_MOUNTED)); then umount /proc/sys/fs/binfmt_misc || true; fi
}
trap cleanup EXIT
trap "exit 130" INT TERM

# The host runs arm64 maintainer scripts through qemu-user-static; binfmt_misc
# is not mounted here by default, so mount it and register the interpreter for
# the build only (both undone on exit).
setup_binfmt() {
	[[ "$ARCH" != amd64 ]] || return 0
	local name=qemu-aarch64
	if [[ ! -e /proc/sys/fs/binfmt_misc/register ]]; then
		mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
		BINFMT_MOUNTED=1
	fi
	if [[ ! -e /proc/sys/fs/binfmt_misc/$name ]]; then
		[[ -x /usr/bin/qemu-aarch64-static ]] || { echo "build.sh: qemu-user-static missing (images/build/host-deps.sh)" >&2; exit 1; }
		# :name:type:offset:magic:mask:interpreter:flags; F = open the interpreter now (works in chroots).
		local line
		line=$(grep -v '^#' "/usr/lib/binfmt.d/$name.conf")
		echo "$line" >/proc/sys/fs/binfmt_misc/register
		BINFMT_REGISTERED=$name
	fi
}

# Runs a command inside the root tree with /proc, /sys and /dev, in a private
# mount namespace so that nothing stays mounted when it ends.
in_root() {
	unshare --mount --propagation private --fork -- /bin/sh -euc '
		r=$1; shift
		mount -t proc proc "$r/proc"
		mount -t sysfs sysfs "$r/sys"
		mount --rbind /dev "$r/dev"
		mount -t tmpfs tmpfs "$r/tmp"
		mount -t tmpfs tmpfs "$r/run"
		exec chroot "$r" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C.UTF-8 TZ=UTC \
			SOURCE_DATE_EPOCH="$SOURCE_DATE_EPOCH" "$@"' in_root "$ROOT" "$@"
}

echo "== [$ARCH] cloudsteer $VERSION, $SUITE from $MIRROR, SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH"
mkdir -p "$OUT" "$WORK" "$CACHE/$ARCH/debs"
setup_binfmt

# ---- 1. the Debian root tree (cached) ----------------------------------------
step "mmdebstrap"
mapfile -t PKGS < <(sed -e 's/#.*//' -e "s/ARCH/$ARCH/" -e '/^[[:space:]]*$/d' "$HERE/packages.txt")
INCLUDE=$(IFS=,; echo "${PKGS[*]}")
# What the tree depends on; the trees of other keys are removed so the cache
# does not grow without bound.
KEY=$(printf '%s\n' "$SUITE" "$MIRROR" "$ARCH" "$INCLUDE" "$(sed -n '/^MMDEBSTRAP_OPTS_BEGIN/,/^MMDEBSTRAP_OPTS_END/p' "$0")" | sha256sum | cut -c1-16)
TREE=$CACHE/$ARCH/rootfs-$KEY.tar
if [[ "${ROOTFS_CACHE:-1}" == 1 && -s "$TREE" ]]; then
	echo "   reusing $TREE"
else
	find "$CACHE/$ARCH" -maxdepth 1 \( -name 'rootfs-*.tar' -o -name 'partial-*.tar' \) -delete
	: MMDEBSTRAP_OPTS_BEGIN
	# Docs, man pages and locales are never installed (copyright files are kept).
	# update-initramfs is diverted to /bin/true while the packages install: the
	# kernel package's own initramfs (of every module) would be thrown away, and
	# under arm64 emulation it took more than 15 minutes; step 5 makes the real one.
	# The .debs are kept in $CACHE/ARCH/debs so that a rebuild downloads nothing.
	mmdebstrap --variant=essential --architectures="$ARCH" --include="$INCLUDE" \
		--dpkgopt='path-exclude=/usr/share/man/*' \
		--dpkgopt='path-exclude=/usr/share/info/*' \
		--dpkgopt='path-exclude=/usr/share/doc/*' \
		--dpkgopt='path-include=/usr/share/doc/*/copyright' \
		--dpkgopt='path-exclude=/usr/share/locale/*' \
		--dpkgopt='path-include=/usr/share/locale/locale.alias' \
		--dpkgopt='path-exclude=/usr/share/lintian/*' \
		--dpkgopt='path-exclude=/usr/share/bug/*' \
		--aptopt='APT::Install-Recommends "false"' \
		--essential-hook='chroot "$1" dpkg-divert --quiet --local --rename --divert /usr/sbin/update-initramfs.build --add /usr/sbin/update-initramfs' \
		--essential-hook='ln -sf /bin/true "$1/usr/sbin/update-initramfs"' \
		--customize-hook='rm -f "$1/usr/sbin/update-initramfs"' \
		--customize-hook='chroot "$1" dpkg-divert --quiet --local --rename --remove /usr/sbin/update-initramfs' \
		--setup-hook='mkdir -p "$1/var/cache/apt/archives"' \
		--setup-hook="sync-in $CACHE/$ARCH/debs /var/cache/apt/archives" \
		--customize-hook="sync-out /var/cache/apt/archives $CACHE/$ARCH/debs" \
		"$SUITE" "$CACHE/$ARCH/partial-$KEY.tar" "$MIRROR"
	: MMDEBSTRAP_OPTS_END
	rm -f "$CACHE/$ARCH/debs/lock"
	rm -rf "$CACHE/$ARCH/debs/partial"
	mv "$CACHE/$ARCH/partial-$KEY.tar" "$TREE"
fi

step "unpack root tree"
rm -rf "$ROOT"
mkdir -p "$ROOT"
tar -C "$ROOT" --numeric-owner -xpf "$TREE"
KVER=$(find "$ROOT/usr/lib/modules" -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -V | tail -n1)
echo "   kernel $KVER"

# ---- 2. cloudsteer and the overlay -------------------------------------------
step "go build cloudsteer"
if [[ -n "${CLOUDSTEER_BIN:-}" ]]; then
	# A prebuilt binary (e.g. of another branch, to try its overlay).
	echo "   using CLOUDSTEER_BIN=$CLOUDSTEER_BIN"
	cp "$CLOUDSTEER_BIN" "$WORK/cloudsteer"
else
	CGO_ENABLED=0 GOOS=linux GOARCH=$GOARCH go build -trimpath -buildvcs=false \
		-ldflags "-s -w -X main.version=$VERSION" -o "$WORK/cloudsteer" ./cmd/cloudsteer
fi

step "install cloudsteer + overlay"
install -m 0755 -o root -g root "$WORK/cloudsteer" "$ROOT/usr/bin/cloudsteer"
install -m 0644 -o root -g root packaging/cloudsteer.service "$ROOT/usr/lib/systemd/system/cloudsteer.service"
# The system user the unit runs as (made now: the root is read-only later).
mkdir -p "$ROOT/usr/lib/sysusers.d"
cat >"$ROOT/usr/lib/sysusers.d/cloudsteer.conf" <<'EOF'
u cloudsteer - "cloudsteer gateway" /var/lib/cloudsteer /usr/sbin/nologin
EOF
chmod 0644 "$ROOT/usr/lib/sysusers.d/cloudsteer.conf"
in_root systemd-sysusers
# The overlay tree of the appliance (images/rootfs/); owned by root, modes as committed.
OVERLAY=${ROOTFS_OVERLAY:-images/rootfs}
if [[ -d "$OVERLAY" ]]; then
	echo "   overlay $OVERLAY: $(find "$OVERLAY" -mindepth 1 ! -name .keep | wc -l) entries"
	tar -C "$OVERLAY" --exclude=./.keep --sort=name --owner=0 --group=0 --numeric-owner -cf - . |
		tar -C "$ROOT" --no-overwrite-dir -xpf -
fi
# The public key upgrades are verified with. With the upgrade tool in the tree
# its keygen makes the pair (its formats); before that, openssl's ed25519 PEM.
mkdir -p "$OUT/keys"
chmod 0700 "$OUT/keys"
KEYFILE=${UPGRADE_KEY:-$OUT/keys/upgrade.key}
PUBFILE=${KEYFILE%.key}.pub
if [[ -d cmd/cloudsteer-image ]]; then
	go build -trimpath -o "$WORK/cloudsteer-image" ./cmd/cloudsteer-image
fi
if [[ ! -s "$KEYFILE" ]]; then
	if [[ -n "${UPGRADE_KEY:-}" ]]; then echo "build.sh: UPGRADE_KEY=$UPGRADE_KEY does not exist" >&2; exit 1; fi
	echo "   no upgrade key: making $KEYFILE (0600)"
	if [[ -x "$WORK/cloudsteer-image" ]]; then
		"$WORK/cloudsteer-image" keygen --out "$OUT/keys"
	else
		(umask 077 && openssl genpkey -algorithm ed25519 -out "$KEYFILE")
		openssl pkey -in "$KEYFILE" -pubout -out "$PUBFILE"
	fi
fi
chmod 0600 "$KEYFILE"
[[ -s "$PUBFILE" ]] || openssl pkey -in "$KEYFILE" -pubout -out "$PUBFILE"
mkdir -p "$ROOT/usr/share/cloudsteer"
install -m 0644 -o root -g root "$PUBFILE" "$ROOT/usr/share/cloudsteer/upgrade.pub"

# ---- 3. system configuration for a read-only root ---------------------------
step "configure root"
sed -i '/^IMAGE_ID=/d; /^IMAGE_VERSION=/d' "$ROOT/usr/lib/os-release"
printf 'IMAGE_ID=cloudsteer\nIMAGE_VERSION=%s\n' "$VERSION" >>"$ROOT/usr/lib/os-release"
echo cloudsteer >"$ROOT/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tcloudsteer\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' >"$ROOT/etc/hosts"
# Empty machine-id: systemd makes a transient one on the read-only root.
: >"$ROOT/etc/machine-id"
rm -f "$ROOT/var/lib/dbus/machine-id"
# Host keys are per device (the appliance makes them on /var): none in the image.
rm -f "$ROOT"/etc/ssh/ssh_host_*
# sshd is off by default: when the overlay gates ssh.service on the admin's
# key on the ESP (a ConditionPathExists drop-in) Debian's enablement stays,
# else it is disabled.
if ! grep -qs '^ConditionPathExists=' "$ROOT"/usr/lib/systemd/system/ssh.service.d/*.conf; then
	in_root systemctl disable ssh.service ssh.socket >/dev/null 2>&1 || true
	rm -f "$ROOT"/etc/systemd/system/sshd.service
fi
# The overlay enables its own units (symlinks under /usr/lib/systemd/system).
in_root systemctl enable cloudsteer.service systemd-networkd.service systemd-resolved.service systemd-timesyncd.service
# The ESP at /efi and the data partition at /var are mount units of the
# overlay (efi.mount, var.mount); without them (an overlay-less build) the
# ESP is mounted through fstab. /tmp is systemd's tmp.mount (tmpfs).
if [[ ! -e "$ROOT/usr/lib/systemd/system/efi.mount" ]]; then
	cat >"$ROOT/etc/fstab" <<'EOF'
# cloudsteer appliance: the root (squashfs) is read-only.
PARTLABEL=esp   /efi  vfat  umask=0077,noatime,nofail,x-systemd.device-timeout=30s  0 2
EOF
fi
mkdir -p "$ROOT/efi"

# ---- 4. kernel modules: what a router needs ---------------------------------
step "prune kernel modules"
M=$ROOT/usr/lib/modules/$KVER/kernel
before=$(du -sm "$M" | cut -f1)
# Kept whole: networking (netfilter, sched, bridge, vlan, ppp, wireguard,
# ipv6, ...), crypto, lib, and the file systems named below. Kept in drivers/:
# the NIC, storage, USB, virtio and console drivers listed in modules-keep.txt.
prune_modules() {
	local keep=$HERE/modules-keep.txt dep=$M/../modules.dep
	local t
	t=$(mktemp -d)
	[[ -s "$dep" ]] || { echo "build.sh: no modules.dep in the kernel package" >&2; exit 1; }
	sed -e 's/#.*//' -e '/^[[:space:]]*$/d' -e 's/[[:space:]]*$//' "$keep" |
		awk -v a="$ARCH" -F: 'NF==1 {print "kernel/" $1} NF==2 && $1==a {print "kernel/" $2}' >"$t/prefixes"
	# modules.dep (depmod's, of the whole kernel package) lists each module's
	# dependencies transitively: what a kept module needs is kept too.
	awk -F': *' 'NR==FNR {p[++n]=$0; next}
		{for (i=1;i<=n;i++) if (index($1,p[i])==1) {print $1; m=split($2,d," "); for (j=1;j<=m;j++) print d[j] " dep"; break}}' \
		"$t/prefixes" "$dep" >"$t/kept.raw"
	awk '{print $1}' "$t/kept.raw" | sort -u >"$t/kept"
	awk '$2 == "dep" {print $1}' "$t/kept.raw" | sort -u | comm -23 - <(awk 'NF==1' "$t/kept.raw" | sort -u) >"$t/bydep"
	sed 's/:.*//' "$dep" | sort -u >"$t/all"
	comm -23 "$t/all" "$t/kept" >"$t/drop"
	(cd "$M/.." && xargs -r rm -f <"$t/drop")
	echo "   kept $(wc -l <"$t/kept") of $(wc -l <"$t/all") modules ($(wc -l <"$t/bydep") only as dependencies:" \
		"$(sed 's|.*/||; s|\.ko.*||' "$t/bydep" | tr '\n' ' '))"
	rm -rf "$t"
}
prune_modules
find "$M" -depth -type d -empty -delete
in_root depmod -a "$KVER"
echo "   modules: ${before} MB -> $(du -sm "$M" | cut -f1) MB"
# No firmware blobs are installed (none are in main for these NICs: r8169 runs
# without its optional firmware patch).

# ---- 5. initramfs -------------------------------------------------------------
step "initramfs"
cat >"$ROOT/etc/initramfs-tools/conf.d/cloudsteer.conf" <<'EOF'
MODULES=most
COMPRESS=zstd
EOF
cat >"$ROOT/etc/initramfs-tools/modules" <<'EOF'
# root=PARTLABEL=root-a rootfstype=squashfs: the file system and the disks
squashfs
virtio_pci
virtio_blk
virtio_scsi
sd_mod
nvme
ahci
usb_storage
uas
mmc_block
EOF
# No boot loader hooks in the image: the build writes the ESP itself, and
# upgrades write whole slots.
rm -f "$ROOT"/etc/initramfs/post-update.d/systemd-boot "$ROOT"/etc/kernel/postinst.d/zz-systemd-boot \
	"$ROOT"/etc/kernel/postrm.d/zz-systemd-boot
rm -f "$ROOT"/boot/initrd.img-*
in_root update-initramfs -c -k "$KVER" >/dev/null
in_root lsinitramfs "/boot/initrd.img-$KVER" >"$WORK/initrd.list"
for m in squashfs virtio_blk virtio_scsi nvme ahci sd_mod; do
	grep -q "/$m\.ko" "$WORK/initrd.list" ||
		{ echo "build.sh: initramfs lacks $m.ko" >&2; exit 1; }
done
cp "$ROOT/boot/vmlinuz-$KVER" "$WORK/vmlinuz"
cp "$ROOT/boot/initrd.img-$KVER" "$WORK/initrd.img"
if [[ "$ARCH" == arm64 ]] && gzip -t "$WORK/vmlinuz" 2>/dev/null; then
	# systemd-boot loads a PE image: Debian's arm64 vmlinuz is a gzip of one.
	gzip -dc "$WORK/vmlinuz" >"$WORK/vmlinuz.pe" && mv "$WORK/vmlinuz.pe" "$WORK/vmlinuz"
fi
cp "$ROOT/usr/lib/systemd/boot/efi/systemd-boot$EFI_ARCH.efi" "$WORK/$EFI_NAME"
echo "   vmlinuz $(du -k "$WORK/vmlinuz" | cut -f1) KiB, initrd $(du -k "$WORK/initrd.img" | cut -f1) KiB"

# ---- 6. trim what a read-only appliance does not use --------------------------
step "trim root"
# The kernel and initrd live on the ESP; the config stays for the build check.
rm -f "$ROOT"/boot/vmlinuz-* "$ROOT"/boot/initrd.img-* "$ROOT"/boot/System.map-* "$ROOT"/vmlinuz* "$ROOT"/initrd.img*
rm -rf "$ROOT"/usr/share/man/* "$ROOT"/usr/share/info/* "$ROOT"/usr/share/lintian "$ROOT"/usr/share/bug
find "$ROOT/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} + 2>/dev/null || true
find "$ROOT/usr/share/doc" -type f ! -name copyright -delete 2>/dev/null || true
find "$ROOT/usr/share/doc" -depth -type d -empty -delete 2>/dev/null || true
# Run-time state and logs of the build.
rm -rf "$ROOT"/var/cache/* "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/log/* "$ROOT"/tmp/* "$ROOT"/run/* \
	"$ROOT"/var/lib/systemd/random-seed "$ROOT"/var/lib/systemd/credential.secret \
	"$ROOT"/etc/initramfs-tools/conf.d/resume "$ROOT"/var/lib/initramfs-tools/* \
	"$ROOT"/var/lib/dpkg/*-old "$ROOT"/etc/*- "$ROOT"/etc/.pwd.lock
# /dev is devtmpfs at run time: no device nodes in the image.
find "$ROOT/dev" -mindepth 1 -delete
# /var is the data partition; keep the mount point and what the units expect.
mkdir -p "$ROOT/var/lib/cloudsteer" "$ROOT/var/log" "$ROOT/var/cache" "$ROOT/var/tmp"
chmod 1777 "$ROOT/var/tmp"

# ---- 7. the read-only root -------------------------------------------------------
step "squashfs"
rm -f "$WORK/root.squashfs"
# SOURCE_DATE_EPOCH (exported) sets the mkfs time and every inode time.
mksquashfs "$ROOT" "$WORK/root.squashfs" -comp xz -b 1M -Xdict-size 100% -noappend -quiet \
	-processors 2 >/dev/null
SQ=$(stat -c %s "$WORK/root.squashfs")
echo "   root.squashfs $((SQ / 1024 / 1024)) MiB (slot $SLOT_MIB MiB)"
((SQ <= SLOT_MIB * 1024 * 1024)) || { echo "build.sh: root.squashfs does not fit the $SLOT_MIB MiB slot" >&2; exit 1; }

# ---- 8. the ESP -------------------------------------------------------------------
step "esp"
ESPDIR=$WORK/esp
rm -rf "$ESPDIR"
mkdir -p "$ESPDIR/EFI/BOOT" "$ESPDIR/loader/entries" "$ESPDIR/a" "$ESPDIR/cloudsteer"
cp "$WORK/$EFI_NAME" "$ESPDIR/EFI/BOOT/$EFI_NAME"
cp "$WORK/vmlinuz" "$ESPDIR/a/vmlinuz"
cp "$WORK/initrd.img" "$ESPDIR/a/initrd.img"
# No "default": systemd-boot boots the first entry in its order (newest
# version first, entries with a spent boot counter last).
cat >"$ESPDIR/loader/loader.conf" <<'EOF'
timeout 3
editor no
console-mode keep
EOF
cat >"$ESPDIR/loader/entries/cloudsteer-a.conf" <<EOF
title cloudsteer $VERSION (slot a)
sort-key cloudsteer
version $VERSION
linux /a/vmlinuz
initrd /a/initrd.img
options root=PARTLABEL=root-a rootfstype=squashfs ro cloudsteer.slot=a console=tty0 console=$CONSOLE,115200
EOF
# router.conf is the appliance's commented example (the overlay's
# /usr/share/cloudsteer/router.conf.example); README.txt says what the files are.
if [[ -f "$ROOT/usr/share/cloudsteer/router.conf.example" ]]; then
	cp "$ROOT/usr/share/cloudsteer/router.conf.example" "$ESPDIR/cloudsteer/router.conf"
else
	echo "   warning: no /usr/share/cloudsteer/router.conf.example in the overlay: a placeholder router.conf"
	cat >"$ESPDIR/cloudsteer/router.conf" <<'EOF'
# cloudsteer router settings, read at every boot. Lines starting with # are comments.
# (placeholder of the image build: the appliance overlay supplies the real example)
EOF
fi
if [[ -f "$ROOT/usr/share/cloudsteer/esp-README.txt" ]]; then
	cp "$ROOT/usr/share/cloudsteer/esp-README.txt" "$ESPDIR/cloudsteer/README.txt"
else
	sed 's/$/\r/' >"$ESPDIR/cloudsteer/README.txt" <<EOF
cloudsteer $VERSION ($ARCH) - the boot partition of the cloudsteer router

cloudsteer/router.conf      the router's settings (NIC roles, WAN mode, LAN address,
                            entitlement code, cloud proxy). Edit it with any text
                            editor before the first boot; it is read at every boot.
cloudsteer/authorized_keys  (optional) SSH public keys: SSH is off without this file.
EFI/, loader/, a/, b/       the boot loader and the two system slots: do not edit.
EOF
fi
rm -f "$WORK/esp.img"
make_esp "$ESPDIR" "$WORK/esp.img"

# ---- 9. the disk image --------------------------------------------------------------
step "gpt + assemble"
make_disk "$IMG" "$WORK/esp.img" "$WORK/root.squashfs"
sfdisk -d "$IMG" | sed 's/^/   /'

step "build check"
"$HERE/check.sh" "$IMG" "$ARCH" "$VERSION"

step "xz"
rm -f "$IMG.xz"
# The content is compressed already (squashfs xz, kernel, zstd initrd): a
# light preset gives the same size as -6 in a fraction of the time; the rest
# is zeros.
xz -T2 -1 --keep --force "$IMG"
XZ=$(stat -c %s "$IMG.xz")
echo "   $(basename "$IMG.xz") $((XZ / 1024 / 1024)) MiB ($XZ bytes)"
((XZ <= 150 * 1024 * 1024)) || { echo "build.sh: $IMG.xz is over 150 MB" >&2; exit 1; }

step "upgrade bundle"
if [[ -d cmd/cloudsteer-image ]]; then
	"$WORK/cloudsteer-image" bundle --key "$KEYFILE" --version "$VERSION" --arch "$ARCH" \
		--root "$WORK/root.squashfs" --kernel "$WORK/vmlinuz" --initrd "$WORK/initrd.img" \
		--out "$OUT/cloudsteer-$VERSION-$ARCH.upgrade"
else
	echo "   skipped: cmd/cloudsteer-image is not in this tree (the upgrade part writes it)"
fi

step "checksums"
# One file for the outputs of this version (both architectures once both are built).
(
	cd "$OUT"
	shopt -s nullglob
	sha256sum -- "cloudsteer-$VERSION"-*.img.xz "cloudsteer-$VERSION"-*.upgrade >SHA256SUMS
	cat SHA256SUMS
)
rm -f "$IMG"
[[ "${KEEP_WORK:-1}" == 1 ]] || rm -rf "$WORK"
step "done"
echo "== [$ARCH] total $(($(date +%s) - T0))s: $IMG.xz"
exit 0
}
