package boottest

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"unicode/utf16"
)

// Firmware is a UEFI firmware: the read-only code and the variable store
// template a run copies (boot counting and the boot loader write EFI
// variables).
type Firmware struct{ Code, Vars string }

// Firmwares are the Debian packages' UEFI builds: ovmf for amd64,
// qemu-efi-aarch64 (AAVMF) for arm64.
var Firmwares = map[string]Firmware{
	"amd64": {Code: "/usr/share/OVMF/OVMF_CODE_4M.fd", Vars: "/usr/share/OVMF/OVMF_VARS_4M.fd"},
	"arm64": {Code: "/usr/share/AAVMF/AAVMF_CODE.fd", Vars: "/usr/share/AAVMF/AAVMF_VARS.fd"},
}

// QemuBinary is the system emulator for each architecture.
var QemuBinary = map[string]string{"amd64": "qemu-system-x86_64", "arm64": "qemu-system-aarch64"}

// Machine is one VM run: a scratch copy of the image as its disk, a
// writable copy of the firmware's variable store, two virtio NICs on tap
// devices (the first the WAN, the second the LAN) and nothing else on the
// network, the serial console logged to SerialLog and reachable on
// SerialSocket.
type Machine struct {
	Arch   string // "amd64" or "arm64"
	Disk   string // raw disk image (written by the VM)
	Dir    string // the run's directory: variable store, serial log and socket
	MemMiB int    // default 1024
	// CPUs defaults to 1: with two vCPUs (multi-threaded TCG) a boot
	// of Debian's 6.12 kernel died once in five with "Oops: int3" in
	// sched_clock_cpu (a stale translation of code the kernel had just
	// patched with text_poke: a cross-vCPU race of qemu 7.2's TCG).
	CPUs int
	// WANTap and LANTap are tap devices in the namespace qemu runs in.
	WANTap, LANTap string
	// WANMAC and LANMAC are the NICs' addresses.
	WANMAC, LANMAC string
}

// Default NIC addresses (locally administered).
const (
	DefaultWANMAC = "52:54:00:c5:00:01"
	DefaultLANMAC = "52:54:00:c5:00:02"
)

// SerialLog is the file the serial console is logged to.
func (m Machine) SerialLog() string { return filepath.Join(m.Dir, "serial.log") }

// SerialSocket is the unix socket the serial console is served on (one
// client at a time; the log gets everything either way).
func (m Machine) SerialSocket() string { return filepath.Join(m.Dir, "serial.sock") }

// Vars is the run's copy of the firmware variable store.
func (m Machine) Vars() string { return filepath.Join(m.Dir, "efivars.fd") }

// Prepare copies the firmware's variable store for this run (once: a
// reboot of the same machine keeps its variables).
func (m Machine) Prepare() error {
	fw, ok := Firmwares[m.Arch]
	if !ok {
		return fmt.Errorf("prepare vm: unknown arch %q", m.Arch)
	}
	if _, err := os.Stat(m.Vars()); err == nil {
		return nil
	}
	b, err := os.ReadFile(fw.Vars)
	if err != nil {
		return fmt.Errorf("prepare vm: read firmware variables: %w", err)
	}
	if err := os.WriteFile(m.Vars(), b, 0o600); err != nil {
		return fmt.Errorf("prepare vm: copy firmware variables: %w", err)
	}
	return nil
}

// Command is the qemu command line: TCG only (never KVM), UEFI, the disk
// on virtio-blk and first in the firmware's boot order, the two NICs on
// fixed PCI slots so the guest sees the WAN first, without option ROMs
// (no network boot attempts: they cost the firmware phase PXE timeouts),
// a virtio RNG (no boot stalls for entropy), no display and no other
// devices (-nodefaults), no user-mode networking.
func (m Machine) Command() ([]string, error) {
	fw, ok := Firmwares[m.Arch]
	qemu := QemuBinary[m.Arch]
	if !ok || qemu == "" {
		return nil, fmt.Errorf("vm command: unknown arch %q", m.Arch)
	}
	mem, cpus := m.MemMiB, m.CPUs
	if mem == 0 {
		mem = 1024
	}
	if cpus == 0 {
		cpus = 1
	}
	wanMAC, lanMAC := m.WANMAC, m.LANMAC
	if wanMAC == "" {
		wanMAC = DefaultWANMAC
	}
	if lanMAC == "" {
		lanMAC = DefaultLANMAC
	}
	args := []string{qemu, "-accel", "tcg"}
	switch m.Arch {
	case "amd64":
		args = append(args, "-machine", "q35", "-cpu", "max")
	case "arm64":
		// cortex-a72 (an ARMv8.0 core): under TCG cheaper than "max",
		// which also emulates SVE, MTE and pointer authentication.
		// $BOOTTEST_ARM64_CPU overrides it (e.g. max,pauth-impdef=on).
		cpu := "cortex-a72"
		if c := os.Getenv("BOOTTEST_ARM64_CPU"); c != "" {
			cpu = c
		}
		args = append(args, "-machine", "virt", "-cpu", cpu)
	}
	args = append(args,
		"-m", strconv.Itoa(mem), "-smp", strconv.Itoa(cpus),
		"-nodefaults", "-display", "none", "-no-user-config",
		"-drive", "if=pflash,format=raw,unit=0,readonly=on,file="+fw.Code,
		"-drive", "if=pflash,format=raw,unit=1,file="+m.Vars(),
		"-netdev", "tap,id=wan,ifname="+m.WANTap+",script=no,downscript=no",
		"-device", "virtio-net-pci,netdev=wan,mac="+wanMAC+",addr=0x3,romfile=",
		"-netdev", "tap,id=lan,ifname="+m.LANTap+",script=no,downscript=no",
		"-device", "virtio-net-pci,netdev=lan,mac="+lanMAC+",addr=0x4,romfile=",
		"-drive", "if=none,id=disk0,format=raw,cache=unsafe,file="+m.Disk,
		"-device", "virtio-blk-pci,drive=disk0,addr=0x5,bootindex=0",
		"-device", "virtio-rng-pci,addr=0x6",
		"-chardev", "socket,id=ser0,path="+m.SerialSocket()+",server=on,wait=off,logfile="+m.SerialLog()+",logappend=on",
		"-serial", "chardev:ser0",
	)
	return args, nil
}

// Decompress writes the xz image src to dst as a sparse file (runs of
// zeros become holes: the image's empty slot costs nothing) and then
// grows dst to at least size bytes (room for the data partition the first
// boot creates).
func Decompress(ctx context.Context, src, dst string, size int64) error {
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("decompress image: %w", err)
	}
	defer out.Close()
	// A raw image (no .xz) is copied as it is: a build's intermediate.
	prog := []string{"xz", "-dc", "--", src}
	if !strings.HasSuffix(src, ".xz") {
		prog = []string{"cat", "--", src}
	}
	cmd := exec.CommandContext(ctx, prog[0], prog[1:]...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	r, err := cmd.StdoutPipe()
	if err != nil {
		return fmt.Errorf("decompress image: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("decompress image: %w", err)
	}
	n, cerr := sparseCopy(out, r)
	werr := cmd.Wait()
	if cerr != nil {
		return fmt.Errorf("decompress image: %w", cerr)
	}
	if werr != nil {
		return fmt.Errorf("decompress image: %s: %w: %s", prog[0], werr, strings.TrimSpace(stderr.String()))
	}
	if err := out.Truncate(max(n, size)); err != nil {
		return fmt.Errorf("decompress image: %w", err)
	}
	return out.Close()
}

// sparseCopy copies r to w, seeking over blocks that are all zero, and
// returns the bytes copied (the caller truncates to that length).
func sparseCopy(w *os.File, r io.Reader) (int64, error) {
	const block = 64 << 10
	buf := make([]byte, block)
	zero := make([]byte, block)
	var off int64
	for {
		n, err := io.ReadFull(r, buf)
		if n > 0 {
			if bytes.Equal(buf[:n], zero[:n]) {
				if _, err := w.Seek(int64(n), io.SeekCurrent); err != nil {
					return off, err
				}
			} else if _, err := w.Write(buf[:n]); err != nil {
				return off, err
			}
			off += int64(n)
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return off, nil
		}
		if err != nil {
			return off, err
		}
	}
}

// Partition is one GPT entry.
type Partition struct {
	Name             string
	FirstLBA, EndLBA uint64 // EndLBA is inclusive
}

// Offset is the partition's byte offset (512-byte sectors).
func (p Partition) Offset() int64 { return int64(p.FirstLBA) * 512 }

// ReadGPT reads the primary GPT of a raw disk image with 512-byte sectors.
func ReadGPT(path string) ([]Partition, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read gpt: %w", err)
	}
	defer f.Close()
	hdr := make([]byte, 92)
	if _, err := f.ReadAt(hdr, 512); err != nil {
		return nil, fmt.Errorf("read gpt header: %w", err)
	}
	if string(hdr[:8]) != "EFI PART" {
		return nil, errors.New("read gpt: no GPT header at LBA 1")
	}
	entriesLBA := binary.LittleEndian.Uint64(hdr[72:])
	count := binary.LittleEndian.Uint32(hdr[80:])
	size := binary.LittleEndian.Uint32(hdr[84:])
	if size < 128 || count > 1024 {
		return nil, fmt.Errorf("read gpt: odd entry table (%d entries of %d bytes)", count, size)
	}
	tab := make([]byte, int(count)*int(size))
	if _, err := f.ReadAt(tab, int64(entriesLBA)*512); err != nil {
		return nil, fmt.Errorf("read gpt entries: %w", err)
	}
	var parts []Partition
	for i := 0; i < int(count); i++ {
		e := tab[i*int(size) : (i+1)*int(size)]
		if bytes.Equal(e[:16], make([]byte, 16)) {
			continue
		}
		u := make([]uint16, 36)
		for j := range u {
			u[j] = binary.LittleEndian.Uint16(e[56+2*j:])
		}
		name := string(utf16.Decode(u))
		name = strings.TrimRight(name, "\x00")
		parts = append(parts, Partition{Name: name, FirstLBA: binary.LittleEndian.Uint64(e[32:]), EndLBA: binary.LittleEndian.Uint64(e[40:])})
	}
	return parts, nil
}

// FindPartition returns the partition with that GPT name (PARTLABEL).
func FindPartition(path, name string) (Partition, error) {
	parts, err := ReadGPT(path)
	if err != nil {
		return Partition{}, err
	}
	for _, p := range parts {
		if p.Name == name {
			return p, nil
		}
	}
	return Partition{}, fmt.Errorf("find partition %q in %s: not there", name, path)
}

// ESPFile is a file to put on the ESP: its path there (like
// "/cloudsteer/router.conf"), its content.
type ESPFile struct {
	Path string
	Data []byte
}

// WriteESP writes files onto the FAT ESP (GPT name "esp") of the raw disk
// image with mtools (mcopy -i IMAGE@@OFFSET), without mounting anything,
// creating their directories. A file's content goes through a 0600 file
// in tmp (it may hold the entitlement code).
func WriteESP(ctx context.Context, disk, tmp string, files []ESPFile) error {
	esp, err := FindPartition(disk, "esp")
	if err != nil {
		return fmt.Errorf("write esp: %w", err)
	}
	img := fmt.Sprintf("%s@@%d", disk, esp.Offset())
	env := append(os.Environ(), "MTOOLS_SKIP_CHECK=1")
	mtool := func(args ...string) ([]byte, error) {
		cmd := exec.CommandContext(ctx, args[0], args[1:]...)
		cmd.Env = env
		return cmd.CombinedOutput()
	}
	for i, f := range files {
		dir := filepath.Dir(f.Path)
		if dir != "/" {
			// mmd fails on a directory that exists: look first.
			if _, err := mtool("mdir", "-b", "-i", img, "::"+dir); err != nil {
				if out, err := mtool("mmd", "-D", "s", "-i", img, "::"+dir); err != nil {
					return fmt.Errorf("write esp: mmd %s: %w: %s", dir, err, bytes.TrimSpace(out))
				}
			}
		}
		src := filepath.Join(tmp, fmt.Sprintf("esp-file-%d", i))
		if err := os.WriteFile(src, f.Data, 0o600); err != nil {
			return fmt.Errorf("write esp: %w", err)
		}
		out, err := mtool("mcopy", "-o", "-i", img, src, "::"+f.Path)
		os.Remove(src)
		if err != nil {
			return fmt.Errorf("write esp: mcopy %s: %w: %s", f.Path, err, bytes.TrimSpace(out))
		}
	}
	return nil
}

// ReadESP reads a file from the image's ESP (mtools' mtype).
func ReadESP(ctx context.Context, disk, path string) ([]byte, error) {
	esp, err := FindPartition(disk, "esp")
	if err != nil {
		return nil, fmt.Errorf("read esp: %w", err)
	}
	cmd := exec.CommandContext(ctx, "mcopy", "-i", fmt.Sprintf("%s@@%d", disk, esp.Offset()), "::"+path, "-")
	cmd.Env = append(os.Environ(), "MTOOLS_SKIP_CHECK=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("read esp %s: %w: %s", path, err, bytes.TrimSpace(stderr.Bytes()))
	}
	return out, nil
}
