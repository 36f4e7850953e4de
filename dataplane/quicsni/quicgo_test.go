package quicsni

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
)

// captureFirstFlight has a real quic-go client dial a UDP socket on
// loopback that never answers, and returns the datagrams it sent, in
// order, until feed says it has seen enough (returns true) or 5 s pass.
func captureFirstFlight(t *testing.T, network string, tlsConf *tls.Config, conf *quic.Config, feed func([]byte) bool) [][]byte {
	t.Helper()
	host := "127.0.0.1"
	if network == "udp6" {
		host = "::1"
	}
	ln, err := net.ListenUDP(network, &net.UDPAddr{IP: net.ParseIP(host)})
	if err != nil {
		t.Fatalf("listen %s: %v", network, err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := quic.DialAddr(ctx, ln.LocalAddr().String(), tlsConf, conf)
		done <- err
	}()
	defer func() {
		cancel()
		<-done
	}()
	var got [][]byte
	buf := make([]byte, 65536)
	for {
		ln.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, _, err := ln.ReadFromUDP(buf)
		if err != nil {
			t.Fatalf("read the client's datagram %d: %v", len(got)+1, err)
		}
		d := slices.Clone(buf[:n])
		got = append(got, d)
		if feed(d) {
			return got
		}
	}
}

func manyALPN(n, size int) []string {
	var out []string
	for i := range n {
		out = append(out, fmt.Sprintf("p%03d-%s", i, strings.Repeat("x", size-5)))
	}
	return out
}

// TestQUICGoClient reads the SNI of real quic-go Initials: v1 and v2,
// IPv4 and IPv6, Go's default post-quantum key share (the hello spans two
// Initials), a hello of many Initials, and quic-go's smallest packets.
func TestQUICGoClient(t *testing.T) {
	tests := []struct {
		name        string
		network     string
		sni         string
		want        string
		alpn        []string
		conf        quic.Config
		curves      []tls.CurveID
		minPackets  int
		wantVersion Version
	}{
		{name: "v1 ipv4", network: "udp4", sni: "www.Example.com", want: "www.example.com", alpn: []string{"h3"}, minPackets: 2, wantVersion: Version1},
		{name: "v1 ipv6", network: "udp6", sni: "quic.example.net", want: "quic.example.net", alpn: []string{"h3"}, minPackets: 2, wantVersion: Version1},
		{name: "v2", network: "udp4", sni: "v2.example.org", want: "v2.example.org", alpn: []string{"h3"},
			conf: quic.Config{Versions: []quic.Version{quic.Version2}}, minPackets: 2, wantVersion: Version2},
		{name: "v2 ipv6", network: "udp6", sni: "v2.example.org", want: "v2.example.org", alpn: []string{"h3"},
			conf: quic.Config{Versions: []quic.Version{quic.Version2}}, minPackets: 2, wantVersion: Version2},
		{name: "classic key share, one initial", network: "udp4", sni: "small.example", want: "small.example", alpn: []string{"h3"},
			curves: []tls.CurveID{tls.X25519}, minPackets: 1, wantVersion: Version1},
		{name: "40 alpns of 120 bytes", network: "udp4", sni: "big.example", want: "big.example", alpn: manyALPN(40, 120),
			minPackets: 5, wantVersion: Version1},
		{name: "1200-byte packets", network: "udp6", sni: "mtu.example", want: "mtu.example", alpn: manyALPN(10, 200),
			conf: quic.Config{InitialPacketSize: 1200}, minPackets: 3, wantVersion: Version1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tlsConf := &tls.Config{ServerName: tc.sni, NextProtos: tc.alpn, CurvePreferences: tc.curves}
			conf := tc.conf
			conf.HandshakeIdleTimeout = 5 * time.Second
			r := NewReassembler(Limits{})
			var hello *Hello
			var ferr error
			dgrams := captureFirstFlight(t, tc.network, tlsConf, &conf, func(d []byte) bool {
				hello, ferr = r.Feed(d)
				return !errors.Is(ferr, ErrIncomplete)
			})
			if ferr != nil {
				t.Fatalf("after %d datagrams: %v", len(dgrams), ferr)
			}
			if hello.ServerName != tc.want || hello.RawServerName != tc.sni || !slices.Equal(hello.ALPN, tc.alpn) || hello.Version != tc.wantVersion {
				t.Fatalf("hello: name %q raw %q alpn %d version %v", hello.ServerName, hello.RawServerName, len(hello.ALPN), hello.Version)
			}
			if hello.Packets < tc.minPackets || hello.Datagrams != len(dgrams) {
				t.Fatalf("hello took %d packets in %d datagrams (%d captured), want at least %d packets", hello.Packets, hello.Datagrams, len(dgrams), tc.minPackets)
			}
			t.Logf("%d-byte hello in %d packets, %d datagrams (%v bytes)", hello.Length, hello.Packets, hello.Datagrams, lens(dgrams))

			// The same packets coalesced into one datagram (as a client
			// may send them) give the same hello in one Feed.
			if len(dgrams) > 1 {
				h, err := NewReassembler(Limits{}).Feed(bytes.Join(dgrams, nil))
				if err != nil || h.ServerName != tc.want || h.Packets != hello.Packets || h.Datagrams != 1 {
					t.Fatalf("coalesced: %+v, %v", h, err)
				}
				// Out of order: the last datagram first.
				r := NewReassembler(Limits{})
				order := append([][]byte{dgrams[len(dgrams)-1]}, dgrams[:len(dgrams)-1]...)
				for i, d := range order {
					h, err = r.Feed(d)
					if i < len(order)-1 && !errors.Is(err, ErrIncomplete) {
						t.Fatalf("reordered, datagram %d: %v", i, err)
					}
				}
				if err != nil || h.ServerName != tc.want {
					t.Fatalf("reordered: %+v, %v", h, err)
				}
			}
		})
	}
}

func lens(ds [][]byte) []int {
	var out []int
	for _, d := range ds {
		out = append(out, len(d))
	}
	return out
}
