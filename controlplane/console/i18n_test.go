package console

import (
	"io/fs"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestCatalogsComplete: every language has the same keys, no text is
// empty, and every key a template or the script names exists.
func TestCatalogsComplete(t *testing.T) {
	cat, err := loadCatalogs()
	if err != nil {
		t.Fatal(err)
	}
	en := cat["en"]
	if len(en) == 0 {
		t.Fatal("no English catalog")
	}
	for _, lang := range languages {
		for k, v := range cat[lang] {
			if strings.TrimSpace(v) == "" {
				t.Errorf("%s: %q is empty", lang, k)
			}
			if _, ok := en[k]; !ok {
				t.Errorf("%s has %q, English does not", lang, k)
			}
		}
		for k := range en {
			if _, ok := cat[lang][k]; !ok {
				t.Errorf("%s lacks %q", lang, k)
			}
		}
	}
	// Keys named literally in templates ({{.T "key"}}, {{$.T "key"}}).
	used := regexp.MustCompile(`\.T "([a-z0-9_.]+)"`)
	files, _ := fs.Glob(templateFS, "templates/*.html")
	for _, f := range files {
		raw, _ := templateFS.ReadFile(f)
		for _, m := range used.FindAllStringSubmatch(string(raw), -1) {
			if !cat.has(m[1]) {
				t.Errorf("%s uses %q, which no catalog has", f, m[1])
			}
		}
	}
}

// TestJapaneseDiffers: a Japanese page is not English in disguise: most
// texts differ from the English ones (names such as "cloudsteer" may not).
func TestJapaneseDiffers(t *testing.T) {
	cat, err := loadCatalogs()
	if err != nil {
		t.Fatal(err)
	}
	same := 0
	for k, v := range cat["en"] {
		if strings.HasPrefix(k, "lang.") {
			continue // each language's own name, the same in every language
		}
		if cat["ja"][k] == v {
			same++
		}
	}
	if same*10 > len(cat["en"]) {
		t.Errorf("%d of %d Japanese texts equal the English ones", same, len(cat["en"]))
	}
}

func TestAcceptLanguage(t *testing.T) {
	for h, want := range map[string]string{
		"":                        "en",
		"ja":                      "ja",
		"ja-JP,ja;q=0.9,en;q=0.8": "ja",
		"en-US,en;q=0.9,ja;q=0.8": "en",
		"fr,ja;q=0.5":             "ja",
		"fr,de":                   "en",
		"en;q=0.1,ja;q=0.2":       "ja",
		"ja;q=0,en;q=0.1":         "en",
		"ja;q=bogus,en":           "en",
		strings.Repeat("x,", 100): "en",
	} {
		if got := acceptLanguage(h); got != want {
			t.Errorf("acceptLanguage(%q) = %q, want %q", h, got, want)
		}
	}
	if !slices.Contains(languages, "ja") {
		t.Fatal("no Japanese")
	}
}
