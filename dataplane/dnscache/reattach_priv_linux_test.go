package dnscache

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/cloudsteer/cloudsteer/internal/privtest"
)

// TestReattachAfterRecreate deletes the gateway's LAN veth and makes it
// again (same names and addresses, a new ifindex): the kernel took the
// answerer off with the old device, and Reattach puts it on the new one,
// which answers from the cache again.
func TestReattachAfterRecreate(t *testing.T) {
	l := newLab(t, Options{})
	mustPut(t, l.cache, cachedWire(t, "www.example.com", dns.TypeA, 0, []string{"www.example.com. 300 IN A 203.0.113.10"}, nil), time.Minute)
	if out := l.dig(t, "@"+labResolver4, "+noedns", "www.example.com", "A"); !strings.Contains(out, "203.0.113.10") {
		t.Fatalf("not answered from the kernel before the change:\n%s", out)
	}
	privtest.Run(t, l.gw, "ip", "link", "del", l.gwIf)
	if got := l.cache.Attached(); len(got) != 0 {
		t.Fatalf("with %s gone, Attached() = %v", l.gwIf, got)
	}
	for _, c := range [][]string{
		{l.gw, "ip", "link", "add", l.gwIf, "type", "veth", "peer", "name", "eth0", "netns", l.client},
		{l.gw, "ip", "addr", "add", "10.10.0.1/24", "dev", l.gwIf},
		{l.gw, "ip", "link", "set", l.gwIf, "up"},
		{l.client, "ip", "addr", "add", "10.10.0.10/24", "dev", "eth0"},
		{l.client, "ip", "link", "set", "eth0", "up"},
		{l.client, "ip", "route", "add", "default", "via", "10.10.0.1"},
	} {
		privtest.Run(t, c[0], c[1:]...)
	}
	setOffload(t, l.client, "eth0", ethtoolSTXCSUM, false)
	setOffload(t, l.client, "eth0", ethtoolSRXCSUM, false)
	setOffload(t, l.gw, l.gwIf, ethtoolSRXCSUM, false)
	// Without Reattach the fall-through server answers.
	if out := l.dig(t, "@"+labResolver4, "+noedns", "www.example.com", "A"); !strings.Contains(out, goAnswerA) {
		t.Fatalf("the new %s answered from the kernel before Reattach:\n%s", l.gwIf, out)
	}
	var got []string
	var err error
	privtest.InNetNS(t, l.gw, func() { got, err = l.cache.Reattach([]string{l.gwIf}, nil) })
	if err != nil || !slices.Equal(got, []string{l.gwIf}) || !slices.Equal(l.cache.Attached(), []string{l.gwIf}) {
		t.Fatalf("Reattach = %v, %v; Attached() = %v", got, err, l.cache.Attached())
	}
	if out := l.dig(t, "@"+labResolver4, "+noedns", "www.example.com", "A"); !strings.Contains(out, "203.0.113.10") {
		t.Fatalf("not answered from the kernel after Reattach:\n%s", out)
	}
	// Again: nothing to do.
	privtest.InNetNS(t, l.gw, func() { got, err = l.cache.Reattach([]string{l.gwIf}, nil) })
	if err != nil || len(got) != 0 || l.cache.links.Len() != 1 {
		t.Fatalf("second Reattach = %v, %v, %d links; want nothing done, 1 link", got, err, l.cache.links.Len())
	}
}
