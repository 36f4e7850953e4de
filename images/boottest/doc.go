// Package boottest boots the appliance image (images/out/
// cloudsteer-VERSION-ARCH.img.xz, or $CLOUDSTEER_IMAGE) under qemu with
// TCG in the namespace lab and checks it from real peers: the VM is the
// lab's gateway (lab.Options.VMGateway), its first NIC a tap bridged to
// the internet side (WAN), its second one bridged to the LAN client.
//
// The package's non-test files are the harness: Machine builds the qemu
// command line (OVMF or AAVMF with a per-run copy of the variable store,
// two virtio NICs on taps, the serial console to a file and a socket),
// Console follows the serial log, Timeline says where the time went, and
// WriteESP puts files on the image's boot partition with mtools (no
// mounts). The tests (boot_test.go) are privileged: as root with CI=true
// they fail, never skip, when they cannot run.
package boottest
