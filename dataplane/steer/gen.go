package steer

// The classifier is compiled for both byte orders and the objects are
// committed, so building cloudsteer needs no clang. Regenerating needs
// clang, llvm-strip, libbpf-dev (bpf/bpf_helpers.h) and the kernel UAPI
// headers; Debian keeps asm/ in the multiarch directory, hence the
// -I/usr/include/$(gcc -print-multiarch). Extra flags can be passed in
// $BPF2GO_CFLAGS.
//
//go:generate sh -c "go tool bpf2go -tags linux -type verdict -type mark steer ../../bpf/steer.c -- -O2 -g -Wall -Werror -I/usr/include/$(gcc -print-multiarch)"
