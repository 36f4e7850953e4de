package api

import (
	"net/http"
	"slices"
)

// Routes lists "METHOD /path" for every route s serves (tests only).
func Routes(s *Server) []string {
	var out []string
	for _, rt := range s.routes {
		for m := range rt.methods {
			out = append(out, m+" "+rt.path)
		}
	}
	slices.Sort(out)
	return out
}

// UnixHandler is the handler ServeUnix serves, without the peer check
// (tests only).
func UnixHandler(s *Server) http.Handler { return s.apiHandler() }

// NetworkHandler is the handler ServeNetwork serves (tests only).
func NetworkHandler(s *Server) http.Handler { return s.networkHandler() }
