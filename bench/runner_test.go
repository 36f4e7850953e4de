package bench

import "testing"

func TestIsSelf(t *testing.T) {
	for _, tc := range []struct {
		self, comm string
		want       bool
	}{
		{"cloudsteer-bench", "cloudsteer-benc", true},
		{"cloudsteer-bench", "cloudsteer", false},
		{"load", "load", true},
		{"cloudsteer-bench", "redsocks", false},
	} {
		if got := isSelf(tc.self, tc.comm); got != tc.want {
			t.Errorf("isSelf(%q, %q) = %v, want %v", tc.self, tc.comm, got, tc.want)
		}
	}
}
