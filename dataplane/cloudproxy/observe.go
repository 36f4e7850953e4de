package cloudproxy

import "time"

// observe reports one attempt to reach the proxy to Config.OnConnect:
// answered is the time until the proxy's answer head was read (a CONNECT
// answered, refusals included), or zero to measure up to now (a
// DialProxy, or a Connect that ended before any answer). err is the
// attempt's outcome: nil, a *RefusedError, or a dial, TLS or timeout error.
func (c *Client) observe(start time.Time, answered time.Duration, err error) {
	if c.onConnect == nil {
		return
	}
	if answered <= 0 {
		answered = time.Since(start)
	}
	c.onConnect(answered, err)
}
