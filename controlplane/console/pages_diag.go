package console

import (
	"net/http"
	"slices"

	"github.com/cloudsteer/cloudsteer/controlplane/model"
)

// checkNames are the quick test's four checks, in the manual's order; the
// catalogs name each (diag.check.<name>).
var checkNames = []string{"install", "network", "components", "settings"}

// checkView is one check row: Ran is false before any test.
type checkView struct {
	Name  string
	Known bool
	Ran   bool
	model.Check
}

// diagData is the Diagnostics page's data.
type diagData struct {
	Reported bool
	Report   model.Report
	Checks   []checkView
	State    string
	Reasons  []reasonView
}

func (c *Console) diagnosticsPage(w http.ResponseWriter, r *http.Request, p pageData) {
	ctx := r.Context()
	rep, ok := c.b.LastReport(ctx)
	st := c.b.Status(ctx)
	d := diagData{Reported: ok, Report: rep, State: string(st.State), Reasons: reasonViews(st.Reasons)}
	for _, n := range checkNames {
		v := checkView{Name: n, Known: true}
		if i := slices.IndexFunc(rep.Checks, func(ch model.Check) bool { return ch.Name == n }); ok && i >= 0 {
			v.Ran, v.Check = true, rep.Checks[i]
		}
		d.Checks = append(d.Checks, v)
	}
	for _, ch := range rep.Checks {
		if !slices.Contains(checkNames, ch.Name) {
			d.Checks = append(d.Checks, checkView{Name: ch.Name, Ran: true, Check: ch})
		}
	}
	p.Data = d
	c.render(w, r, http.StatusOK, "diagnostics", p)
}
