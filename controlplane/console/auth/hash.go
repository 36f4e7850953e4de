package auth

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/crypto/argon2"
)

// Hash is an encoded password hash in the PHC string format:
//
//	$argon2id$v=19$m=19456,t=2,p=1$<salt>$<key>
//
// with salt and key in unpadded standard base64.
type Hash string

// HashParams are argon2id parameters. Memory is in KiB.
type HashParams struct {
	Memory  uint32
	Time    uint32
	Threads uint8
	SaltLen uint32
	KeyLen  uint32
}

// DefaultHashParams follow OWASP's first recommended argon2id setting
// (m=19 MiB, t=2, p=1). The gateway is a small router that may have a few
// hundred MiB of RAM shared with the data plane: 64 MiB per login would let
// a handful of concurrent attempts take a large share of it, while 19 MiB
// with two passes gives the same attacker cost per guess as OWASP's other
// equivalent settings. One thread, because the router's cores carry traffic.
var DefaultHashParams = HashParams{Memory: 19 * 1024, Time: 2, Threads: 1, SaltLen: 16, KeyLen: 32}

// Bounds accepted when decoding, so a tampered or corrupt stored hash
// cannot make Verify allocate gigabytes or spin for minutes.
const (
	maxHashMemory  = 256 * 1024 // KiB
	maxHashTime    = 16
	maxHashThreads = 16
	minSaltLen     = 8
	maxSaltLen     = 64
	minKeyLen      = 16
	maxKeyLen      = 64
)

// ErrMalformedHash is returned (wrapped) for a Hash that does not decode.
var ErrMalformedHash = errors.New("malformed password hash")

var b64 = base64.RawStdEncoding.Strict()

// HashPassword hashes pw with DefaultHashParams and a random salt.
func HashPassword(pw string) (Hash, error) { return HashPasswordWith(pw, DefaultHashParams) }

// HashPasswordWith hashes pw with p and a random salt.
func HashPasswordWith(pw string, p HashParams) (Hash, error) {
	if err := p.check(); err != nil {
		return "", fmt.Errorf("hash password: %w", err)
	}
	salt := make([]byte, p.SaltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("hash password: read salt: %w", err)
	}
	key := argon2.IDKey([]byte(pw), salt, p.Time, p.Memory, p.Threads, p.KeyLen)
	return encodeHash(p, salt, key), nil
}

// Verify reports whether pw matches h, comparing the derived keys in
// constant time. A Hash that does not decode is an error, not a mismatch.
func Verify(pw string, h Hash) (bool, error) {
	p, salt, key, err := decodeHash(h)
	if err != nil {
		return false, fmt.Errorf("verify password: %w", err)
	}
	got := argon2.IDKey([]byte(pw), salt, p.Time, p.Memory, p.Threads, p.KeyLen)
	return subtle.ConstantTimeCompare(got, key) == 1, nil
}

// NeedsRehash reports whether h was made with parameters other than
// DefaultHashParams (or does not decode), so the caller should store a new
// hash after the next successful login.
func NeedsRehash(h Hash) bool {
	p, _, _, err := decodeHash(h)
	return err != nil || p != DefaultHashParams
}

func (p HashParams) check() error {
	switch {
	case p.Threads < 1 || p.Threads > maxHashThreads:
		return fmt.Errorf("%w: threads %d", ErrMalformedHash, p.Threads)
	case p.Memory < 8*uint32(p.Threads) || p.Memory > maxHashMemory:
		return fmt.Errorf("%w: memory %d KiB", ErrMalformedHash, p.Memory)
	case p.Time < 1 || p.Time > maxHashTime:
		return fmt.Errorf("%w: time %d", ErrMalformedHash, p.Time)
	case p.SaltLen < minSaltLen || p.SaltLen > maxSaltLen:
		return fmt.Errorf("%w: salt length %d", ErrMalformedHash, p.SaltLen)
	case p.KeyLen < minKeyLen || p.KeyLen > maxKeyLen:
		return fmt.Errorf("%w: key length %d", ErrMalformedHash, p.KeyLen)
	}
	return nil
}

func encodeHash(p HashParams, salt, key []byte) Hash {
	return Hash(fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, p.Memory, p.Time, p.Threads, b64.EncodeToString(salt), b64.EncodeToString(key)))
}

// decodeHash parses an encoded hash strictly: only the canonical form that
// encodeHash writes is accepted, and parameters must be within bounds.
func decodeHash(h Hash) (HashParams, []byte, []byte, error) {
	var p HashParams
	parts := strings.Split(string(h), "$")
	if len(parts) != 6 || parts[0] != "" {
		return p, nil, nil, fmt.Errorf("%w: want 5 '$'-separated fields", ErrMalformedHash)
	}
	if parts[1] != "argon2id" {
		return p, nil, nil, fmt.Errorf("%w: algorithm %q", ErrMalformedHash, parts[1])
	}
	if parts[2] != "v="+strconv.Itoa(argon2.Version) {
		return p, nil, nil, fmt.Errorf("%w: version %q", ErrMalformedHash, parts[2])
	}
	params := strings.Split(parts[3], ",")
	if len(params) != 3 {
		return p, nil, nil, fmt.Errorf("%w: parameters %q", ErrMalformedHash, parts[3])
	}
	var vals [3]uint64
	for i, name := range []string{"m=", "t=", "p="} {
		s, ok := strings.CutPrefix(params[i], name)
		if !ok {
			return p, nil, nil, fmt.Errorf("%w: parameters %q", ErrMalformedHash, parts[3])
		}
		v, err := strconv.ParseUint(s, 10, 32)
		if err != nil {
			return p, nil, nil, fmt.Errorf("%w: parameter %s", ErrMalformedHash, name)
		}
		vals[i] = v
	}
	salt, err := b64.DecodeString(parts[4])
	if err != nil {
		return p, nil, nil, fmt.Errorf("%w: salt", ErrMalformedHash)
	}
	key, err := b64.DecodeString(parts[5])
	if err != nil {
		return p, nil, nil, fmt.Errorf("%w: key", ErrMalformedHash)
	}
	if vals[2] > maxHashThreads {
		return p, nil, nil, fmt.Errorf("%w: threads %d", ErrMalformedHash, vals[2])
	}
	p = HashParams{Memory: uint32(vals[0]), Time: uint32(vals[1]), Threads: uint8(vals[2]),
		SaltLen: uint32(len(salt)), KeyLen: uint32(len(key))}
	if err := p.check(); err != nil {
		return HashParams{}, nil, nil, err
	}
	if encodeHash(p, salt, key) != h {
		return HashParams{}, nil, nil, fmt.Errorf("%w: not in canonical form", ErrMalformedHash)
	}
	return p, salt, key, nil
}
