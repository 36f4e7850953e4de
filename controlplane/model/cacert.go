package model

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"fmt"
)

// MaxCACertBytes bounds an inspection CA certificate (PEM or DER); real
// ones are 1 to 3 KB.
const MaxCACertBytes = 64 << 10

// ParseCACert reads the cloud provider's inspection CA (the manual's
// cacert.cer), PEM or DER, and returns its DER. It must be exactly one
// certificate, parseable, and a CA (basic constraints with IsCA); anything
// else is ErrInvalid with a message safe to show.
func ParseCACert(data []byte) ([]byte, error) {
	if len(data) == 0 {
		return nil, Plain(ErrInvalid, "the CA certificate file is empty")
	}
	if len(data) > MaxCACertBytes {
		return nil, Plain(ErrInvalid, fmt.Sprintf("the CA certificate file is larger than %d bytes", MaxCACertBytes))
	}
	der := data
	if t := bytes.TrimSpace(data); bytes.HasPrefix(t, []byte("-----BEGIN")) {
		var certs [][]byte
		rest := t
		for {
			var b *pem.Block
			b, rest = pem.Decode(rest)
			if b == nil {
				break
			}
			if b.Type != "CERTIFICATE" {
				return nil, Plain(ErrInvalid, fmt.Sprintf("the PEM file holds a %q block, not only a CERTIFICATE", b.Type))
			}
			certs = append(certs, b.Bytes)
		}
		switch {
		case len(certs) == 0:
			return nil, Plain(ErrInvalid, "the PEM file holds no CERTIFICATE block")
		case len(certs) > 1:
			return nil, Plain(ErrInvalid, fmt.Sprintf("the PEM file holds %d certificates; give the one CA certificate", len(certs)))
		case len(bytes.TrimSpace(rest)) != 0:
			return nil, Plain(ErrInvalid, "the PEM file has data after its certificate")
		}
		der = certs[0]
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, Plain(ErrInvalid, "not a certificate (PEM or DER): "+err.Error())
	}
	if !cert.BasicConstraintsValid || !cert.IsCA {
		return nil, Plain(ErrInvalid, "the certificate is not a CA certificate (no basic constraints CA:TRUE)")
	}
	return bytes.Clone(der), nil
}
