package daemon

import (
	"context"
	"errors"
	"net"
	"testing"

	"github.com/vishvananda/netlink"
)

// TestLANListenersRefresh checks that a LAN interface's listeners are
// opened again exactly when its ifindex changes, the old ones closed and
// their serve context ended first, and that nothing is opened after
// closeAll.
func TestLANListenersRefresh(t *testing.T) {
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		t.Skip("no lo:", err)
	}
	var opened, closed int
	var ctxs []context.Context
	fail := false
	open := func(ctx context.Context, dev string) ([]func() error, error) {
		if dev != "lo" {
			t.Errorf("opened on %q", dev)
		}
		if fail {
			return nil, errors.New("bind failed")
		}
		opened++
		ctxs = append(ctxs, ctx)
		return []func() error{func() error { closed++; return nil }}, nil
	}
	l := newLANListeners(context.Background())
	if err := l.add("lo", open); err != nil {
		t.Fatal(err)
	}
	if opened != 1 || l.boundTo("lo") != lo.Index {
		t.Fatalf("after add: opened %d, bound to %d; want 1, %d", opened, l.boundTo("lo"), lo.Index)
	}
	if did, err := l.refresh("lo", lo.Index); did || err != nil {
		t.Fatalf("refresh with the same ifindex = %v, %v; want nothing done", did, err)
	}
	if did, err := l.refresh("lo", 999); !did || err != nil {
		t.Fatalf("refresh with a new ifindex = %v, %v", did, err)
	}
	if opened != 2 || closed != 1 || ctxs[0].Err() == nil || ctxs[1].Err() != nil || l.boundTo("lo") != 999 {
		t.Fatalf("after a new ifindex: opened %d, closed %d, old ctx %v, new ctx %v, bound to %d",
			opened, closed, ctxs[0].Err(), ctxs[1].Err(), l.boundTo("lo"))
	}
	// Gone: closed, nothing opened.
	if did, err := l.refresh("lo", 0); !did || err != nil || opened != 2 || closed != 2 || l.boundTo("lo") != 0 {
		t.Fatalf("refresh when gone = %v, %v; opened %d, closed %d", did, err, opened, closed)
	}
	// Back, but binding fails: tried again at the next refresh.
	fail = true
	if _, err := l.refresh("lo", 1000); err == nil || l.boundTo("lo") != 0 {
		t.Fatalf("failing refresh = %v, bound to %d", err, l.boundTo("lo"))
	}
	fail = false
	if did, err := l.refresh("lo", 1000); !did || err != nil || opened != 3 || l.boundTo("lo") != 1000 {
		t.Fatalf("retried refresh = %v, %v; opened %d, bound to %d", did, err, opened, l.boundTo("lo"))
	}
	if err := l.closeAll(); err != nil || closed != 3 || ctxs[2].Err() == nil {
		t.Fatalf("closeAll = %v; closed %d, ctx %v", err, closed, ctxs[2].Err())
	}
	if did, _ := l.refresh("lo", 1001); did || opened != 3 {
		t.Fatal("refresh after closeAll opened listeners")
	}
}

func TestIsDefaultRoute(t *testing.T) {
	_, def4, _ := net.ParseCIDR("0.0.0.0/0")
	_, sub, _ := net.ParseCIDR("10.0.0.0/8")
	for _, tc := range []struct {
		dst   *net.IPNet
		table int
		want  bool
	}{
		{nil, 0, true}, {nil, 254, true}, {def4, 254, true}, {sub, 254, false}, {nil, 100, false},
	} {
		if got := isDefaultRoute(netlinkRoute(tc.dst, tc.table)); got != tc.want {
			t.Errorf("isDefaultRoute(%v, table %d) = %v, want %v", tc.dst, tc.table, got, tc.want)
		}
	}
}

func netlinkRoute(dst *net.IPNet, table int) netlink.Route {
	return netlink.Route{Dst: dst, Table: table}
}
