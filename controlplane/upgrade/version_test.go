package upgrade

import "testing"

// The expectations follow systemd's test-string-util.c
// (test_strverscmp_improved) and the versions the build makes.
func TestCompareVersions(t *testing.T) {
	older := [][2]string{
		{"1", "2"},
		{"2", "10"},
		{"0.9", "1.0"},
		{"1.0~rc1", "1.0"},
		{"1.0~rc1", "1.0~rc2"},
		{"123-9", "123.1-1"},
		{"123", "123a"},
		{"123.a", "123a"},
		{"123-a", "123^a"},
		{"abc", "abcde"},
		{"2026.12.03", "2026.12.04"},
		{"2026.12.03", "2026.12.03.1"},
		{"2026.12.03-1-gabc", "2026.12.03.1"},
		{"9", "10"},
		{"1.2", "1.10"},
	}
	for _, c := range older {
		if got := CompareVersions(c[0], c[1]); got != -1 {
			t.Errorf("CompareVersions(%q, %q) = %d, want -1", c[0], c[1], got)
		}
		if got := CompareVersions(c[1], c[0]); got != 1 {
			t.Errorf("CompareVersions(%q, %q) = %d, want 1", c[1], c[0], got)
		}
	}
	for _, c := range [][2]string{{"1", "1"}, {"007", "7"}, {"123_a", "123a"}, {"1.0", "1.0"}} {
		if got := CompareVersions(c[0], c[1]); got != 0 {
			t.Errorf("CompareVersions(%q, %q) = %d, want 0", c[0], c[1], got)
		}
	}
}
