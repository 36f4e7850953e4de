package api_test

import (
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/cloudsteer/cloudsteer/controlplane/api"
	"github.com/cloudsteer/cloudsteer/controlplane/api/apitest"
	"github.com/cloudsteer/cloudsteer/controlplane/model"
)

const openapiFile = "../../docs/openapi.yaml"

// loadSpec reads docs/openapi.yaml as generic YAML.
func loadSpec(tb testing.TB) map[string]any {
	tb.Helper()
	b, err := os.ReadFile(openapiFile)
	if err != nil {
		tb.Fatal(err)
	}
	var spec map[string]any
	if err := yaml.Unmarshal(b, &spec); err != nil {
		tb.Fatalf("parse %s: %v", openapiFile, err)
	}
	return spec
}

func m(tb testing.TB, v any, what string) map[string]any {
	tb.Helper()
	mm, ok := v.(map[string]any)
	if !ok {
		tb.Fatalf("%s: not a mapping (%T)", what, v)
	}
	return mm
}

var httpMethods = []string{"get", "put", "post", "delete", "options", "head", "patch", "trace"}

// TestOpenAPIRoutes checks that every route the server serves is
// documented and every documented operation is served.
func TestOpenAPIRoutes(t *testing.T) {
	spec := loadSpec(t)
	if v, _ := spec["openapi"].(string); !strings.HasPrefix(v, "3.0") {
		t.Errorf("openapi version %q, want 3.0.x", v)
	}
	var documented []string
	opIDs := map[string]bool{}
	for p, item := range m(t, spec["paths"], "paths") {
		for meth, op := range m(t, item, p) {
			if !slices.Contains(httpMethods, meth) {
				continue
			}
			key := strings.ToUpper(meth) + " " + p
			documented = append(documented, key)
			o := m(t, op, key)
			id, _ := o["operationId"].(string)
			if id == "" || opIDs[id] {
				t.Errorf("%s: operationId %q missing or repeated", key, id)
			}
			opIDs[id] = true
			resp := m(t, o["responses"], key+" responses")
			var ok bool
			for code := range resp {
				ok = ok || strings.HasPrefix(code, "2")
			}
			if !ok {
				t.Errorf("%s documents no 2xx answer", key)
			}
			// Every API operation can answer these (auth, method, body checks).
			for _, code := range []string{"400", "401", "405", "413", "415"} {
				if strings.HasPrefix(p, api.Prefix) && resp[code] == nil {
					t.Errorf("%s does not document %s", key, code)
				}
			}
		}
	}
	srv, err := api.NewServer(apitest.New(nil), api.Options{})
	if err != nil {
		t.Fatal(err)
	}
	served := append(api.Routes(srv), "GET /metrics")
	slices.Sort(served)
	slices.Sort(documented)
	for _, r := range served {
		if !slices.Contains(documented, r) {
			t.Errorf("served but not documented: %s", r)
		}
	}
	for _, d := range documented {
		if !slices.Contains(served, d) {
			t.Errorf("documented but not served: %s", d)
		}
	}
	if len(served) < 16 {
		t.Errorf("only %d routes served: %v", len(served), served)
	}
}

// TestOpenAPIRefs checks that every $ref points at something.
func TestOpenAPIRefs(t *testing.T) {
	spec := loadSpec(t)
	var walk func(v any, at string)
	n := 0
	walk = func(v any, at string) {
		switch x := v.(type) {
		case map[string]any:
			for k, c := range x {
				if k == "$ref" {
					n++
					ref, _ := c.(string)
					if !resolves(spec, ref) {
						t.Errorf("%s: $ref %q does not resolve", at, ref)
					}
					continue
				}
				walk(c, at+"/"+k)
			}
		case []any:
			for _, c := range x {
				walk(c, at)
			}
		}
	}
	walk(spec, "")
	if n == 0 {
		t.Fatal("no $ref found")
	}
}

func resolves(spec map[string]any, ref string) bool {
	rest, ok := strings.CutPrefix(ref, "#/")
	if !ok {
		return false
	}
	var cur any = spec
	for _, part := range strings.Split(rest, "/") {
		mm, ok := cur.(map[string]any)
		if !ok {
			return false
		}
		if cur, ok = mm[part]; !ok {
			return false
		}
	}
	return cur != nil
}

// TestOpenAPISchemas checks that each schema's properties are exactly the
// JSON fields of the Go type it describes, and that required fields exist.
func TestOpenAPISchemas(t *testing.T) {
	spec := loadSpec(t)
	schemas := m(t, m(t, spec["components"], "components")["schemas"], "schemas")
	types := map[string]any{
		"Error":             api.Error{},
		"Reason":            model.Reason{},
		"Status":            model.Status{},
		"BypassEntry":       model.BypassEntry{},
		"BypassList":        api.BypassList{},
		"AddBypassRequest":  api.AddBypassRequest{},
		"SetEnabledRequest": api.SetEnabledRequest{},
		"Removed":           api.Removed{},
		"PauseState":        model.PauseState{},
		"PauseRequest":      api.PauseRequest{},
		"Event":             model.Event{},
		"EventList":         api.EventList{},
		"ActivateRequest":   api.ActivateRequest{},
		"Activated":         api.Activated{},
		"Check":             model.Check{},
		"Report":            model.Report{},
		"Settings":          api.Settings{},
		"SettingsRequest":   api.SettingsRequest{},
		"ForceRequest":      api.ForceRequest{},
		"ConsoleInfo":       api.ConsoleInfo{},
		"SetupLink":         api.SetupLink{},
		"CloudProxyState":   model.CloudProxyState{},
		"DNSUpstreamState":  model.DNSUpstreamState{},
		"ImageStatus":       model.ImageStatus{},
		"SlotEntry":         model.SlotEntry{},
	}
	for name := range schemas {
		if _, ok := types[name]; !ok {
			t.Errorf("schema %s has no Go type in this test", name)
		}
	}
	for name, v := range types {
		t.Run(name, func(t *testing.T) {
			s, ok := schemas[name]
			if !ok {
				t.Fatalf("no schema %s", name)
			}
			sch := m(t, s, name)
			props := m(t, sch["properties"], name+" properties")
			var documented []string
			for p := range props {
				documented = append(documented, p)
			}
			fields := jsonFields(reflect.TypeOf(v))
			slices.Sort(documented)
			if !slices.Equal(documented, fields) {
				t.Errorf("schema properties %v, Go JSON fields %v", documented, fields)
			}
			req, _ := sch["required"].([]any)
			for _, r := range req {
				if _, ok := props[r.(string)]; !ok {
					t.Errorf("required %v is not a property", r)
				}
			}
		})
	}
}

// jsonFields lists the JSON names of a struct type's fields, sorted.
func jsonFields(t reflect.Type) []string {
	var out []string
	for f := range t.Fields() {
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out = append(out, name)
	}
	slices.Sort(out)
	return out
}

// TestOpenAPIErrorCodes checks that the documented error codes are the
// ones the server sends for each status it maps.
func TestOpenAPIErrorCodes(t *testing.T) {
	spec := loadSpec(t)
	errSchema := m(t, m(t, m(t, m(t, spec["components"], "components")["schemas"], "schemas")["Error"], "Error")["properties"], "Error properties")
	enum, _ := m(t, errSchema["code"], "code")["enum"].([]any)
	var documented []string
	for _, e := range enum {
		documented = append(documented, e.(string))
	}
	codes := []string{api.CodeInvalid, api.CodeUnauthorized, api.CodeForbidden, api.CodeNotFound, api.CodeConflict,
		api.CodeRejected, api.CodeUnavailable, api.CodeInternal, api.CodeMethodNotAllowed, api.CodeUnsupportedMedia, api.CodeTooLarge, api.CodeMisdirected, api.CodeCSRF}
	slices.Sort(codes)
	slices.Sort(documented)
	if !slices.Equal(codes, documented) {
		t.Errorf("documented codes %v, server codes %v", documented, codes)
	}
}
