package console

import (
	"net/http"

	"github.com/cloudsteer/cloudsteer/controlplane/model"
)

// bypassData is the Bypass page's data.
type bypassData struct {
	Entries []model.BypassEntry
}

func (c *Console) bypassPage(w http.ResponseWriter, r *http.Request, p pageData) {
	p.Data = bypassData{Entries: c.b.Bypass(r.Context())}
	c.render(w, r, http.StatusOK, "bypass", p)
}
