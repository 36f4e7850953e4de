package api

import (
	"net/http"

	"github.com/cloudsteer/cloudsteer/internal/hostheader"
)

// hostAllowed checks r's Host against Options.AllowHost; no check without
// one.
func (s *Server) hostAllowed(r *http.Request) bool {
	if s.opts.AllowHost == nil {
		return true
	}
	addr, name, ok := hostheader.Parse(r.Host)
	return ok && s.opts.AllowHost(addr, name)
}
