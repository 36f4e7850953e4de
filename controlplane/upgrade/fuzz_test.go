package upgrade

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"testing"
)

// FuzzVerify feeds the bundle reader mutated bundles. It must never panic,
// and whatever it accepts must hold the files its signed manifest
// describes, in order, read independently with archive/tar.
func FuzzVerify(f *testing.F) {
	pub, priv := testKey(f)
	p := payload{root: []byte("root bytes"), kernel: []byte("kernel"), initrd: []byte("initrd")}
	good := writeBundle(f, priv, "2", "amd64", p)
	f.Add(good)
	f.Add(good[:len(good)-1024])
	f.Add(rawBundle(f, signedMembers(f, priv, p)[:4]))
	ms := signedMembers(f, priv, p)
	ms[2].name = "./root.squashfs"
	f.Add(rawBundle(f, ms))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Verify(bytes.NewReader(b), pub)
		if err != nil {
			return
		}
		tr := tar.NewReader(bytes.NewReader(b))
		for i, want := range append([]string{ManifestName, SigName}, FileNames...) {
			h, err := tr.Next()
			if err != nil || h.Name != want {
				t.Fatalf("accepted bundle: member %d: %v %v, want %s", i, h, err, want)
			}
			if i < 2 {
				continue
			}
			s := sha256.New()
			n, _ := io.Copy(s, tr)
			fm := m.Files[i-2]
			if n != fm.Size || hex.EncodeToString(s.Sum(nil)) != fm.SHA256 {
				t.Fatalf("accepted bundle: %s differs from its manifest", want)
			}
		}
		if _, err := tr.Next(); !errors.Is(err, io.EOF) {
			t.Fatalf("accepted bundle has more members: %v", err)
		}
	})
}

// FuzzCompareVersions: the order is antisymmetric, and it terminates.
func FuzzCompareVersions(f *testing.F) {
	for _, s := range [][2]string{{"1", "2"}, {"1.0~rc1", "1.0"}, {"1--2", "1-.-2"}, {"a^b", "a.b"}, {"", "x"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		if x, y := CompareVersions(a, b), CompareVersions(b, a); x != -y {
			t.Fatalf("Compare(%q,%q)=%d but Compare(%q,%q)=%d", a, b, x, b, a, y)
		}
		if CompareVersions(a, a) != 0 {
			t.Fatalf("Compare(%q,%q) != 0", a, a)
		}
	})
}
