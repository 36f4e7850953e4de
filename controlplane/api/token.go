package api

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// tokenBytes is the number of random bytes in a new token (hex-encoded).
const tokenBytes = 32

// minTokenLen is the shortest token the server accepts from a file an
// admin wrote themselves.
const minTokenLen = 32

// LoadOrCreateToken returns the API token stored at path, creating the
// file (0600, parent directory 0700) with a random 32-byte hex token when
// it does not exist yet. A file readable by others is made 0600.
func LoadOrCreateToken(path string) (string, error) {
	tok, err := readToken(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return tok, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", fmt.Errorf("create token: %w", err)
	}
	b := make([]byte, tokenBytes)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("create token: %w", err)
	}
	tok = hex.EncodeToString(b)
	// Write a temporary file and link it into place: the token file is
	// never seen half-written (power loss), and of two daemons starting at
	// once the first link wins and the second reads its token.
	tmp, err := os.CreateTemp(filepath.Dir(path), ".token-*")
	if err != nil {
		return "", fmt.Errorf("create token: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return "", fmt.Errorf("create token: %w", err)
	}
	_, werr := tmp.WriteString(tok + "\n")
	serr := tmp.Sync()
	cerr := tmp.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		return "", fmt.Errorf("create token: %w", err)
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return readToken(path)
		}
		return "", fmt.Errorf("create token: %w", err)
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return tok, nil
}

// readToken reads and checks an existing token file, tightening its mode.
func readToken(path string) (string, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		if errors.Is(err, syscall.ELOOP) {
			return "", fmt.Errorf("read token %s: is a symbolic link", path)
		}
		return "", fmt.Errorf("read token: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("read token: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return "", fmt.Errorf("read token %s: not a regular file", path)
	}
	if fi.Mode().Perm() != 0o600 {
		if err := f.Chmod(0o600); err != nil {
			return "", fmt.Errorf("read token: make %s 0600: %w", path, err)
		}
	}
	b, err := io.ReadAll(io.LimitReader(f, 4096))
	if err != nil {
		return "", fmt.Errorf("read token: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if err := checkToken(tok); err != nil {
		return "", fmt.Errorf("read token %s: %w (delete the file to make a new one)", path, err)
	}
	return tok, nil
}

// checkToken accepts tokens of at least minTokenLen characters from the
// RFC 6750 token alphabet.
func checkToken(tok string) error {
	if len(tok) < minTokenLen {
		return fmt.Errorf("token shorter than %d characters", minTokenLen)
	}
	if len(tok) > 1024 {
		return errors.New("token longer than 1024 characters")
	}
	for _, c := range []byte(tok) {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-._~+/=", c) >= 0
		if !ok {
			return errors.New("token has characters outside A-Z a-z 0-9 - . _ ~ + / =")
		}
	}
	return nil
}
