package boottest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
	"sync"
	"time"
)

// Line is one line of the serial console and when the test first saw it.
type Line struct {
	At   time.Time
	Text string
}

// Console follows a VM's serial console log file (qemu's chardev
// logfile): it reads what is appended, splits it into lines (without
// carriage returns and terminal escape sequences) and lets a test wait
// for a line.
type Console struct {
	path string

	mu      sync.Mutex
	lines   []Line
	partial []byte
	changed chan struct{} // closed and replaced when lines grow

	stop chan struct{}
	done chan struct{}
}

// pollEvery is how often the log file is read.
const pollEvery = 100 * time.Millisecond

// FollowConsole starts following the file at path (it may not exist yet).
// Close stops it.
func FollowConsole(path string) *Console {
	c := &Console{path: path, changed: make(chan struct{}), stop: make(chan struct{}), done: make(chan struct{})}
	go c.follow()
	return c
}

// Close stops following after a last read.
func (c *Console) Close() {
	select {
	case <-c.stop:
	default:
		close(c.stop)
	}
	<-c.done
}

func (c *Console) follow() {
	defer close(c.done)
	var off int64
	buf := make([]byte, 64<<10)
	read := func() {
		f, err := os.Open(c.path)
		if err != nil {
			return
		}
		defer f.Close()
		for {
			n, err := f.ReadAt(buf, off)
			if n > 0 {
				off += int64(n)
				c.add(buf[:n], time.Now())
			}
			if err == io.EOF || n == 0 || err != nil {
				return
			}
		}
	}
	t := time.NewTicker(pollEvery)
	defer t.Stop()
	for {
		read()
		select {
		case <-c.stop:
			read()
			c.flush(time.Now())
			return
		case <-t.C:
		}
	}
}

// escapeRE matches terminal escape sequences (CSI and the two-byte ones)
// and other control characters but tab.
var escapeRE = regexp.MustCompile("\x1b\\[[0-9;?]*[ -/]*[@-~]|\x1b[@-Z\\\\-_]|[\x00-\x08\x0b-\x1f\x7f]")

func (c *Console) add(b []byte, at time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.partial = append(c.partial, b...)
	grew := false
	for {
		i := bytes.IndexByte(c.partial, '\n')
		if i < 0 {
			break
		}
		text := escapeRE.ReplaceAllString(string(c.partial[:i]), "")
		c.lines = append(c.lines, Line{At: at, Text: text})
		c.partial = c.partial[i+1:]
		grew = true
	}
	if grew {
		close(c.changed)
		c.changed = make(chan struct{})
	}
}

func (c *Console) flush(at time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.partial) > 0 {
		c.lines = append(c.lines, Line{At: at, Text: escapeRE.ReplaceAllString(string(c.partial), "")})
		c.partial = nil
		close(c.changed)
		c.changed = make(chan struct{})
	}
}

// Len is the number of complete lines seen so far: an index for WaitFrom.
func (c *Console) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.lines)
}

// Wait waits for a line matching re among all lines seen.
func (c *Console) Wait(ctx context.Context, re *regexp.Regexp) (Line, error) {
	return c.WaitFrom(ctx, 0, re)
}

// WaitFrom waits for a line matching re at index from or later (see Len)
// and returns it, or ctx's error.
func (c *Console) WaitFrom(ctx context.Context, from int, re *regexp.Regexp) (Line, error) {
	for {
		c.mu.Lock()
		for i := from; i < len(c.lines); i++ {
			if re.MatchString(c.lines[i].Text) {
				l := c.lines[i]
				c.mu.Unlock()
				return l, nil
			}
		}
		from = max(from, len(c.lines))
		ch := c.changed
		c.mu.Unlock()
		select {
		case <-ctx.Done():
			return Line{}, fmt.Errorf("wait for serial console line %q: %w", re, ctx.Err())
		case <-ch:
		case <-c.done:
			return Line{}, fmt.Errorf("wait for serial console line %q: console closed", re)
		}
	}
}

// Find returns the first line at index from or later matching re.
func (c *Console) Find(from int, re *regexp.Regexp) (Line, bool) {
	_, l, ok := c.FindIndex(from, re)
	return l, ok
}

// FindIndex is Find that also returns the line's index (-1 if none).
func (c *Console) FindIndex(from int, re *regexp.Regexp) (int, Line, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := max(from, 0); i < len(c.lines); i++ {
		if re.MatchString(c.lines[i].Text) {
			return i, c.lines[i], true
		}
	}
	return -1, Line{}, false
}

// Tail returns the last n lines (and a line still being written).
func (c *Console) Tail(n int) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	lines := c.lines[max(0, len(c.lines)-n):]
	var b strings.Builder
	for _, l := range lines {
		b.WriteString(l.Text)
		b.WriteByte('\n')
	}
	if len(c.partial) > 0 {
		b.WriteString(escapeRE.ReplaceAllString(string(c.partial), ""))
		b.WriteString("⏎(partial)\n")
	}
	if b.Len() == 0 {
		return "(nothing on the serial console)\n"
	}
	return b.String()
}
