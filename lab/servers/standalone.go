package servers

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"sync/atomic"
)

// StandaloneConfig is a lab cloud proxy run on its own process
// (`cloudsteer-lab proxy`), beside the lab servers, so that a test can
// kill it, make it refuse the credentials or cut it off while the origins
// and the other proxy keep running. It listens on :8080 (HTTP) and :8443
// (HTTPS) of Addrs, logs to StandaloneLogFile(Name) in Dir and writes
// StandaloneReadyFile(Name) there once it listens.
type StandaloneConfig struct {
	Dir   string       // the lab servers' directory (its CA is used)
	Name  string       // letters, digits, '-': the records' Proxy field and the file names
	Addrs []netip.Addr // addresses to listen on, assigned in this namespace
	// RefuseAll, when true, makes every request a 407 (an expired code);
	// the command flips it on SIGUSR1 and back on SIGUSR2.
	RefuseAll *atomic.Bool
	Logger    *slog.Logger
}

var standaloneNameRE = regexp.MustCompile(`^[A-Za-z0-9-]{1,32}$`)

// StandaloneLogFile is the proxy log of the standalone proxy name.
func StandaloneLogFile(name string) string { return "proxy-" + name + ".jsonl" }

// StandaloneReadyFile is the ready file of the standalone proxy name.
func StandaloneReadyFile(name string) string { return "proxy-" + name + ".ready" }

// RunStandaloneProxy serves a lab cloud proxy until ctx ends.
func RunStandaloneProxy(ctx context.Context, sc StandaloneConfig) error {
	if !standaloneNameRE.MatchString(sc.Name) || len(sc.Addrs) == 0 || sc.Dir == "" {
		return errors.New("standalone proxy: want a dir, a name (letters, digits, '-') and addresses")
	}
	if sc.RefuseAll == nil {
		sc.RefuseAll = new(atomic.Bool)
	}
	cfg := Config{Dir: sc.Dir, ProxyAddrs: sc.Addrs, Logger: sc.Logger, ProxyLabel: sc.Name, RefuseAll: sc.RefuseAll}
	if err := cfg.fill(); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	l := &Lab{cfg: cfg, log: cfg.Logger.With("component", "labproxy", "name", sc.Name), cancel: cancel}
	ready := filepath.Join(sc.Dir, StandaloneReadyFile(sc.Name))
	defer func() {
		for i := len(l.closers) - 1; i >= 0; i-- {
			_ = l.closers[i]()
		}
		l.wg.Wait()
		for _, w := range l.logs {
			_ = w.close()
		}
		_ = os.Remove(ready)
	}()
	var err error
	if l.CA, err = LoadOrCreateCA(sc.Dir); err != nil {
		return err
	}
	var ips []net.IP
	for _, a := range sc.Addrs {
		ips = append(ips, a.AsSlice())
	}
	leaf, err := l.CA.Issue([]string{ProxyName}, ips)
	if err != nil {
		return err
	}
	w, err := openJSONL(filepath.Join(sc.Dir, StandaloneLogFile(sc.Name)))
	if err != nil {
		return err
	}
	l.logs = append(l.logs, w)
	if err := l.startProxy(ctx, leaf, w); err != nil {
		return err
	}
	if err := os.WriteFile(ready, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		return fmt.Errorf("write ready file: %w", err)
	}
	l.log.Info("standalone cloud proxy ready", "addrs", sc.Addrs)
	<-ctx.Done()
	return nil
}
