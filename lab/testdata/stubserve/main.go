// Command stubserve stands in for `cloudsteer-lab serve` in the lab's own
// tests: it writes DIR/ready and waits for a signal, or, with
// STUBSERVE_FAIL set, writes that text to stderr and exits 1.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
)

func main() {
	if len(os.Args) < 4 || os.Args[1] != "serve" || os.Args[2] != "--dir" {
		fmt.Fprintln(os.Stderr, "usage: stubserve serve --dir DIR [flags]")
		os.Exit(2)
	}
	if msg := os.Getenv("STUBSERVE_FAIL"); msg != "" {
		fmt.Fprintln(os.Stderr, msg)
		os.Exit(1)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	if err := os.WriteFile(filepath.Join(os.Args[3], "ready"), nil, 0o644); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	<-sig
}
