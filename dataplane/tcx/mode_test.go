package tcx

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/cloudsteer/cloudsteer/internal/privtest"
)

func TestParseMode(t *testing.T) {
	for in, want := range map[string]Mode{"": ModeAuto, "auto": ModeAuto, "tcx": ModeTCX, "legacy": ModeLegacy} {
		if got, err := ParseMode(in); err != nil || got != want {
			t.Errorf("ParseMode(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := ParseMode("clsact"); err == nil || !strings.Contains(err.Error(), `"clsact" is not one of auto, tcx, legacy`) {
		t.Errorf("ParseMode(clsact) = %v", err)
	}
}

// withProbe makes probeTCX return err for the test.
func withProbe(t *testing.T, err error) {
	t.Helper()
	old := probeTCX
	probeTCX = func() error { return err }
	t.Cleanup(func() { probeTCX = old })
}

func TestChoose(t *testing.T) {
	noTCX := fmt.Errorf("TCX needs Linux >= 6.6; running Linux 6.1.0: %w", ebpf.ErrNotSupported)
	for _, tc := range []struct {
		name    string
		mode    Mode
		env     string
		probe   error
		want    Mode
		why     string
		wantErr string
	}{
		{"auto with TCX", ModeAuto, "", nil, ModeTCX, "auto: the kernel has TCX", ""},
		{"auto without TCX falls back", ModeAuto, "", noTCX, ModeLegacy, "auto: no TCX in", ""},
		{"auto when the probe cannot run", ModeAuto, "", errors.New("probe TCX: operation not permitted"), "", "", "operation not permitted"},
		{"tcx forced with TCX", ModeTCX, "", nil, ModeTCX, "configured", ""},
		{"tcx forced without TCX", ModeTCX, "", noTCX, "", "", "attach mode tcx: TCX needs Linux >= 6.6; running Linux 6.1.0: not supported (use auto or legacy)"},
		{"legacy forced, no probe needed", ModeLegacy, "", errors.New("not called"), ModeLegacy, "configured", ""},
		{"config wins over the environment", ModeTCX, "legacy", nil, ModeTCX, "configured", ""},
		{"unset takes the environment", "", "legacy", nil, ModeLegacy, "$CLOUDSTEER_ATTACH", ""},
		{"unset and no environment is auto", "", "", noTCX, ModeLegacy, "auto: no TCX", ""},
		{"bad environment", "", "fast", nil, "", "", `$CLOUDSTEER_ATTACH: "fast" is not one of auto, tcx, legacy`},
		{"bad mode", "fast", "", nil, "", "", `attach mode "fast" is not one of`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			withProbe(t, tc.probe)
			t.Setenv(EnvMode, tc.env)
			got, why, err := Choose(tc.mode)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Choose(%q) = %q, %v; want error %q", tc.mode, got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want || !strings.HasPrefix(why, tc.why) {
				t.Fatalf("Choose(%q) = %q, %q, %v; want %q, %q", tc.mode, got, why, err, tc.want, tc.why)
			}
		})
	}
}

func TestCheckKernel(t *testing.T) {
	for _, ok := range []string{"5.12.0", "5.15.0-91-generic", "6.1.0-18-amd64", "6.18.44-fc-v1147", "10.0", "Linux 6.6.1", "unknown kernel", "", "x.y"} {
		if err := CheckKernel(ok); err != nil {
			t.Errorf("CheckKernel(%q) = %v, want nil", ok, err)
		}
	}
	for _, old := range []string{"5.11.22", "5.10.0-28-amd64", "4.19.0", "3.10.0-1160.el7.x86_64"} {
		err := CheckKernel(old)
		if err == nil {
			t.Errorf("CheckKernel(%q) = nil, want an error", old)
			continue
		}
		want := "cloudsteer needs Linux >= 5.12 and this is Linux " + old + ": its nftables table must be owner-flagged (5.12)"
		if !strings.HasPrefix(err.Error(), want) {
			t.Errorf("CheckKernel(%q) = %q, want it to start %q", old, err, want)
		}
	}
}

func TestProbeTCXHere(t *testing.T) {
	// This machine's kernel: the probe must agree with the release.
	privtest.RequireRoot(t)
	maj, min, ok := parseRelease(Release())
	if !ok {
		t.Fatalf("cannot read the release %q", Release())
	}
	err := ProbeTCX()
	if err != nil && !errors.Is(err, ebpf.ErrNotSupported) {
		t.Fatalf("ProbeTCX() = %v", err)
	}
	if errors.Is(err, ebpf.ErrNotSupported) != (maj < 6 || maj == 6 && min < 6) {
		t.Fatalf("ProbeTCX() = %v on %s", err, Release())
	}
}
