package steer

import (
	"slices"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/cloudsteer/cloudsteer/internal/privtest"
)

// TestReattachAfterRecreate deletes and re-creates a LAN and a WAN
// interface: the kernel detaches the programs with the old devices, and
// Reattach and ReattachWAN put them on the new ones, leaving the others
// alone and skipping a name that is missing.
func TestReattachAfterRecreate(t *testing.T) {
	ns := privtest.NewNetNS(t)
	addVeth(t, ns, "vt0")
	addVeth(t, ns, "vt1")
	addVeth(t, ns, "wt0")
	s := newIn(t, ns, Config{Interfaces: []string{"vt0", "vt1"}})
	prog := programID(t, s)
	var err error
	if err = privtest.Do(ns, func() error { return s.AttachWAN([]string{"wt0"}) }); err != nil {
		t.Fatal(err)
	}
	privtest.Run(t, ns, "ip", "link", "del", "vt1")
	privtest.Run(t, ns, "ip", "link", "del", "wt0")
	if got := s.Attached(); !slices.Equal(got, []string{"vt0"}) {
		t.Fatalf("after deleting vt1, Attached() = %v", got)
	}
	// Nothing to do while they are gone.
	var lan, wan []string
	if err = privtest.Do(ns, func() (err error) { lan, err = s.Reattach([]string{"vt0", "vt1"}); return err }); err != nil || len(lan) != 0 {
		t.Fatalf("Reattach with vt1 gone = %v, %v; want nothing done", lan, err)
	}
	addVeth(t, ns, "vt1")
	addVeth(t, ns, "wt0")
	if err = privtest.Do(ns, func() (err error) { lan, err = s.Reattach([]string{"vt0", "vt1"}); return err }); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(lan, []string{"vt1"}) || !slices.Equal(s.Attached(), []string{"vt0", "vt1"}) {
		t.Fatalf("Reattach = %v, Attached() = %v; want [vt1], [vt0 vt1]", lan, s.Attached())
	}
	if ids := tcxIngress(t, ns, "vt1"); !slices.Equal(ids, []ebpf.ProgramID{prog}) {
		t.Fatalf("TCX ingress of the new vt1 = %v, want the classifier %v", ids, prog)
	}
	if ids := tcxIngress(t, ns, "vt0"); len(ids) != 1 {
		t.Fatalf("TCX ingress of vt0 = %v, want the classifier once", ids)
	}
	if err = privtest.Do(ns, func() (err error) { wan, err = s.ReattachWAN([]string{"wt0", "missing0"}); return err }); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(wan, []string{"wt0"}) || !slices.Equal(s.WANAttached(), []string{"wt0"}) {
		t.Fatalf("ReattachWAN = %v, WANAttached() = %v; want [wt0]", wan, s.WANAttached())
	}
	// The dead links were closed, not kept.
	if n := s.links.Len(); n != 2 {
		t.Fatalf("%d classifier links held, want 2", n)
	}
	if n := s.wan.Len(); n != 1 {
		t.Fatalf("%d forwarder links held, want 1", n)
	}
}
