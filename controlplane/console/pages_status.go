package console

import (
	"net/http"
	"slices"
	"time"

	"github.com/cloudsteer/cloudsteer/controlplane/model"
)

// reasonCodes are the status reason codes the catalogs translate
// (reason.<code>.title and reason.<code>.fix); another code shows the
// gateway's own message under a generic title.
var reasonCodes = []string{
	model.ReasonNoCode,
	model.ReasonProxyUnreachable,
	model.ReasonProxyRefusesCode,
	model.ReasonDNSFailing,
	model.ReasonNotAttached,
	model.ReasonNoFirewallTable,
	model.ReasonFirewallBlocks,
	model.ReasonPaused,
	model.ReasonHealthNotYetProbed,
	model.ReasonProxyFailedOpen,
	model.ReasonProxyFailedClosed,
	model.ReasonProxyOnBackup,
	model.ReasonDNSOnBackup,
	model.ReasonQUICByNameUnavailable,
}

// reasonView is one reason as the pages show it.
type reasonView struct {
	Code    string
	Known   bool   // the catalogs have reason.<Code>.*
	Message string // the gateway's own text (English), shown as detail
}

func reasonViews(rs []model.Reason) []reasonView {
	out := make([]reasonView, 0, len(rs))
	for _, r := range rs {
		out = append(out, reasonView{Code: r.Code, Known: slices.Contains(reasonCodes, r.Code), Message: r.Message})
	}
	return out
}

// statusData is the Status page's data.
type statusData struct {
	State      string
	PauseUntil time.Time // zero while paused: until resumed
	Reasons    []reasonView
	Counters   Counters
	Report     model.Report
	Reported   bool
	Image      *model.ImageStatus // the appliance image; nil off it
}

func (c *Console) statusPage(w http.ResponseWriter, r *http.Request, p pageData) {
	ctx := r.Context()
	st := c.b.Status(ctx)
	rep, ok := c.b.LastReport(ctx)
	p.Data = statusData{
		State:      string(st.State),
		PauseUntil: st.PauseUntil,
		Reasons:    reasonViews(st.Reasons),
		Counters:   c.b.LastHour(ctx),
		Report:     rep,
		Reported:   ok,
		Image:      st.Image,
	}
	c.render(w, r, http.StatusOK, "status", p)
}
