// Package packaging holds what the Debian package installs besides the
// binary: the systemd unit, the example config and the maintainer
// scripts. The unit is embedded so that tests read the capability set
// from the very file that is shipped.
package packaging

import (
	_ "embed"
	"strings"
)

// Unit is the systemd unit, packaging/cloudsteer.service.
//
//go:embed cloudsteer.service
var Unit string

// Capabilities are the unit's AmbientCapabilities (CAP_* names): all the
// daemon needs as its non-root user.
var Capabilities = unitList("AmbientCapabilities")

// unitList returns the words of the first key= line of Unit.
func unitList(key string) []string {
	for _, line := range strings.Split(Unit, "\n") {
		if v, ok := strings.CutPrefix(line, key+"="); ok {
			return strings.Fields(v)
		}
	}
	return nil
}
