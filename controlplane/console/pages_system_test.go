package console

import (
	"strings"
	"testing"
)

// TestSystemEntryCommentTranslated: a system bypass entry's comment is
// the product's own text, so it comes from the catalogs in the page's
// language, not the backend's English (an admin's comment stays as typed).
func TestSystemEntryCommentTranslated(t *testing.T) {
	pt := newPagesTest(t, Options{})
	const english = "the cloud agent's own domains: never proxied or decrypted twice"
	for i := range pt.f.entries {
		if pt.f.entries[i].System {
			pt.f.entries[i].Comment = english
		}
	}
	for _, lang := range []string{"en", "ja"} {
		doc := pt.page(t, "/bypass", lang)
		row := oneTest(t, doc, "bypass-row-*.akaetp.net")
		got := nodeText(row)
		if want := pt.text(lang, "bypass.system_comment"); !strings.Contains(got, want) {
			t.Errorf("%s: system row %q lacks %q", lang, got, want)
		}
		if strings.Contains(got, english) {
			t.Errorf("%s: system row shows the backend's English comment: %q", lang, got)
		}
	}
}
