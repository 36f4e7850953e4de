package store

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"unicode"
	"unicode/utf8"

	bolt "go.etcd.io/bbolt"

	"github.com/cloudsteer/cloudsteer/controlplane/model"
)

// The web console's own data besides the admin: the names the admin gives
// LAN clients and an uploaded inspection CA, in the "console" bucket.
// Client names are keys "client/<IP or MAC>"; the CA is one key.

var (
	prefixClient = []byte("client/")
	keyInspectCA = []byte("inspection_ca")
)

// Client name bounds: a name is a short label shown in the events list,
// and an office has a few hundred clients at most.
const (
	MaxClientNames   = 1024
	MaxClientNameLen = 64 // characters
)

// NormalizeClient returns the canonical key of a client: an IP address
// (unmapped, no zone) or a MAC address (lowercase, colon-separated), and
// ErrInvalid for anything else.
func NormalizeClient(client string) (string, error) {
	if a, err := netip.ParseAddr(client); err == nil && a.Zone() == "" {
		return a.Unmap().String(), nil
	}
	if hw, err := net.ParseMAC(client); err == nil && len(hw) == 6 {
		return hw.String(), nil
	}
	return "", model.Plain(model.ErrInvalid, fmt.Sprintf("client %q is neither an IP address nor a MAC address", clipName(client)))
}

// validClientName checks a name: printable text without control or
// format characters, at most MaxClientNameLen characters, trimmed.
func validClientName(name string) error {
	switch {
	case !utf8.ValidString(name):
		return model.Plain(model.ErrInvalid, "the client name is not valid UTF-8")
	case utf8.RuneCountInString(name) > MaxClientNameLen:
		return model.Plain(model.ErrInvalid, fmt.Sprintf("the client name is longer than %d characters", MaxClientNameLen))
	case strings.TrimSpace(name) != name:
		return model.Plain(model.ErrInvalid, "the client name starts or ends with a space")
	}
	for _, r := range name {
		if unicode.IsControl(r) || unicode.Is(unicode.Cf, r) || r == utf8.RuneError {
			return model.Plain(model.ErrInvalid, "the client name holds a control character")
		}
	}
	return nil
}

func clipName(s string) string {
	if len(s) > 64 {
		s = s[:64] + "…"
	}
	return strings.ToValidUTF8(s, "?")
}

// ClientNames returns the names the admin gave clients, keyed by the
// normalized IP or MAC.
func (s *Store) ClientNames() (map[string]string, error) {
	out := map[string]string{}
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketConsole).Cursor()
		for k, v := c.Seek(prefixClient); k != nil && bytes.HasPrefix(k, prefixClient); k, v = c.Next() {
			out[string(k[len(prefixClient):])] = string(v)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read client names: %w", err)
	}
	return out, nil
}

// SetClientName names client (an IP or MAC, normalized first); an empty
// name removes it. ErrInvalid for a bad client or name, and when
// MaxClientNames clients are named already.
func (s *Store) SetClientName(client, name string) error {
	key, err := NormalizeClient(client)
	if err != nil {
		return fmt.Errorf("set client name: %w", err)
	}
	if err := validClientName(name); err != nil {
		return fmt.Errorf("set client name: %w", err)
	}
	k := append(append([]byte{}, prefixClient...), key...)
	err = s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketConsole)
		if name == "" {
			return b.Delete(k)
		}
		if b.Get(k) == nil {
			n := 0
			c := b.Cursor()
			for ck, _ := c.Seek(prefixClient); ck != nil && bytes.HasPrefix(ck, prefixClient); ck, _ = c.Next() {
				n++
			}
			if n >= MaxClientNames {
				return model.Plain(model.ErrInvalid, fmt.Sprintf("at most %d clients can be named; remove a name first", MaxClientNames))
			}
		}
		return b.Put(k, []byte(name))
	})
	if err != nil {
		return fmt.Errorf("set client name: %w", err)
	}
	return nil
}

// InspectionCA returns the uploaded inspection CA (DER); ok is false when
// none was uploaded.
func (s *Store) InspectionCA() (der []byte, ok bool, err error) {
	err = s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketConsole).Get(keyInspectCA); v != nil {
			der, ok = bytes.Clone(v), true
		}
		return nil
	})
	if err != nil {
		return nil, false, fmt.Errorf("read inspection CA: %w", err)
	}
	return der, ok, nil
}

// PutInspectionCA stores an uploaded inspection CA certificate, PEM or
// DER; it must be one parseable CA certificate (model.ParseCACert), else
// ErrInvalid and nothing changes. It returns the stored DER.
func (s *Store) PutInspectionCA(certPEMOrDER []byte) ([]byte, error) {
	der, err := model.ParseCACert(certPEMOrDER)
	if err != nil {
		return nil, fmt.Errorf("store inspection CA: %w", err)
	}
	err = s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketConsole).Put(keyInspectCA, der) })
	if err != nil {
		return nil, fmt.Errorf("store inspection CA: %w", err)
	}
	return der, nil
}

// CheckSetupToken reports whether token is the live setup token without
// using it up: nil when it is, ErrAdminExists once an admin is set up,
// ErrSetupToken for a wrong, expired or missing one (as ConsumeSetupToken).
func (s *Store) CheckSetupToken(token string) error {
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketAdmin)
		if b.Get(keyAdmin) != nil {
			return ErrAdminExists
		}
		t, ok, err := getSetupToken(b)
		if err != nil {
			return err
		}
		if !ok || len(token) == 0 || len(token) > maxSetupTokenLen || !s.now().Before(t.Expires) {
			return ErrSetupToken
		}
		sum := sha256.Sum256([]byte(token))
		if subtle.ConstantTimeCompare(sum[:], t.Hash) != 1 {
			return ErrSetupToken
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("check setup token: %w", err)
	}
	return nil
}
