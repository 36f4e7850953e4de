package browser

import (
	"os"
	"os/exec"
	"testing"

	"github.com/cloudsteer/cloudsteer/internal/privtest"
)

// Require stops the test unless a browser test can run here: Node.js on
// PATH, the chromium binary (CLOUDSTEER_CHROMIUM or /usr/bin/chromium) and
// the driver with playwright-core installed (scripts/install-deps.sh). It
// is a failure under CI=true, a skip elsewhere. It returns the driver's
// directory.
func Require(tb testing.TB) string {
	tb.Helper()
	stop := tb.Skipf
	if privtest.InCI() {
		stop = tb.Fatalf
	}
	if _, err := exec.LookPath("node"); err != nil {
		stop("browser test needs node on PATH (scripts/install-deps.sh installs it): %v", err)
	}
	chromium := os.Getenv("CLOUDSTEER_CHROMIUM")
	if chromium == "" {
		chromium = DefaultChromium
	}
	if _, err := exec.LookPath(chromium); err != nil {
		stop("browser test needs chromium (scripts/install-deps.sh installs it): %v", err)
	}
	dir, err := DriverDir("")
	if err != nil {
		stop("browser test: %v", err)
	}
	return dir
}
