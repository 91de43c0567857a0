/* LD_PRELOAD library: the CPUID instruction reports an AVX2-only x86 CPU (no AVX-512, no VNNI of any kind,
 * no AMX), so run-time dispatchers (ONNX Runtime's MLAS, numpy, cpuinfo) pick their AVX2 kernels on a
 * machine that has more: how tests and benchmarks check the AVX2 class on an AVX-512/AMX machine.
 * Linux CPUID faulting (arch_prctl ARCH_SET_CPUID, the `cpuid_fault` flag): CPUID traps with SIGSEGV; the
 * handler runs the real instruction with faulting briefly off, clears the feature bits and steps over it.
 * Code compiled for AVX-512 ahead of time (llama.cpp built with -march=native) is not affected. */
#define _GNU_SOURCE
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>
#include <cpuid.h>

#define ARCH_SET_CPUID 0x1012

static void cpuid_real(uint32_t leaf, uint32_t sub, uint32_t r[4]) {
    __cpuid_count(leaf, sub, r[0], r[1], r[2], r[3]);
}

static void handler(int sig, siginfo_t *info, void *vctx) {
    ucontext_t *uc = vctx;
    greg_t *g = uc->uc_mcontext.gregs;
    const unsigned char *ip = (const unsigned char *)g[REG_RIP];
    if (ip[0] != 0x0f || ip[1] != 0xa2) {  /* a real crash: default action */
        signal(SIGSEGV, SIG_DFL);
        return;
    }
    uint32_t leaf = (uint32_t)g[REG_RAX], sub = (uint32_t)g[REG_RCX], r[4];
    syscall(SYS_arch_prctl, ARCH_SET_CPUID, 1);
    cpuid_real(leaf, sub, r);
    syscall(SYS_arch_prctl, ARCH_SET_CPUID, 0);
    if (leaf == 7 && sub == 0) {
        r[1] &= ~((1u << 16) | (1u << 17) | (1u << 21) | (1u << 26) | (1u << 27) | (1u << 28) | (1u << 30) | (1u << 31));
        r[2] &= ~((1u << 1) | (1u << 6) | (1u << 11) | (1u << 12) | (1u << 14));
        r[3] &= ~((1u << 2) | (1u << 3) | (1u << 8) | (1u << 22) | (1u << 23) | (1u << 24) | (1u << 25));
    } else if (leaf == 7 && sub == 1) {
        r[0] &= ~((1u << 4) | (1u << 5) | (1u << 21) | (1u << 23));
        r[3] &= ~((1u << 4) | (1u << 5) | (1u << 10));
    } else if (leaf == 0xd && sub == 0) {
        r[0] &= ~((1u << 5) | (1u << 6) | (1u << 7) | (1u << 17) | (1u << 18)); /* no ZMM/opmask/AMX state */
    }
    g[REG_RAX] = r[0]; g[REG_RBX] = r[1]; g[REG_RCX] = r[2]; g[REG_RDX] = r[3];
    g[REG_RIP] += 2;
}

__attribute__((constructor)) static void start(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = handler;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigaction(SIGSEGV, &sa, NULL);
    if (syscall(SYS_arch_prctl, ARCH_SET_CPUID, 0) != 0) {
        perror("cpuid_avx2: ARCH_SET_CPUID");
        exit(3);
    }
}
