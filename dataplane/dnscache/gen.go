package dnscache

// The program is compiled for both byte orders and the objects are
// committed, so building cloudsteer needs no clang. Regenerating
// (`go generate ./dataplane/dnscache/`) needs what dataplane/steer's
// gen.go lists: clang, llvm-strip, libbpf-dev and linux-libc-dev.
//
//go:generate sh -c "go tool bpf2go -tags linux -type reason -type qkey -type answer -type settings dnscache ../../bpf/dnscache.c -- -O2 -g -Wall -Werror -I/usr/include/$(gcc -print-multiarch 2>/dev/null || echo $(uname -m)-linux-gnu)"
