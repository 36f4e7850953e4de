package upgrade

import (
	"archive/tar"
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// testKey is a fixed key pair for the tests.
func testKey(t testing.TB) (ed25519.PublicKey, ed25519.PrivateKey) {
	t.Helper()
	seed := sha256.Sum256([]byte("cloudsteer upgrade test key"))
	priv := ed25519.NewKeyFromSeed(seed[:])
	return priv.Public().(ed25519.PublicKey), priv
}

// payload is the content of a test bundle's three files.
type payload struct{ root, kernel, initrd []byte }

func testPayload() payload {
	root := bytes.Repeat([]byte("squashfs-root-"), 5000) // 70 KB
	return payload{root: root, kernel: []byte("kernel image bytes"), initrd: []byte("initrd image bytes, a few more")}
}

// writeBundle writes p as a signed bundle with Write and returns its bytes.
func writeBundle(t testing.TB, priv ed25519.PrivateKey, version, arch string, p payload) []byte {
	t.Helper()
	dir := t.TempDir()
	paths := []string{filepath.Join(dir, "root"), filepath.Join(dir, "vmlinuz"), filepath.Join(dir, "initrd")}
	for i, b := range [][]byte{p.root, p.kernel, p.initrd} {
		if err := os.WriteFile(paths[i], b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	if _, err := Write(&buf, priv, WriteOptions{Version: version, Arch: arch}, paths[0], paths[1], paths[2]); err != nil {
		t.Fatalf("Write: %v", err)
	}
	return buf.Bytes()
}

// member is one tar member of a hand-made bundle.
type member struct {
	name string
	data []byte
	typ  byte  // tar.TypeReg when 0
	size int64 // header size when not -1 and set; 0 means len(data)
}

// manifestFor returns the manifest JSON of p.
func manifestFor(t testing.TB, version, arch string, p payload) []byte {
	t.Helper()
	m := Manifest{Format: Format, Version: version, Arch: arch}
	for i, b := range [][]byte{p.root, p.kernel, p.initrd} {
		sum := sha256.Sum256(b)
		m.Files = append(m.Files, File{Name: FileNames[i], Size: int64(len(b)), SHA256: hex.EncodeToString(sum[:])})
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return append(b, '\n')
}

// rawBundle writes members as a tar, as they are.
func rawBundle(t testing.TB, members []member) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, m := range members {
		typ := m.typ
		if typ == 0 {
			typ = tar.TypeReg
		}
		h := &tar.Header{Typeflag: typ, Name: m.name, Mode: 0o644, Size: int64(len(m.data))}
		if typ != tar.TypeReg {
			h.Size = 0
			h.Linkname = "/etc/passwd"
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if typ == tar.TypeReg {
			if _, err := tw.Write(m.data); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// signedMembers returns the five members of a valid bundle of p, to be
// altered by a test.
func signedMembers(t testing.TB, priv ed25519.PrivateKey, p payload) []member {
	mb := manifestFor(t, "2", "amd64", p)
	return []member{
		{name: ManifestName, data: mb},
		{name: SigName, data: ed25519.Sign(priv, mb)},
		{name: RootName, data: p.root},
		{name: KernelName, data: p.kernel},
		{name: InitrdName, data: p.initrd},
	}
}

func writeFile(path string, b []byte) error { return os.WriteFile(path, b, 0o644) }

func testKeyFrom(t testing.TB, seed string) (ed25519.PublicKey, ed25519.PrivateKey) {
	s := sha256.Sum256([]byte(seed))
	priv := ed25519.NewKeyFromSeed(s[:])
	return priv.Public().(ed25519.PublicKey), priv
}
