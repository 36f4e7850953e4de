package browser

import (
	"strings"
	"testing"
)

func TestTailBuffer(t *testing.T) {
	tb := &tailBuffer{max: 10}
	tb.Write([]byte("0123456789"))
	tb.Write([]byte("abc"))
	if got := tb.String(); got != "3456789abc" {
		t.Errorf("tail = %q, want the last 10 bytes", got)
	}
	tb.Write([]byte(strings.Repeat("x", 25)))
	if got := tb.String(); got != strings.Repeat("x", 10) {
		t.Errorf("tail after a long write = %q", got)
	}
}
