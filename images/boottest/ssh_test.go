//go:build boottest

package boottest

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/cloudsteer/cloudsteer/lab"
)

// sshKeys maps a test to its SSH private key file (sshKey makes it).
var sshKeys = map[string]string{}

// sshKey makes an ed25519 key pair for the test and returns the public
// key (for the ESP's /cloudsteer/authorized_keys).
func sshKey(t *testing.T) []byte {
	t.Helper()
	key := filepath.Join(t.TempDir(), "id_ed25519")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "cloudsteer-boottest", "-f", key).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v: %s", err, out)
	}
	pub, err := os.ReadFile(key + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	sshKeys[t.Name()] = key
	return pub
}

// ssh runs a command on the VM as root over SSH from the LAN client.
func (r *vmRun) ssh(timeout time.Duration, command string) (string, error) {
	key := sshKeys[r.t.Name()]
	return r.run(lab.RoleLAN, timeout, "ssh", "-i", key, "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
		"-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10",
		"-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3",
		"root@"+r.router.String(), command)
}
