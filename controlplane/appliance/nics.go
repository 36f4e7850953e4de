package appliance

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// NIC is an Ethernet interface as sysfs shows it.
type NIC struct {
	Name string
	MAC  net.HardwareAddr
	// Index is the kernel's ifindex.
	Index int
	// Device is the interface's device path under /sys/devices (the PCI
	// or USB bus path); empty for virtual interfaces.
	Device string
	// DevPort tells apart the ports of one device.
	DevPort int
}

// Physical reports whether the NIC is hardware (it has a bus device).
func (n NIC) Physical() bool { return n.Device != "" }

// ListNICs returns the Ethernet interfaces under sysfs/class/net (sysfs
// is normally /sys) except loopback and wireless ones: physical NICs
// first, in bus order (device path, then port), then virtual ones by
// name. The order never depends on the names udev gives.
func ListNICs(sysfs string) ([]NIC, error) {
	dir := filepath.Join(sysfs, "class", "net")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("list nics: %w", err)
	}
	var nics []NIC
	for _, e := range ents {
		d := filepath.Join(dir, e.Name())
		if typ := readTrim(filepath.Join(d, "type")); typ != "1" { // ARPHRD_ETHER
			continue
		}
		if exists(filepath.Join(d, "wireless")) || exists(filepath.Join(d, "phy80211")) {
			continue
		}
		n := NIC{Name: e.Name()}
		n.MAC, _ = net.ParseMAC(readTrim(filepath.Join(d, "address")))
		n.Index, _ = strconv.Atoi(readTrim(filepath.Join(d, "ifindex")))
		n.DevPort, _ = strconv.Atoi(readTrim(filepath.Join(d, "dev_port")))
		if t, err := os.Readlink(filepath.Join(d, "device")); err == nil {
			if !filepath.IsAbs(t) {
				t = filepath.Join(d, t)
			}
			n.Device = filepath.Clean(t)
			if rel, err := filepath.Rel(sysfs, n.Device); err == nil {
				n.Device = "/sys/" + rel
			}
		}
		nics = append(nics, n)
	}
	slices.SortFunc(nics, func(a, b NIC) int {
		switch {
		case a.Physical() != b.Physical():
			if a.Physical() {
				return -1
			}
			return 1
		case a.Device != b.Device:
			return strings.Compare(a.Device, b.Device)
		case a.DevPort != b.DevPort:
			return a.DevPort - b.DevPort
		}
		return strings.Compare(a.Name, b.Name)
	})
	return nics, nil
}

func readTrim(p string) string {
	b, _ := os.ReadFile(p)
	return string(bytes.TrimSpace(b))
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

// ErrNoNIC is returned when a role finds no interface.
var ErrNoNIC = errors.New("no such NIC")

// Roles are the NICs picked for the WAN and the LAN (a zero NIC when
// none), with why a role is missing.
type Roles struct {
	WAN, LAN NIC
	Problems []string
}

// PickRoles resolves the selectors against nics (ListNICs' order). A
// default role takes the first physical NIC the other role does not
// take: the WAN the first, the LAN the second. With a single NIC and
// both roles default, that NIC is the LAN (so the console is reachable
// to fix the rest) and the WAN is missing.
func PickRoles(c *Conf, nics []NIC) Roles {
	var r Roles
	find := func(s NICSelector) (NIC, bool) {
		for _, n := range nics {
			if s.Name != "" && n.Name == s.Name || s.MAC != nil && bytes.Equal(n.MAC, s.MAC) {
				return n, true
			}
		}
		return NIC{}, false
	}
	firstFree := func(taken string) (NIC, bool) {
		for _, n := range nics {
			if n.Physical() && n.Name != taken {
				return n, true
			}
		}
		return NIC{}, false
	}
	var okW, okL bool
	wanSel, lanSel := c.WAN, c.LAN
	if !wanSel.Auto() {
		if r.WAN, okW = find(wanSel); !okW {
			r.Problems = append(r.Problems, fmt.Sprintf("wan = %s: %v; using the default", wanSel, ErrNoNIC))
			wanSel = NICSelector{}
		}
	}
	if !lanSel.Auto() {
		if r.LAN, okL = find(lanSel); !okL {
			r.Problems = append(r.Problems, fmt.Sprintf("lan = %s: %v; using the default", lanSel, ErrNoNIC))
			lanSel = NICSelector{}
		}
	}
	phys := 0
	for _, n := range nics {
		if n.Physical() {
			phys++
		}
	}
	if wanSel.Auto() && lanSel.Auto() && phys == 1 {
		r.LAN, _ = firstFree("")
		r.Problems = append(r.Problems, "only one Ethernet NIC: it is the LAN; no WAN")
		return r
	}
	if wanSel.Auto() {
		if r.WAN, okW = firstFree(r.LAN.Name); !okW {
			r.Problems = append(r.Problems, "no Ethernet NIC left for the WAN")
		}
	}
	if lanSel.Auto() {
		if r.LAN, okL = firstFree(r.WAN.Name); !okL {
			r.Problems = append(r.Problems, "no Ethernet NIC left for the LAN")
		}
	}
	return r
}
