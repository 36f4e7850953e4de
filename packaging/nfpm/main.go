// Command nfpm builds cloudsteer's Debian package from packaging/nfpm.yaml
// with nfpm used as a library. It is a module of its own so that nfpm's
// dependencies stay out of cloudsteer's go.mod; its go.sum pins them.
//
//	go run . -config ../nfpm.yaml -out ../../bin/cloudsteer_VERSION_ARCH.deb
//
// The config's ${VAR} references are expanded from the environment
// (VERSION, ARCH, BIN) before nfpm reads it.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/goreleaser/nfpm/v2"
	_ "github.com/goreleaser/nfpm/v2/deb" // registers the deb packager
)

func main() {
	cfgPath := flag.String("config", "nfpm.yaml", "nfpm configuration")
	out := flag.String("out", "", "the .deb to write")
	flag.Parse()
	if err := build(*cfgPath, *out); err != nil {
		fmt.Fprintln(os.Stderr, "nfpm:", err)
		os.Exit(1)
	}
}

func build(cfgPath, out string) error {
	if out == "" {
		return fmt.Errorf("missing -out")
	}
	// nfpm expands ${VAR} only in some fields; the whole file here.
	text, err := os.ReadFile(cfgPath)
	if err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	cfg, err := nfpm.ParseWithEnvMapping(strings.NewReader(os.Expand(string(text), os.Getenv)), os.Getenv)
	if err != nil {
		return fmt.Errorf("parse %s: %w", cfgPath, err)
	}
	info, err := cfg.Get("deb")
	if err != nil {
		return fmt.Errorf("deb settings: %w", err)
	}
	info = nfpm.WithDefaults(info)
	if err := nfpm.Validate(info); err != nil {
		return fmt.Errorf("validate %s: %w", cfgPath, err)
	}
	pkg, err := nfpm.Get("deb")
	if err != nil {
		return err
	}
	f, err := os.Create(out)
	if err != nil {
		return fmt.Errorf("create package: %w", err)
	}
	if err := pkg.Package(info, f); err != nil {
		f.Close()
		os.Remove(out)
		return fmt.Errorf("build package: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write package: %w", err)
	}
	fmt.Println(out)
	return nil
}
