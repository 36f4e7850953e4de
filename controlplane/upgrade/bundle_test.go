package upgrade

import (
	"archive/tar"
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestWriteVerifyRoundTrip(t *testing.T) {
	pub, priv := testKey(t)
	p := testPayload()
	b := writeBundle(t, priv, "2026.12.1", "amd64", p)
	m, err := Verify(bytes.NewReader(b), pub)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if m.Version != "2026.12.1" || m.Arch != "amd64" || len(m.Files) != 3 {
		t.Fatalf("manifest %+v", m)
	}
	sum := sha256.Sum256(p.root)
	if m.Files[0].Name != RootName || m.Files[0].Size != int64(len(p.root)) || m.Files[0].SHA256 != hex.EncodeToString(sum[:]) {
		t.Fatalf("root entry %+v", m.Files[0])
	}
	// The members are in order, and each reader yields the file's bytes.
	br, err := Open(bytes.NewReader(b), pub)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range [][]byte{p.root, p.kernel, p.initrd} {
		f, r, err := br.Next()
		if err != nil {
			t.Fatalf("Next %d: %v", i, err)
		}
		got, err := io.ReadAll(r)
		if err != nil || !bytes.Equal(got, want) || f.Name != FileNames[i] {
			t.Fatalf("file %d %s: err %v, %d bytes, want %d", i, f.Name, err, len(got), len(want))
		}
	}
	if _, _, err := br.Next(); !errors.Is(err, io.EOF) {
		t.Fatalf("Next after the last file: %v, want io.EOF", err)
	}
	// Reproducible: the same inputs and key give the same bytes.
	if b2 := writeBundle(t, priv, "2026.12.1", "amd64", p); !bytes.Equal(b, b2) {
		t.Fatal("two bundles of the same inputs differ")
	}
}

// TestHandMadeBundleReads checks the test's own bundle maker against the
// reader, so that the rejections below are about the one change each makes.
func TestHandMadeBundleReads(t *testing.T) {
	pub, priv := testKey(t)
	if _, err := Verify(bytes.NewReader(rawBundle(t, signedMembers(t, priv, testPayload()))), pub); err != nil {
		t.Fatalf("hand-made bundle: %v", err)
	}
}

func TestRejects(t *testing.T) {
	pub, priv := testKey(t)
	p := testPayload()
	_, otherPriv, _ := ed25519.GenerateKey(nil)
	mod := func(f func(ms []member) []member) []byte {
		return rawBundle(t, f(signedMembers(t, priv, p)))
	}
	resign := func(ms []member, mb []byte) []member {
		ms[0].data, ms[1].data = mb, ed25519.Sign(priv, mb)
		return ms
	}
	cases := []struct {
		name   string
		bundle []byte
		want   string
	}{
		{"other key", mod(func(ms []member) []member { ms[1].data = ed25519.Sign(otherPriv, ms[0].data); return ms }), "signature does not verify"},
		{"manifest changed after signing", mod(func(ms []member) []member {
			ms[0].data = bytes.Replace(ms[0].data, []byte(`"version":"2"`), []byte(`"version":"3"`), 1)
			return ms
		}), "signature does not verify"},
		{"short signature", mod(func(ms []member) []member { ms[1].data = ms[1].data[:63]; return ms }), "manifest.sig is 63 bytes"},
		{"root byte flipped", mod(func(ms []member) []member {
			r := bytes.Clone(ms[2].data)
			r[1000] ^= 1
			ms[2].data = r
			return ms
		}), "root.squashfs sha256"},
		{"initrd replaced, same size", mod(func(ms []member) []member {
			ms[4].data = bytes.Repeat([]byte("x"), len(ms[4].data))
			return ms
		}), "initrd.img sha256"},
		{"kernel longer than the manifest says", mod(func(ms []member) []member { ms[3].data = append(bytes.Clone(ms[3].data), 'x'); return ms }), "vmlinuz is 19 bytes in the archive, the manifest says 18"},
		{"extra member at the end", mod(func(ms []member) []member { return append(ms, member{name: "evil.sh", data: []byte("x")}) }), `unexpected member "evil.sh"`},
		{"extra member in the middle", mod(func(ms []member) []member {
			return append(ms[:3], append([]member{{name: "extra", data: []byte("x")}}, ms[3:]...)...)
		}), `member "extra" where vmlinuz belongs`},
		{"initrd missing", mod(func(ms []member) []member { return ms[:4] }), "ends before initrd.img"},
		{"signature missing", mod(func(ms []member) []member { return append(ms[:1], ms[2:]...) }), `member "root.squashfs" where manifest.sig belongs`},
		{"manifest missing", mod(func(ms []member) []member { return ms[1:] }), `member "manifest.sig" where manifest.json belongs`},
		{"signature first", mod(func(ms []member) []member { ms[0], ms[1] = ms[1], ms[0]; return ms }), "where manifest.json belongs"},
		{"kernel before root", mod(func(ms []member) []member { ms[2], ms[3] = ms[3], ms[2]; return ms }), `member "vmlinuz" where root.squashfs belongs`},
		{"dot-slash name", mod(func(ms []member) []member { ms[2].name = "./root.squashfs"; return ms }), `member "./root.squashfs"`},
		{"parent-dir name", mod(func(ms []member) []member { ms[3].name = "../vmlinuz"; return ms }), `member "../vmlinuz"`},
		{"absolute name", mod(func(ms []member) []member { ms[4].name = "/initrd.img"; return ms }), `member "/initrd.img"`},
		{"directory name", mod(func(ms []member) []member { ms[4].name = "boot/initrd.img"; return ms }), `member "boot/initrd.img"`},
		{"symlink member", mod(func(ms []member) []member { ms[3].typ = tar.TypeSymlink; return ms }), "vmlinuz is not a plain file"},
		{"hard link member", mod(func(ms []member) []member { ms[3].typ = tar.TypeLink; return ms }), "vmlinuz is not a plain file"},
		{"unknown manifest field", mod(func(ms []member) []member {
			return resign(ms, bytes.Replace(ms[0].data, []byte(`{"format":1`), []byte(`{"format":1,"exec":"x"`), 1))
		}), `unknown field "exec"`},
		{"format 2", mod(func(ms []member) []member {
			return resign(ms, bytes.Replace(ms[0].data, []byte(`"format":1`), []byte(`"format":2`), 1))
		}), "manifest format 2"},
		{"bad arch", mod(func(ms []member) []member {
			return resign(ms, bytes.Replace(ms[0].data, []byte(`"amd64"`), []byte(`"mips"`), 1))
		}), `arch "mips"`},
		{"version with a slash", mod(func(ms []member) []member {
			return resign(ms, bytes.Replace(ms[0].data, []byte(`"version":"2"`), []byte(`"version":"../2"`), 1))
		}), `version "../2"`},
		{"manifest lists a file twice", mod(func(ms []member) []member {
			return resign(ms, bytes.Replace(ms[0].data, []byte(`"name":"vmlinuz"`), []byte(`"name":"root.squashfs"`), 1))
		}), `manifest file 2 is "root.squashfs", want "vmlinuz"`},
		{"manifest root too big", mod(func(ms []member) []member {
			return resign(ms, bytes.Replace(ms[0].data, []byte(`"size":70000`), []byte(`"size":99999999999`), 1))
		}), "root.squashfs size 99999999999 out of range"},
		{"manifest sha256 uppercase", mod(func(ms []member) []member {
			sum := sha256.Sum256(p.kernel)
			h := hex.EncodeToString(sum[:])
			return resign(ms, bytes.Replace(ms[0].data, []byte(h), []byte(strings.ToUpper(h)), 1))
		}), "vmlinuz sha256"},
		{"manifest with trailing data", mod(func(ms []member) []member { return resign(ms, append(bytes.Clone(ms[0].data), "{}"...)) }), "data after the JSON object"},
		{"not a tar", []byte("hello, this is not a bundle at all"), "truncated"},
		{"empty", nil, "ends before manifest.json"},
		{"garbage after the end", append(writeBundle(t, priv, "2", "amd64", p), "trailing"...), "data after the end of the archive"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Verify(bytes.NewReader(c.bundle), pub)
			if err == nil {
				t.Fatalf("Verify accepted it")
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q, want it to contain %q", err, c.want)
			}
		})
	}
}

// TestOversizeHeaderRefusedBeforeReading: a member whose header claims
// more than the limit is refused at its header, without reading the body
// (the test's reader would fail if it were read).
func TestOversizeHeaderRefusedBeforeReading(t *testing.T) {
	pub, priv := testKey(t)
	ms := signedMembers(t, priv, testPayload())
	head := rawBundle(t, ms[:2]) // manifest + sig + end marker
	head = head[:len(head)-1024] // drop the end marker
	var hb bytes.Buffer
	tw := tar.NewWriter(&hb)
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: RootName, Mode: 0o644, Size: MaxRoot + 1}); err != nil {
		t.Fatal(err)
	}
	tw.Flush()
	r := io.MultiReader(bytes.NewReader(head), bytes.NewReader(hb.Bytes()), failReader{t})
	_, err := Verify(r, pub)
	if err == nil || !strings.Contains(err.Error(), "root.squashfs is 4294967297 bytes, more than the 4294967296 allowed") {
		t.Fatalf("err %v", err)
	}
	// A huge manifest is refused the same way.
	var mb bytes.Buffer
	tw = tar.NewWriter(&mb)
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: ManifestName, Mode: 0o644, Size: MaxManifest + 1})
	tw.Flush()
	_, err = Verify(io.MultiReader(bytes.NewReader(mb.Bytes()), failReader{t}), pub)
	if err == nil || !strings.Contains(err.Error(), "manifest.json is 65537 bytes") {
		t.Fatalf("err %v", err)
	}
}

type failReader struct{ t testing.TB }

func (f failReader) Read([]byte) (int, error) {
	f.t.Error("the reader read past an oversize header")
	return 0, errors.New("read past the header")
}

// TestTruncated cuts a bundle at many points: each cut is an error.
func TestTruncated(t *testing.T) {
	pub, priv := testKey(t)
	b := writeBundle(t, priv, "2", "amd64", testPayload())
	for cut := 0; cut < len(b)-1024; cut += 97 {
		if _, err := Verify(bytes.NewReader(b[:cut]), pub); err == nil {
			t.Fatalf("a bundle cut at %d of %d bytes verified", cut, len(b))
		}
	}
	// Cutting into the end-of-archive marker too.
	if _, err := Verify(bytes.NewReader(b[:len(b)-len(b)%512-1024+10]), pub); err == nil {
		t.Fatal("a bundle cut in its end marker verified")
	}
}

func TestNextNeedsPreviousReadToItsEnd(t *testing.T) {
	pub, priv := testKey(t)
	br, err := Open(bytes.NewReader(writeBundle(t, priv, "2", "amd64", testPayload())), pub)
	if err != nil {
		t.Fatal(err)
	}
	_, r, err := br.Next()
	if err != nil {
		t.Fatal(err)
	}
	io.CopyN(io.Discard, r, 100)
	if _, _, err := br.Next(); err == nil || !strings.Contains(err.Error(), "root.squashfs was not read to its end") {
		t.Fatalf("Next: %v", err)
	}
}

// TestFileReaderNeverEOFOnBadData: a consumer that stops at the first
// error never sees io.EOF for a corrupted file, even when reading in
// small pieces.
func TestFileReaderNeverEOFOnBadData(t *testing.T) {
	pub, priv := testKey(t)
	ms := signedMembers(t, priv, testPayload())
	ms[3].data = []byte("kernel image bytez")
	br, err := Open(bytes.NewReader(rawBundle(t, ms)), pub)
	if err != nil {
		t.Fatal(err)
	}
	_, r, _ := br.Next()
	io.Copy(io.Discard, r)
	_, r, err = br.Next()
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 3)
	for {
		_, err := r.Read(buf)
		if errors.Is(err, io.EOF) {
			t.Fatal("corrupted kernel read to io.EOF")
		}
		if err != nil {
			if !strings.Contains(err.Error(), "vmlinuz sha256") {
				t.Fatalf("err %v", err)
			}
			break
		}
	}
}

func TestWriteRefuses(t *testing.T) {
	_, priv := testKey(t)
	d := t.TempDir()
	var buf bytes.Buffer
	if _, err := Write(&buf, priv, WriteOptions{Version: "1", Arch: "amd64"}, d+"/nope", d+"/nope", d+"/nope"); err == nil {
		t.Fatal("Write of missing files succeeded")
	}
	for _, n := range []string{"r", "k", "i"} {
		if err := writeFile(d+"/"+n, []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	if err := writeFile(d+"/empty", nil); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ v, a, root, want string }{
		{"1 2", "amd64", "r", "version"},
		{"1", "x86", "r", "arch"},
		{"1", "amd64", "empty", "root.squashfs size 0 out of range"},
	} {
		if _, err := Write(&buf, priv, WriteOptions{Version: c.v, Arch: c.a}, d+"/"+c.root, d+"/k", d+"/i"); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Write(%q, %q, %s): %v, want %q", c.v, c.a, c.root, err, c.want)
		}
	}
	if _, err := Write(&buf, priv[:10], WriteOptions{Version: "1", Arch: "amd64"}, d+"/r", d+"/k", d+"/i"); err == nil {
		t.Error("Write with a short key succeeded")
	}
}
