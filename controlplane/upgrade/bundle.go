// Package upgrade is the appliance image's A/B upgrade: the signed bundle
// format (write for the build, read and verify for the install), the
// ed25519 key files, writing the inactive root slot with its boot-counted
// Boot Loader Specification entry, and reading the slots' state back
// (which slot runs, a trial boot, a rollback) for status.
//
// A bundle is a plain tar whose members come in this order and no other:
//
//	manifest.json  {"format":1,"version":V,"arch":A,"files":[{"name","size","sha256"}...]}
//	manifest.sig   64 bytes: ed25519 signature over manifest.json's bytes
//	root.squashfs  the read-only root, written to the inactive slot's partition
//	vmlinuz        the kernel, copied to the ESP as /S/vmlinuz
//	initrd.img     the initramfs, copied to the ESP as /S/initrd.img
//
// The reader checks the signature before it reads anything else, then
// each file's size and SHA-256 while it streams: a file's reader returns
// an error instead of io.EOF when the bytes differ from the manifest, so
// nothing is trusted until its last byte. Anything but exactly these
// members (another name, a path with directories, a link, a reordering, a
// file larger than its limit or than the manifest says, a truncated or
// trailing-garbage archive) is an error saying what was wrong.
package upgrade

import (
	"archive/tar"
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"regexp"
	"time"
)

// Member names, in bundle order.
const (
	ManifestName = "manifest.json"
	SigName      = "manifest.sig"
	RootName     = "root.squashfs"
	KernelName   = "vmlinuz"
	InitrdName   = "initrd.img"
)

// FileNames are the payload files, in bundle (and manifest) order.
var FileNames = []string{RootName, KernelName, InitrdName}

// Format is the manifest format this package writes and reads.
const Format = 1

// Size limits the reader enforces (a file larger than its limit is refused
// before any of it is read).
const (
	MaxManifest = 64 << 10
	MaxRoot     = 4 << 30
	MaxKernel   = 256 << 20
	MaxInitrd   = 1 << 30
	// maxTrailer is how many zero bytes may follow the end of the archive
	// (tar pads to its record size, 10 KiB by default).
	maxTrailer = 1 << 20
)

var maxSize = map[string]int64{RootName: MaxRoot, KernelName: MaxKernel, InitrdName: MaxInitrd}

// Arches are the image architectures (Go's GOARCH names).
var Arches = []string{"amd64", "arm64"}

// versionRE is what a version may look like: it goes into file names, the
// boot entry and status, so no spaces, slashes or control characters.
var versionRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+~-]{0,63}$`)

// Manifest is manifest.json.
type Manifest struct {
	Format  int    `json:"format"`
	Version string `json:"version"`
	Arch    string `json:"arch"`
	Files   []File `json:"files"`
}

// File is one payload file in the manifest.
type File struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"` // lowercase hex
}

// File returns the manifest's entry for name.
func (m *Manifest) File(name string) (File, bool) {
	for _, f := range m.Files {
		if f.Name == name {
			return f, true
		}
	}
	return File{}, false
}

// CheckVersion reports whether v may be an image version.
func CheckVersion(v string) error {
	if !versionRE.MatchString(v) {
		return fmt.Errorf("version %q: want 1-64 characters of A-Z a-z 0-9 . _ + ~ -, starting with a letter or digit", v)
	}
	return nil
}

func checkArch(a string) error {
	for _, x := range Arches {
		if a == x {
			return nil
		}
	}
	return fmt.Errorf("arch %q: want amd64 or arm64", a)
}

// validate checks a parsed manifest: format, version, arch, and exactly
// the payload files in order with sane sizes and hashes.
func (m *Manifest) validate() error {
	if m.Format != Format {
		return fmt.Errorf("manifest format %d: this cloudsteer reads format %d", m.Format, Format)
	}
	if err := CheckVersion(m.Version); err != nil {
		return fmt.Errorf("manifest: %w", err)
	}
	if err := checkArch(m.Arch); err != nil {
		return fmt.Errorf("manifest: %w", err)
	}
	if len(m.Files) != len(FileNames) {
		return fmt.Errorf("manifest lists %d files, want %d (%v)", len(m.Files), len(FileNames), FileNames)
	}
	for i, f := range m.Files {
		if f.Name != FileNames[i] {
			return fmt.Errorf("manifest file %d is %q, want %q", i+1, f.Name, FileNames[i])
		}
		if f.Size <= 0 || f.Size > maxSize[f.Name] {
			return fmt.Errorf("manifest: %s size %d out of range (1..%d)", f.Name, f.Size, maxSize[f.Name])
		}
		if b, err := hex.DecodeString(f.SHA256); err != nil || len(b) != sha256.Size || hex.EncodeToString(b) != f.SHA256 {
			return fmt.Errorf("manifest: %s sha256 %q is not 64 lowercase hex digits", f.Name, clip(f.SHA256))
		}
	}
	return nil
}

// parseManifest decodes manifest.json strictly (no unknown fields, no
// trailing data).
func parseManifest(b []byte) (*Manifest, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var m Manifest
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("parse manifest: %w", err)
	}
	if dec.More() {
		return nil, errors.New("parse manifest: data after the JSON object")
	}
	if err := m.validate(); err != nil {
		return nil, err
	}
	return &m, nil
}

// Source is where Write reads one payload file from.
type Source struct {
	Name string // RootName, KernelName or InitrdName
	Path string
}

// WriteOptions are what a bundle says about itself.
type WriteOptions struct {
	Version string
	Arch    string
	// ModTime is every member's modification time (SOURCE_DATE_EPOCH for
	// a reproducible bundle; the Unix epoch when zero).
	ModTime time.Time
}

// Write writes a signed bundle of root, kernel and initrd to w. It reads
// each file twice (hash, then copy) and fails if one changed in between.
// The same inputs and key give the same bytes.
func Write(w io.Writer, key ed25519.PrivateKey, opts WriteOptions, root, kernel, initrd string) (*Manifest, error) {
	if len(key) != ed25519.PrivateKeySize {
		return nil, errors.New("write bundle: not an ed25519 private key")
	}
	m := &Manifest{Format: Format, Version: opts.Version, Arch: opts.Arch}
	paths := []string{root, kernel, initrd}
	for i, p := range paths {
		f, err := hashFile(p)
		if err != nil {
			return nil, fmt.Errorf("write bundle: %w", err)
		}
		f.Name = FileNames[i]
		m.Files = append(m.Files, f)
	}
	if err := m.validate(); err != nil {
		return nil, fmt.Errorf("write bundle: %w", err)
	}
	mb, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("write bundle: encode manifest: %w", err)
	}
	mb = append(mb, '\n')
	sig := ed25519.Sign(key, mb)
	mt := opts.ModTime
	if mt.IsZero() {
		mt = time.Unix(0, 0)
	}
	tw := tar.NewWriter(w)
	hdr := func(name string, size int64) *tar.Header {
		return &tar.Header{Typeflag: tar.TypeReg, Name: name, Size: size, Mode: 0o644,
			ModTime: mt.UTC().Truncate(time.Second), Uname: "root", Gname: "root", Format: tar.FormatUSTAR}
	}
	for _, mem := range []struct {
		name string
		data []byte
	}{{ManifestName, mb}, {SigName, sig}} {
		if err := tw.WriteHeader(hdr(mem.name, int64(len(mem.data)))); err != nil {
			return nil, fmt.Errorf("write bundle: %s: %w", mem.name, err)
		}
		if _, err := tw.Write(mem.data); err != nil {
			return nil, fmt.Errorf("write bundle: %s: %w", mem.name, err)
		}
	}
	for i, p := range paths {
		if err := copyMember(tw, hdr(m.Files[i].Name, m.Files[i].Size), p, m.Files[i]); err != nil {
			return nil, fmt.Errorf("write bundle: %w", err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("write bundle: %w", err)
	}
	return m, nil
}

func hashFile(path string) (File, error) {
	f, err := os.Open(path)
	if err != nil {
		return File{}, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return File{}, fmt.Errorf("read %s: %w", path, err)
	}
	return File{Size: n, SHA256: hex.EncodeToString(h.Sum(nil))}, nil
}

func copyMember(tw *tar.Writer, hdr *tar.Header, path string, want File) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("%s: %w", want.Name, err)
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tw, h), io.LimitReader(f, want.Size+1))
	if err != nil {
		return fmt.Errorf("copy %s: %w", path, err)
	}
	if n != want.Size || hex.EncodeToString(h.Sum(nil)) != want.SHA256 {
		return fmt.Errorf("%s changed while the bundle was written", path)
	}
	return nil
}

// Reader reads a bundle: Open has checked the signature and the manifest;
// Next yields each payload file as a reader that checks its size and hash.
type Reader struct {
	src  *countReader
	tr   *tar.Reader
	m    *Manifest
	next int         // index into FileNames of the next file
	cur  *fileReader // the file being read, until it reached EOF
	done bool
	// dataEnd is the offset after the last file's bytes: the end marker
	// (two zero blocks) must follow its padding.
	dataEnd int64
}

// countReader counts the bytes read through it.
type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// ErrSignature is returned (wrapped) when manifest.sig does not verify.
var ErrSignature = errors.New("signature does not verify with the upgrade key")

// Open reads the manifest and its signature from r and verifies them with
// pub. Nothing else in the bundle is looked at before the signature holds.
func Open(r io.Reader, pub ed25519.PublicKey) (*Reader, error) {
	if len(pub) != ed25519.PublicKeySize {
		return nil, errors.New("open bundle: not an ed25519 public key")
	}
	cr := &countReader{r: r}
	br := &Reader{src: cr, tr: tar.NewReader(cr)}
	mb, err := br.small(ManifestName, MaxManifest)
	if err != nil {
		return nil, err
	}
	sig, err := br.small(SigName, ed25519.SignatureSize)
	if err != nil {
		return nil, err
	}
	if len(sig) != ed25519.SignatureSize {
		return nil, fmt.Errorf("open bundle: %s is %d bytes, want %d", SigName, len(sig), ed25519.SignatureSize)
	}
	if !ed25519.Verify(pub, mb, sig) {
		return nil, fmt.Errorf("open bundle: %w", ErrSignature)
	}
	m, err := parseManifest(mb)
	if err != nil {
		return nil, fmt.Errorf("open bundle: %w", err)
	}
	br.m = m
	return br, nil
}

// Manifest is the verified manifest.
func (r *Reader) Manifest() *Manifest { return r.m }

// header reads the next tar header and checks it is a plain file called
// want of at most max bytes.
func (r *Reader) header(want string, max int64) (*tar.Header, error) {
	hdr, err := r.tr.Next()
	switch {
	case errors.Is(err, io.EOF):
		return nil, fmt.Errorf("read bundle: ends before %s (truncated or not a bundle)", want)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return nil, fmt.Errorf("read bundle: truncated before %s", want)
	case err != nil:
		return nil, fmt.Errorf("read bundle: before %s: %w", want, err)
	}
	if hdr.Name != want {
		return nil, fmt.Errorf("read bundle: member %q where %s belongs (members must be %s, %s, %s, %s, %s, in that order)",
			clip(hdr.Name), want, ManifestName, SigName, RootName, KernelName, InitrdName)
	}
	if hdr.Typeflag != tar.TypeReg {
		return nil, fmt.Errorf("read bundle: %s is not a plain file (tar type %q)", want, hdr.Typeflag)
	}
	if hdr.Size < 0 || hdr.Size > max {
		return nil, fmt.Errorf("read bundle: %s is %d bytes, more than the %d allowed", want, hdr.Size, max)
	}
	return hdr, nil
}

// small reads a whole small member.
func (r *Reader) small(name string, max int64) ([]byte, error) {
	hdr, err := r.header(name, max)
	if err != nil {
		return nil, err
	}
	b := make([]byte, hdr.Size)
	if _, err := io.ReadFull(r.tr, b); err != nil {
		return nil, fmt.Errorf("read bundle: %s truncated: %w", name, err)
	}
	return b, nil
}

// Next returns the next payload file (root.squashfs, vmlinuz, initrd.img)
// and a reader of its bytes. The reader returns io.EOF only after the
// file's size and SHA-256 matched the manifest; any other error means the
// bytes read must not be used. The previous file must have been read to
// its end. After the last file Next checks the end of the archive and
// returns io.EOF.
func (r *Reader) Next() (File, io.Reader, error) {
	if r.cur != nil && !r.cur.ok {
		return File{}, nil, fmt.Errorf("read bundle: %s was not read to its end", r.cur.f.Name)
	}
	r.cur = nil
	if r.next == len(FileNames) {
		if err := r.finish(); err != nil {
			return File{}, nil, err
		}
		return File{}, nil, io.EOF
	}
	f := r.m.Files[r.next]
	hdr, err := r.header(f.Name, maxSize[f.Name])
	if err != nil {
		return File{}, nil, err
	}
	if hdr.Size != f.Size {
		return File{}, nil, fmt.Errorf("read bundle: %s is %d bytes in the archive, the manifest says %d", f.Name, hdr.Size, f.Size)
	}
	r.next++
	r.cur = &fileReader{f: f, r: r.tr, h: sha256.New()}
	if r.next == len(FileNames) {
		r.cur.atEOF = func() { r.dataEnd = r.src.n }
	}
	return f, r.cur, nil
}

// finish checks that the archive ends after the last file: no further
// member, nothing but zero padding after the end marker.
func (r *Reader) finish() error {
	if r.done {
		return nil
	}
	hdr, err := r.tr.Next()
	switch {
	case err == nil:
		return fmt.Errorf("read bundle: unexpected member %q after %s", clip(hdr.Name), InitrdName)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return errors.New("read bundle: truncated at the end of the archive")
	case !errors.Is(err, io.EOF):
		return fmt.Errorf("read bundle: end of archive: %w", err)
	}
	// archive/tar takes a missing end marker for the end; a bundle must
	// have it.
	if want := (r.dataEnd+511)/512*512 + 1024; r.src.n < want {
		return errors.New("read bundle: truncated: the end-of-archive marker is missing")
	}
	buf := make([]byte, 32<<10)
	var n int64
	for {
		k, err := r.src.Read(buf)
		for _, b := range buf[:k] {
			if b != 0 {
				return errors.New("read bundle: data after the end of the archive")
			}
		}
		n += int64(k)
		if n > maxTrailer {
			return errors.New("read bundle: too much padding after the end of the archive")
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("read bundle: after the end of the archive: %w", err)
		}
	}
	r.done = true
	return nil
}

// fileReader streams one payload file, hashing it; at the end of the
// member it checks size and hash.
type fileReader struct {
	f   File
	r   io.Reader
	h   hash.Hash
	n   int64
	ok  bool // verified
	err error
	// atEOF, when set, is called once the file verified.
	atEOF func()
}

func (fr *fileReader) Read(p []byte) (int, error) {
	if fr.err != nil {
		return 0, fr.err
	}
	if fr.ok {
		return 0, io.EOF
	}
	n, err := fr.r.Read(p)
	fr.h.Write(p[:n])
	fr.n += int64(n)
	switch {
	case errors.Is(err, io.EOF):
		if fr.n != fr.f.Size {
			fr.err = fmt.Errorf("read bundle: %s truncated at %d of %d bytes", fr.f.Name, fr.n, fr.f.Size)
			return n, fr.err
		}
		if got := hex.EncodeToString(fr.h.Sum(nil)); got != fr.f.SHA256 {
			fr.err = fmt.Errorf("read bundle: %s sha256 %s, the manifest says %s", fr.f.Name, got, fr.f.SHA256)
			return n, fr.err
		}
		fr.ok = true
		if fr.atEOF != nil {
			fr.atEOF()
		}
		return n, io.EOF
	case errors.Is(err, io.ErrUnexpectedEOF):
		fr.err = fmt.Errorf("read bundle: %s truncated at %d of %d bytes", fr.f.Name, fr.n, fr.f.Size)
		return n, fr.err
	case err != nil:
		fr.err = fmt.Errorf("read bundle: %s: %w", fr.f.Name, err)
		return n, fr.err
	}
	return n, nil
}

// Verify reads a whole bundle from r, checking the signature and every
// file, and returns its manifest.
func Verify(r io.Reader, pub ed25519.PublicKey) (*Manifest, error) {
	br, err := Open(r, pub)
	if err != nil {
		return nil, err
	}
	for {
		_, fr, err := br.Next()
		if errors.Is(err, io.EOF) {
			return br.Manifest(), nil
		}
		if err != nil {
			return nil, err
		}
		if _, err := io.Copy(io.Discard, fr); err != nil {
			return nil, err
		}
	}
}

// clip shortens untrusted text for an error message.
func clip(s string) string {
	const max = 80
	if len(s) > max {
		s = s[:max] + "…"
	}
	return s
}
