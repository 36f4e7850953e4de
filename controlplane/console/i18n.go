package console

import (
	"embed"
	"encoding/json"
	"fmt"
	"io/fs"
	"net/http"
	"path"
	"slices"
	"strings"
	"time"
)

// Languages the console speaks; the first is the fallback.
var languages = []string{"en", "ja"}

// langCookie keeps a browser's language choice for a year.
const langCookie = "cloudsteer_lang"

//go:embed locales
var localeFS embed.FS

// catalogs maps language to message key to text. Keys are dotted
// ("status.title"); texts may hold fmt verbs, filled by T's arguments.
// Every language has exactly the same keys (TestCatalogsComplete).
type catalogs map[string]map[string]string

// loadCatalogs reads locales/<lang>/*.json; each file is a flat JSON object
// of key to text, and a key defined twice in one language is an error.
func loadCatalogs() (catalogs, error) {
	cat := catalogs{}
	for _, lang := range languages {
		m := map[string]string{}
		files, err := fs.Glob(localeFS, "locales/"+lang+"/*.json")
		if err != nil {
			return nil, fmt.Errorf("load catalogs: %w", err)
		}
		for _, f := range files {
			raw, err := localeFS.ReadFile(f)
			if err != nil {
				return nil, fmt.Errorf("load catalogs: %w", err)
			}
			var part map[string]string
			if err := json.Unmarshal(raw, &part); err != nil {
				return nil, fmt.Errorf("load catalog %s: %w", f, err)
			}
			for k, v := range part {
				if _, dup := m[k]; dup {
					return nil, fmt.Errorf("load catalog %s: key %q defined twice", f, k)
				}
				m[k] = v
			}
		}
		cat[lang] = m
	}
	return cat, nil
}

// text returns key's text in lang with args filled in. A missing key shows
// as the key itself (and fails TestCatalogsComplete).
func (c catalogs) text(lang, key string, args ...any) string {
	s, ok := c[lang][key]
	if !ok {
		if s, ok = c[languages[0]][key]; !ok {
			return key
		}
	}
	if len(args) == 0 {
		return s
	}
	return fmt.Sprintf(s, args...)
}

// has reports whether key exists (in the fallback language).
func (c catalogs) has(key string) bool {
	_, ok := c[languages[0]][key]
	return ok
}

// langOf picks the request's language: the cookie, then the first
// Accept-Language entry the console speaks (by q order), then English.
func langOf(r *http.Request) string {
	if ck, err := r.Cookie(langCookie); err == nil && slices.Contains(languages, ck.Value) {
		return ck.Value
	}
	return acceptLanguage(r.Header.Get("Accept-Language"))
}

// acceptLanguage returns the supported language with the highest q in an
// Accept-Language header ("ja-JP,ja;q=0.9,en;q=0.8"), English when none.
func acceptLanguage(h string) string {
	best, bestQ := languages[0], -1.0
	for i, part := range strings.Split(h, ",") {
		if i >= 32 {
			break
		}
		tag, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		q := 1.0
		if v, ok := strings.CutPrefix(strings.TrimSpace(params), "q="); ok {
			if _, err := fmt.Sscanf(v, "%g", &q); err != nil || q < 0 || q > 1 {
				continue
			}
		}
		base, _, _ := strings.Cut(strings.ToLower(strings.TrimSpace(tag)), "-")
		if slices.Contains(languages, base) && q > bestQ && q > 0 {
			best, bestQ = base, q
		}
	}
	return best
}

// setLang stores the language chosen in the header's switch and goes back
// to the page it came from (a same-origin path only).
func (c *Console) setLang(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad form", http.StatusBadRequest)
		return
	}
	lang := r.PostForm.Get("lang")
	if !slices.Contains(languages, lang) {
		http.Error(w, "unknown language", http.StatusBadRequest)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: langCookie, Value: lang, Path: "/", MaxAge: int(365 * 24 * time.Hour / time.Second),
		Secure: true, SameSite: http.SameSiteStrictMode})
	back := r.PostForm.Get("back")
	if back == "" || back[0] != '/' || strings.HasPrefix(back, "//") || strings.ContainsAny(back, "\\\r\n") || path.Clean(back) != back {
		back = "/"
	}
	http.Redirect(w, r, back, http.StatusSeeOther)
}
