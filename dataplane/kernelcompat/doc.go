// Package kernelcompat holds the kernel compatibility test: cloudsteer's
// eBPF programs must pass the verifier of the kernels it ships on and
// supports, not only of the machine the tests run on. The test fetches
// Debian's stock amd64 kernels (scripts/fetch-kernels.sh: trixie's 6.12,
// the image's, with TCX; bookworm's 6.1, legacy clsact attach), boots each
// under qemu (TCG) with an initramfs whose /init is the probe command
// (./probe), and reads the probe's verdicts from the serial console.
package kernelcompat
