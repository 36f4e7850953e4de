package main

import (
	"context"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/cloudsteer/cloudsteer/lab/servers"
)

func init() { commands["quic-probe"] = runQUICProbe }

// runQUICProbe is `cloudsteer-lab quic-probe --addr IP:PORT --name NAME
// [--timeout 3s] [--ca FILE]`: one QUIC round trip to a lab origin.
func runQUICProbe(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("quic-probe", flag.ContinueOnError)
	addr := fs.String("addr", "", "server address ip:port, e.g. 203.0.113.10:443 or [2001:db8:113::10]:443 (required)")
	name := fs.String("name", "", "TLS server name (SNI), e.g. www.example.com (required)")
	timeout := fs.Duration("timeout", 3*time.Second, "bound on the whole exchange")
	caFile := fs.String("ca", "", "PEM CA to verify the server with (default: no verification)")
	alpn := fs.String("alpn", servers.QUICALPN, "ALPN to offer")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *addr == "" || *name == "" || fs.NArg() != 0 {
		fs.Usage()
		return errors.New("usage: quic-probe --addr IP:PORT --name NAME [--timeout 3s] [--ca FILE]")
	}
	opts := servers.ProbeOptions{Addr: *addr, Name: *name, ALPN: *alpn}
	if *caFile != "" {
		pemBytes, err := os.ReadFile(*caFile)
		if err != nil {
			return fmt.Errorf("read ca: %w", err)
		}
		opts.RootCAs = x509.NewCertPool()
		if !opts.RootCAs.AppendCertsFromPEM(pemBytes) {
			return fmt.Errorf("read ca: no certificate in %s", *caFile)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	answer, err := servers.ProbeQUIC(ctx, opts)
	if err != nil {
		return err
	}
	fmt.Println(answer)
	return nil
}
