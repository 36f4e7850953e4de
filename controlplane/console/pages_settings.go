package console

import (
	"net/http"

	"github.com/cloudsteer/cloudsteer/controlplane/api"
)

// settingsData is the Settings page's data.
type settingsData struct {
	Code       string // masked
	CodeSource string
	Settings   api.Settings
	Info       Info
}

func (c *Console) settingsPage(w http.ResponseWriter, r *http.Request, p pageData) {
	ctx := r.Context()
	st := c.b.Status(ctx)
	p.Data = settingsData{Code: st.Code, CodeSource: st.CodeSource, Settings: c.b.Settings(ctx), Info: c.b.Info(ctx)}
	c.render(w, r, http.StatusOK, "settings", p)
}
