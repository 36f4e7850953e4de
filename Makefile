# cloudsteer — `make help` lists the targets.
GO      ?= go
BIN     ?= bin
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
FUZZTIME ?= 10s
# The Debian package's version: the last vX.Y.Z tag (v1.2.3-4-gabc → 1.2.3+4+gabc),
# else 0~git<commit>.
DEB_VERSION ?= $(shell v=$$(git describe --tags --match 'v[0-9]*' 2>/dev/null) && echo "$${v#v}" | tr - + || echo "0~git$$(git rev-parse --short HEAD 2>/dev/null || echo dev)")
DEB_ARCH ?= $(shell $(GO) env GOARCH)

.PHONY: help deps generate check-generated build test test-unit fuzz demo check fmt vet clean bench bench-dns deb image image-check image-test image-test-arm64

help: ## list the targets
	@grep -hE '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

deps: ## install the Debian packages the build, tests and demo need (as root; skips what is there)
	scripts/install-deps.sh

generate: ## regenerate the eBPF objects and Go bindings (needs clang)
	$(GO) generate ./dataplane/steer/ ./dataplane/dnscache/

check-generated: generate ## fail when the committed generated code is stale
	@git diff --exit-code -- dataplane/steer/ dataplane/dnscache/ || { echo "generated eBPF code is stale: run 'make generate' and commit"; exit 1; }
	@test -z "$$(git status --porcelain -- dataplane/steer/ dataplane/dnscache/)" || { git status --porcelain -- dataplane/steer/ dataplane/dnscache/; echo "untracked generated files: run 'make generate' and commit"; exit 1; }

build: ## build cloudsteer, the lab tool and the image signing tool into bin/
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/cloudsteer ./cmd/cloudsteer
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/cloudsteer-lab ./cmd/cloudsteer-lab
	CGO_ENABLED=0 $(GO) build -trimpath -o $(BIN)/cloudsteer-image ./cmd/cloudsteer-image

# The privileged packages that attach eBPF programs run a second time in
# legacy attach mode (clsact + cls_bpf, what kernels before 6.6 get).
LEGACY_PKGS := ./dataplane/steer/ ./dataplane/dnscache/ ./dataplane/tcx/ ./e2e/

deb: build ## build the Debian package $(BIN)/cloudsteer_VERSION_ARCH.deb (nfpm as a library: packaging/nfpm)
	cd packaging/nfpm && $(GO) build -o $(abspath $(BIN))/nfpm .
	VERSION='$(DEB_VERSION)' ARCH='$(DEB_ARCH)' BIN='$(BIN)' $(BIN)/nfpm -config packaging/nfpm.yaml -out '$(BIN)/cloudsteer_$(DEB_VERSION)_$(DEB_ARCH).deb'

test: deps build ## all tests, privileged ones included (run as root), the eBPF ones again in legacy attach mode, then each fuzz target briefly
	$(GO) test -count=1 -timeout 30m ./...
	CLOUDSTEER_ATTACH=legacy $(GO) test -count=1 -timeout 30m $(LEGACY_PKGS)
	FUZZTIME=$(FUZZTIME) scripts/fuzz.sh

test-unit: ## only the tests that need no root
	$(GO) test -count=1 -short ./...

fuzz: ## run every fuzz target for FUZZTIME (default 10s) each
	FUZZTIME=$(FUZZTIME) scripts/fuzz.sh

demo: deps build ## bring up the namespace lab, run cloudsteer in it, drive a client, print what each hop saw and the web console's URL and setup link (DEMO_ARGS=--keep: stay up until Ctrl-C)
	$(BIN)/cloudsteer-lab demo --bin $(BIN) $(DEMO_ARGS)

fmt: ## gofmt the tree
	gofmt -w $$(git ls-files '*.go')

vet: ## go vet
	$(GO) vet ./...

check: vet check-generated ## gofmt, go vet and the generated-code check
	@out=$$(gofmt -l $$(git ls-files '*.go')); test -z "$$out" || { echo "gofmt needed:"; echo "$$out"; exit 1; }

bench: deps build ## measure cloudsteer vs direct, redsocks, Squid in the lab (root); writes bench/out/
	scripts/bench-deps.sh
	$(GO) build -o $(BIN)/cloudsteer-bench ./cmd/cloudsteer-bench
	$(BIN)/cloudsteer-bench run --bin $(BIN) --out bench/out $(BENCHFLAGS)
	$(MAKE) bench-dns

bench-dns: ## the resolver's cache-miss latency and queries/s per upstream transport (plain, DoT, DoH h2/h3, DoQ) next to unbound over DoT; writes bench/out/table-dns-transports.txt
	scripts/bench-deps.sh
	@mkdir -p bench/out
	$(GO) build -o $(BIN)/cloudsteer-dnsbench ./cmd/cloudsteer-dnsbench
	$(BIN)/cloudsteer-dnsbench | tee bench/out/table-dns-transports.txt

# The appliance image (images/README.md): IMAGE_ARCHS ?= amd64 arm64; output in images/out/.
IMAGE_ARCHS ?= amd64 arm64
# Image versions must sort by age (systemd-boot picks the newest): 0.COMMITS.gHASH.
IMAGE_VERSION ?= $(shell echo "0.$$(git rev-list --count HEAD 2>/dev/null || echo 0).g$$(git rev-parse --short HEAD 2>/dev/null || echo dev)$$(git diff --quiet HEAD 2>/dev/null || echo .dirty)")
image: ## build the appliance images images/out/cloudsteer-VERSION-ARCH.img.xz (root; IMAGE_ARCHS=amd64 for one)
	images/build/host-deps.sh
	@for a in $(IMAGE_ARCHS); do VERSION='$(IMAGE_VERSION)' images/build/build.sh $$a || exit 1; done

image-check: ## run the build checks on the images in images/out/ (partition table, file modes, kernel config)
	@set -e; n=0; for f in images/out/cloudsteer-$(IMAGE_VERSION)-*.img.xz; do test -e "$$f" || continue; images/build/check.sh "$$f"; n=$$((n+1)); done; \
	test $$n -gt 0 || { echo "image-check: no images/out/cloudsteer-$(IMAGE_VERSION)-*.img.xz: run make image"; exit 1; }

image-test: ## boot the amd64 image under qemu as the lab's gateway and check it from a LAN client (images/boottest; root, make image first; in progress: not yet in make test)
	CI=true $(GO) test -tags boottest -count=1 -timeout 25m -v -run TestBootAMD64 ./images/boottest/

image-test-arm64: ## boot the arm64 image under qemu-system-aarch64 (TCG) and check cloudsteer answers on the LAN (root; the image: CLOUDSTEER_IMAGE_ARM64=PATH, else the newest images/out/cloudsteer-*-arm64.img.xz)
	CI=true $(GO) test -tags boottest -count=1 -timeout 25m -v -run TestBootARM64 ./images/boottest/

clean: ## remove build output
	rm -rf $(BIN)
