// Package browser drives a headless chromium for cloudsteer's browser tests:
// it starts e2e/browser/driver.mjs (playwright-core on Node.js, with
// Debian's chromium), optionally inside a network namespace, so the browser
// is a host of the lab (the LAN client), and talks to it over a JSON-lines
// RPC on the driver's stdin and stdout. Each method takes a context; its
// deadline (capped by Options.Timeout) is also Playwright's timeout, so a
// failure carries Playwright's own message.
//
// The browser reaches nothing the page does not ask for (no background
// networking, no proxy) and accepts no certificate errors but for the
// servers whose SPKI hash Options.SPKIPins names (see SPKIHash).
package browser

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// Viewport sizes in CSS pixels.
var (
	Desktop = Viewport{Width: 1280, Height: 800}
	Phone   = Viewport{Width: 375, Height: 812}
)

// Viewport is a page size in CSS pixels.
type Viewport struct{ Width, Height int }

// Options say how to start the browser.
type Options struct {
	// NetNS runs the driver and chromium inside this network namespace
	// (`ip netns exec NetNS node driver.mjs`); empty: the caller's.
	NetNS string
	// DriverDir holds driver.mjs and its node_modules; empty: the
	// CLOUDSTEER_BROWSER_DRIVER environment variable, else e2e/browser
	// of the module the working directory is in.
	DriverDir string
	// Node is the Node.js binary; empty: "node" from PATH.
	Node string
	// Chromium is the browser binary; empty: the CLOUDSTEER_CHROMIUM
	// environment variable, else /usr/bin/chromium.
	Chromium string
	// Locale is the browser's language (en-US, ja-JP); it also sets the
	// Accept-Language header. Empty: chromium's default.
	Locale string
	// Viewport is the page size; zero: Desktop.
	Viewport Viewport
	// Mobile makes the page a phone's (touch, the meta viewport honoured).
	Mobile bool
	// SPKIPins are the base64 SHA-256 hashes of the server certificates'
	// public keys (SPKIHash) the browser accepts without a trusted chain.
	// Every other certificate error still fails.
	SPKIPins []string
	// Timeout caps each command; zero: 10s.
	Timeout time.Duration
	// Log is for the package's own messages (never a command's
	// arguments); nil: slog.Default. The driver's stderr is kept for
	// Stderr.
	Log *slog.Logger
}

// Browser is one running driver with one page. Its methods may be called
// from several goroutines; the driver runs the commands in order.
type Browser struct {
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	timeout time.Duration
	log     *slog.Logger
	version string

	wmu sync.Mutex // serialises writes to stdin

	mu      sync.Mutex
	nextID  int64
	pending map[int64]chan reply
	dead    error         // why the driver is gone, once it is
	done    chan struct{} // closed when the driver's stdout ended
	waited  chan struct{} // closed when the process was reaped
	waitErr error
	stderr  *tailBuffer
}

// reply is one answer line of the driver.
type reply struct {
	ID    int64           `json:"id"`
	OK    bool            `json:"ok"`
	Value json.RawMessage `json:"value"`
	Error string          `json:"error"`
}

// DefaultChromium is the browser binary Debian's chromium package installs.
const DefaultChromium = "/usr/bin/chromium"

// Start launches the driver and waits until chromium is up.
func Start(ctx context.Context, o Options) (*Browser, error) {
	dir, err := driverDir(o.DriverDir)
	if err != nil {
		return nil, err
	}
	node := o.Node
	if node == "" {
		node = "node"
	}
	chromium := o.Chromium
	if chromium == "" {
		chromium = os.Getenv("CLOUDSTEER_CHROMIUM")
	}
	if chromium == "" {
		chromium = DefaultChromium
	}
	if o.Viewport == (Viewport{}) {
		o.Viewport = Desktop
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	log := o.Log
	if log == nil {
		log = slog.Default()
	}
	log = log.With("component", "browser")

	args := []string{node, filepath.Join(dir, "driver.mjs"),
		"--executable-path", chromium,
		"--viewport", fmt.Sprintf("%dx%d", o.Viewport.Width, o.Viewport.Height),
		"--timeout", strconv.FormatInt(o.Timeout.Milliseconds(), 10)}
	if o.Locale != "" {
		args = append(args, "--locale", o.Locale)
	}
	if o.Mobile {
		args = append(args, "--mobile")
	}
	for _, p := range o.SPKIPins {
		args = append(args, "--spki-pin", p)
	}
	if o.NetNS != "" {
		args = append([]string{"ip", "netns", "exec", o.NetNS}, args...)
	}
	// chromium's crash handler and caches write under HOME: a directory
	// of the browser's own, removed by Close.
	home, err := os.MkdirTemp("", "cloudsteer-browser-home")
	if err != nil {
		return nil, fmt.Errorf("start browser driver: %w", err)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "HOME="+home, "XDG_CONFIG_HOME="+filepath.Join(home, ".config"),
		"XDG_CACHE_HOME="+filepath.Join(home, ".cache"))
	// A process group of its own, so Close can end chromium with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		os.RemoveAll(home)
		return nil, fmt.Errorf("start browser driver: %w", err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		os.RemoveAll(home)
		return nil, fmt.Errorf("start browser driver: %w", err)
	}
	b := &Browser{
		cmd:     cmd,
		stdin:   stdin,
		timeout: o.Timeout,
		log:     log,
		pending: map[int64]chan reply{},
		done:    make(chan struct{}),
		waited:  make(chan struct{}),
		stderr:  &tailBuffer{max: 16 << 10},
	}
	cmd.Stderr = b.stderr
	if err := cmd.Start(); err != nil {
		os.RemoveAll(home)
		return nil, fmt.Errorf("start browser driver: %w", err)
	}
	ready := make(chan reply, 1)
	b.pending[0] = ready
	go b.readLoop(stdout)
	go func() {
		b.waitErr = cmd.Wait()
		close(b.waited)
		// Late crash-handler writes may race this; a leftover temp
		// directory is harmless.
		os.RemoveAll(home)
	}()

	wait := 60 * time.Second
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case r := <-ready:
		if !r.OK {
			b.kill()
			return nil, fmt.Errorf("start browser: %s", r.Error)
		}
		var v struct {
			Version string `json:"version"`
		}
		_ = json.Unmarshal(r.Value, &v)
		b.version = v.Version
	case <-b.done:
		b.kill()
		return nil, fmt.Errorf("start browser: driver exited: %v: %s", b.exitErr(), b.stderr.String())
	case <-timer.C:
		b.kill()
		return nil, fmt.Errorf("start browser: not up after %s: %s", wait, b.stderr.String())
	case <-ctx.Done():
		b.kill()
		return nil, fmt.Errorf("start browser: %w", ctx.Err())
	}
	log.Debug("browser up", "version", b.version, "netns", o.NetNS, "locale", o.Locale,
		"width", o.Viewport.Width, "height", o.Viewport.Height)
	return b, nil
}

// Version returns chromium's version.
func (b *Browser) Version() string { return b.version }

// Stderr returns the last 16 kB the driver wrote to its stderr (chromium's
// and Node's messages), for a failing test's log.
func (b *Browser) Stderr() string { return b.stderr.String() }

// readLoop hands each answer line to the command waiting for it.
func (b *Browser) readLoop(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	for sc.Scan() {
		var rep reply
		if err := json.Unmarshal(sc.Bytes(), &rep); err != nil {
			b.log.Warn("browser driver: bad answer line", "err", err)
			continue
		}
		b.mu.Lock()
		ch := b.pending[rep.ID]
		delete(b.pending, rep.ID)
		b.mu.Unlock()
		if ch != nil {
			ch <- rep
		}
	}
	b.mu.Lock()
	b.dead = errors.New("browser driver exited")
	b.mu.Unlock()
	close(b.done)
}

// call sends one command with the default timeout and decodes its value
// into out (when not nil).
func (b *Browser) call(ctx context.Context, cmd string, params map[string]any, out any) error {
	return b.do(ctx, b.timeout, cmd, params, out)
}

// do is call with timeout (zero: the default) in place of the default;
// the context's deadline still caps it.
func (b *Browser) do(ctx context.Context, timeout time.Duration, cmd string, params map[string]any, out any) error {
	if timeout <= 0 {
		timeout = b.timeout
	}
	if dl, ok := ctx.Deadline(); ok {
		// Leave Playwright a little less than the context so its own
		// message, not ours, reports a timeout.
		if left := time.Until(dl) - 200*time.Millisecond; left < timeout {
			timeout = max(left, 50*time.Millisecond)
		}
	}
	msg := map[string]any{"cmd": cmd, "timeout": timeout.Milliseconds()}
	for k, v := range params {
		msg[k] = v
	}
	ch := make(chan reply, 1)
	b.mu.Lock()
	if b.dead != nil {
		b.mu.Unlock()
		return fmt.Errorf("browser %s: %w", cmd, b.dead)
	}
	b.nextID++
	id := b.nextID
	b.pending[id] = ch
	b.mu.Unlock()
	msg["id"] = id
	line, err := json.Marshal(msg)
	if err != nil {
		return fmt.Errorf("browser %s: encode: %w", cmd, err)
	}
	b.wmu.Lock()
	_, err = b.stdin.Write(append(line, '\n'))
	b.wmu.Unlock()
	if err != nil {
		b.forget(id)
		return fmt.Errorf("browser %s: write to driver: %w", cmd, err)
	}
	// The driver answers every command by its own timeout; the margin
	// covers a stuck driver.
	guard := time.NewTimer(timeout + 5*time.Second)
	defer guard.Stop()
	select {
	case r := <-ch:
		if !r.OK {
			return fmt.Errorf("browser %s: %s", cmd, r.Error)
		}
		if out != nil {
			if err := json.Unmarshal(r.Value, out); err != nil {
				return fmt.Errorf("browser %s: decode %s: %w", cmd, r.Value, err)
			}
		}
		return nil
	case <-ctx.Done():
		b.forget(id)
		return fmt.Errorf("browser %s: %w", cmd, ctx.Err())
	case <-guard.C:
		b.forget(id)
		return fmt.Errorf("browser %s: no answer from the driver after %s", cmd, timeout+5*time.Second)
	case <-b.done:
		return fmt.Errorf("browser %s: driver exited: %v: %s", cmd, b.exitErr(), b.stderr.String())
	}
}

func (b *Browser) forget(id int64) {
	b.mu.Lock()
	delete(b.pending, id)
	b.mu.Unlock()
}

// exitErr returns the driver's exit status once it was reaped (briefly
// waiting for it), or nil.
func (b *Browser) exitErr() error {
	select {
	case <-b.waited:
		return b.waitErr
	case <-time.After(2 * time.Second):
		return nil
	}
}

// Close closes the browser and ends the driver: gracefully first, then
// by signals to its process group.
func (b *Browser) Close() error {
	b.mu.Lock()
	dead := b.dead != nil
	b.mu.Unlock()
	var err error
	if !dead {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err = b.call(ctx, "close", nil, nil)
		cancel()
	}
	b.stdin.Close()
	select {
	case <-b.waited:
	case <-time.After(5 * time.Second):
		b.kill()
	}
	if err != nil {
		return fmt.Errorf("close browser: %w", err)
	}
	return nil
}

// kill ends the driver's process group (node and the chromium it started,
// unless chromium made a group of its own): SIGTERM, then SIGKILL.
func (b *Browser) kill() {
	pid := b.cmd.Process.Pid
	_ = syscall.Kill(-pid, syscall.SIGTERM)
	select {
	case <-b.waited:
		return
	case <-time.After(3 * time.Second):
	}
	_ = syscall.Kill(-pid, syscall.SIGKILL)
	<-b.waited
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf bytes.Buffer
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf.Write(p)
	if over := t.buf.Len() - t.max; over > 0 {
		t.buf.Next(over)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.buf.String()
}
