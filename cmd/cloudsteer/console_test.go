package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudsteer/cloudsteer/controlplane/api"
	"github.com/cloudsteer/cloudsteer/controlplane/api/apitest"
	"github.com/cloudsteer/cloudsteer/controlplane/model"
)

// consoleFake is apitest.Fake with the console's root-only side.
type consoleFake struct {
	*apitest.Fake
	mu     sync.Mutex
	admin  bool
	resets int
}

func (f *consoleFake) ConsoleInfo(context.Context) (api.ConsoleInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	i := api.ConsoleInfo{Enabled: true, URLs: []string{"https://192.0.2.1/", "https://[2001:db8::1]/"},
		Fingerprint: "AB:CD:EF", CertificateExpires: t0.Add(48 * time.Hour), AdminSetUp: f.admin}
	if f.admin {
		i.User = "office-admin"
	}
	return i, nil
}

func (f *consoleFake) ConsoleSetupLink(context.Context) (api.SetupLink, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.admin {
		return api.SetupLink{}, model.Plain(model.ErrConflict, "the console admin is already set up")
	}
	return api.SetupLink{URL: "https://192.0.2.1/setup?token=first", Expires: t0.Add(24 * time.Hour)}, nil
}

func (f *consoleFake) ConsoleResetAdmin(context.Context) (api.SetupLink, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.admin = false
	f.resets++
	return api.SetupLink{URL: "https://192.0.2.1/setup?token=again", Expires: t0.Add(24 * time.Hour)}, nil
}

func startConsoleDaemon(tb testing.TB) (*consoleFake, string) {
	tb.Helper()
	f := &consoleFake{Fake: apitest.New(func() time.Time { return t0 }), admin: true}
	srv, err := api.NewServer(f, api.Options{Version: "test"})
	if err != nil {
		tb.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "cscli")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "admin.sock")
	ln, err := api.ListenUnix(sock)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.ServeUnix(ctx, ln) }()
	tb.Cleanup(func() { cancel(); <-done })
	return f, sock
}

func TestCLIConsole(t *testing.T) {
	f, sock := startConsoleDaemon(t)
	for _, args := range [][]string{{"console"}, {"console", "info"}} {
		r := runCLIWith(t, sock, "", 0, args...)
		if r.code != exitOK || !strings.Contains(r.stdout, "https://192.0.2.1/") || !strings.Contains(r.stdout, "AB:CD:EF") ||
			!strings.Contains(r.stdout, "set up, user office-admin") {
			t.Fatalf("%v: %+v", args, r)
		}
	}
	if r := runCLIWith(t, sock, "", 0, "console", "fingerprint"); r.code != exitOK || r.stdout != "AB:CD:EF\n" {
		t.Fatalf("console fingerprint: %+v", r)
	}
	if r := runCLIWith(t, sock, "", 0, "console", "--json"); r.code != exitOK || !strings.Contains(r.stdout, `"fingerprint":"AB:CD:EF"`) {
		t.Fatalf("console --json: %+v", r)
	}
	if r := runCLIWith(t, sock, "", 0, "status"); !strings.Contains(r.stdout, "Console: https://192.0.2.1/") {
		t.Fatalf("status shows no console: %+v", r)
	}
	// An admin exists: setup-link refuses and says what to do.
	if r := runCLIWith(t, sock, "", 0, "console", "setup-link"); r.code != exitFail || !strings.Contains(r.stderr, "reset-admin") {
		t.Fatalf("setup-link with an admin: %+v", r)
	}
	// reset-admin asks first; anything but yes changes nothing.
	for _, in := range []string{"", "no\n", "y es\n"} {
		if r := runCLIWith(t, sock, in, 0, "console", "reset-admin"); r.code != exitFail || !strings.Contains(r.stderr, "Type yes") || f.resets != 0 {
			t.Fatalf("reset-admin answered %q: %+v (resets %d)", in, r, f.resets)
		}
	}
	r := runCLIWith(t, sock, "yes\n", 0, "console", "reset-admin")
	if r.code != exitOK || f.resets != 1 || !strings.Contains(r.stdout, "https://192.0.2.1/setup?token=again") {
		t.Fatalf("reset-admin yes: %+v", r)
	}
	r = runCLIWith(t, sock, "", 0, "console", "reset-admin", "--yes")
	if r.code != exitOK || f.resets != 2 || strings.Contains(r.stderr, "Type yes") {
		t.Fatalf("reset-admin --yes: %+v", r)
	}
	r = runCLIWith(t, sock, "", 0, "console", "setup-link")
	if r.code != exitOK || !strings.Contains(r.stdout, "https://192.0.2.1/setup?token=first") || !strings.Contains(r.stdout, "works once") {
		t.Fatalf("setup-link: %+v", r)
	}
	if r := runCLIWith(t, sock, "", 0, "console", "bogus"); r.code != exitConfig {
		t.Fatalf("console bogus: %+v", r)
	}
}
