package steer

// The classifier is compiled for both byte orders and the objects are
// committed, so building cloudsteer needs no clang. Regenerating
// (`go generate ./dataplane/steer/`) needs clang, llvm-strip, libbpf-dev
// (bpf/bpf_helpers.h, bpf/bpf_endian.h) and the kernel UAPI headers
// (linux-libc-dev). Debian keeps asm/ in the multiarch include directory,
// which gcc names (or, without gcc, `uname -m`-linux-gnu). Extra compiler
// flags can be passed in $BPF2GO_CFLAGS.
//
//go:generate sh -c "go tool bpf2go -tags linux -type verdict -type mark steer ../../bpf/steer.c -- -O2 -g -Wall -Werror -I/usr/include/$(gcc -print-multiarch 2>/dev/null || echo $(uname -m)-linux-gnu)"
