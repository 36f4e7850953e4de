package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"syscall"

	"github.com/cloudsteer/cloudsteer/controlplane/api"
)

// notRunningError says there is no daemon behind the socket.
type notRunningError struct{ msg string }

func (e *notRunningError) Error() string { return e.msg }

// apiError is an error answer from the daemon.
type apiError struct {
	status int
	code   string
	msg    string
}

func (e *apiError) Error() string { return e.msg }

// call sends one request to the daemon over its unix socket and returns
// the body of a 2xx answer. in, when not nil, is sent as JSON.
func (c *cli) call(ctx context.Context, method, path string, in any) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, fmt.Errorf("encode request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://cloudsteer"+api.Prefix+path, body)
	if err != nil {
		return nil, fmt.Errorf("build request: %w", err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", c.socket)
		},
		DisableKeepAlives: true,
	}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return nil, c.dialProblem(ctx, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("read answer from cloudsteer: %w", err)
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return data, nil
	}
	var e api.Error
	if json.Unmarshal(data, &e) != nil || e.Error == "" {
		return nil, &apiError{status: resp.StatusCode, msg: fmt.Sprintf("unexpected answer from cloudsteer: HTTP %d", resp.StatusCode)}
	}
	return nil, &apiError{status: resp.StatusCode, code: e.Code, msg: e.Error}
}

// dialProblem explains a failed request in the user's terms.
func (c *cli) dialProblem(ctx context.Context, err error) error {
	switch {
	case errors.Is(err, syscall.ENOENT):
		return &notRunningError{fmt.Sprintf("cloudsteer is not running (no socket at %s)", c.socket)}
	case errors.Is(err, syscall.ECONNREFUSED):
		return &notRunningError{fmt.Sprintf("cloudsteer is not running (nothing listens on %s)", c.socket)}
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM):
		return fmt.Errorf("permission denied on %s: run as root", c.socket)
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return fmt.Errorf("no answer from cloudsteer within %s", requestTimeout)
	case errors.Is(ctx.Err(), context.Canceled):
		return errors.New("interrupted")
	}
	return fmt.Errorf("talk to cloudsteer on %s: %w", c.socket, err)
}

// get calls the daemon and decodes a 2xx answer into out; it returns the
// raw JSON too, for --json.
func get[T any](ctx context.Context, c *cli, method, path string, in any) (T, []byte, error) {
	var out T
	data, err := c.call(ctx, method, path, in)
	if err != nil {
		return out, nil, err
	}
	if err := json.Unmarshal(data, &out); err != nil {
		return out, nil, fmt.Errorf("unexpected answer from cloudsteer: %w", err)
	}
	return out, data, nil
}
