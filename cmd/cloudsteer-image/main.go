// Command cloudsteer-image is the image build's signing tool: it makes the
// upgrade key pair, writes signed upgrade bundles
// (controlplane/upgrade's format) and verifies them.
//
//	cloudsteer-image keygen --out DIR
//	cloudsteer-image bundle --key KEY --version V --arch A --root R --kernel K --initrd I --out FILE
//	cloudsteer-image verify --pub PUB FILE
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/cloudsteer/cloudsteer/controlplane/upgrade"
)

const usage = `usage: cloudsteer-image <command> [flags]

commands:
  keygen --out DIR     make DIR/upgrade.key (0600; keep it secret, never commit it) and
                       DIR/upgrade.pub (goes into the image as /usr/share/cloudsteer/upgrade.pub)
  bundle --key KEY --version V --arch amd64|arm64 --root ROOT.squashfs --kernel VMLINUZ
         --initrd INITRD --out FILE
                       write a signed upgrade bundle (member times from SOURCE_DATE_EPOCH)
  verify --pub PUB FILE
                       check a bundle's signature and every file's size and sha256

exit status: 0 ok, 1 failure (the bundle does not verify), 2 usage error
`

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "keygen":
		return keygen(args[1:], stdout, stderr)
	case "bundle":
		return bundle(args[1:], stdout, stderr)
	case "verify":
		return verify(args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "cloudsteer-image: unknown command %q\n%s", args[0], usage)
	return 2
}

func flags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("cloudsteer-image "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

func fail(stderr io.Writer, err error) int {
	fmt.Fprintln(stderr, "cloudsteer-image:", err)
	return 1
}

func keygen(args []string, stdout, stderr io.Writer) int {
	fs := flags("keygen", stderr)
	out := fs.String("out", "", "directory for upgrade.key and upgrade.pub")
	if err := fs.Parse(args); err != nil || *out == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: cloudsteer-image keygen --out DIR")
		return 2
	}
	if _, err := upgrade.GenerateKey(*out); err != nil {
		return fail(stderr, err)
	}
	fmt.Fprintf(stdout, "wrote %s (secret, 0600) and %s\n", filepath.Join(*out, upgrade.PrivateKeyFile), filepath.Join(*out, upgrade.PublicKeyFile))
	return 0
}

func bundle(args []string, stdout, stderr io.Writer) int {
	fs := flags("bundle", stderr)
	key := fs.String("key", "", "the private key (upgrade.key)")
	version := fs.String("version", "", "the image version")
	arch := fs.String("arch", "", "amd64 or arm64")
	root := fs.String("root", "", "the root squashfs")
	kernel := fs.String("kernel", "", "the kernel (vmlinuz)")
	initrd := fs.String("initrd", "", "the initramfs")
	out := fs.String("out", "", "the bundle to write")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: cloudsteer-image bundle --key KEY --version V --arch A --root R --kernel K --initrd I --out FILE")
		return 2
	}
	for name, v := range map[string]string{"key": *key, "version": *version, "arch": *arch, "root": *root, "kernel": *kernel, "initrd": *initrd, "out": *out} {
		if v == "" {
			fmt.Fprintf(stderr, "cloudsteer-image bundle: --%s is required\n", name)
			return 2
		}
	}
	priv, err := upgrade.LoadPrivateKey(*key)
	if err != nil {
		return fail(stderr, err)
	}
	opts := upgrade.WriteOptions{Version: *version, Arch: *arch}
	if e := os.Getenv("SOURCE_DATE_EPOCH"); e != "" {
		sec, err := strconv.ParseInt(e, 10, 64)
		if err != nil {
			fmt.Fprintf(stderr, "cloudsteer-image bundle: SOURCE_DATE_EPOCH=%q is not a number\n", e)
			return 2
		}
		opts.ModTime = time.Unix(sec, 0)
	}
	tmp := *out + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fail(stderr, err)
	}
	m, err := upgrade.Write(f, priv, opts, *root, *kernel, *initrd)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, *out)
	}
	if err != nil {
		os.Remove(tmp)
		return fail(stderr, err)
	}
	fmt.Fprintf(stdout, "wrote %s: cloudsteer %s %s\n", *out, m.Version, m.Arch)
	for _, fl := range m.Files {
		fmt.Fprintf(stdout, "  %-14s %10d  sha256 %s\n", fl.Name, fl.Size, fl.SHA256)
	}
	return 0
}

func verify(args []string, stdout, stderr io.Writer) int {
	fs := flags("verify", stderr)
	pubPath := fs.String("pub", "", "the public key (upgrade.pub)")
	// Flags and the file in any order.
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return 2
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if *pubPath == "" || len(pos) != 1 {
		fmt.Fprintln(stderr, "usage: cloudsteer-image verify --pub PUB FILE")
		return 2
	}
	pub, err := upgrade.LoadPublicKey(*pubPath)
	if err != nil {
		return fail(stderr, err)
	}
	f, err := os.Open(pos[0])
	if err != nil {
		return fail(stderr, err)
	}
	defer f.Close()
	m, err := upgrade.Verify(f, pub)
	if err != nil {
		if errors.Is(err, upgrade.ErrSignature) {
			return fail(stderr, fmt.Errorf("%s: %w (made with another key?)", pos[0], err))
		}
		return fail(stderr, fmt.Errorf("%s: %w", pos[0], err))
	}
	fmt.Fprintf(stdout, "%s: ok: cloudsteer %s %s, signature and %d files verified\n", pos[0], m.Version, m.Arch, len(m.Files))
	return 0
}
