/*
 * preload/shim/dlopen.c: dlopen() without RTLD_DEEPBIND while the shim is active.
 *
 * PHP loads its extensions with RTLD_DEEPBIND. A library loaded that way (for
 * php-memcached: libmemcached) resolves connect() & co. in its own
 * dependencies, i.e. straight in libc, and never reaches the shim. While the
 * shim is active, the flag is dropped so normal (LD_PRELOAD-first) lookup
 * applies; the cost is that such a library can no longer shadow a global
 * symbol with one of its own dependencies' (docs/interposition.md).
 *
 * glibc's dlopen uses its caller's address to choose the RUNPATH/RPATH and
 * namespace to search, so the wrapper must not become the caller: on x86-64
 * the exported dlopen is a trampoline that adjusts the mode and then jumps
 * (not calls) to the real one, leaving the application's return address in
 * place. Elsewhere dlopen is not interposed and RTLD_DEEPBIND stays.
 */
#include <dlfcn.h>
#include <stdatomic.h>

#include "preload/lib/log.h"
#include "preload/shim/shim.h"

#if defined(__x86_64__) && defined(__linux__)

void *(*mcs_real_dlopen)(const char *, int) __attribute__((visibility("hidden")));
int mcs_dlopen_mode(int mode) __attribute__((visibility("hidden"), used));

/* Returns the mode to pass on; resolves the real dlopen on first use. */
int
mcs_dlopen_mode(int mode)
{
    static _Atomic int told;
    if (mcs_real_dlopen == NULL) {
        mcs_real_dlopen = (void *(*)(const char *, int))dlsym(RTLD_NEXT, "dlopen");
    }
    if ((mode & RTLD_DEEPBIND) && mcs_shim_config() != NULL) {
        if (atomic_exchange(&told, 1) == 0) {
            mcs_log(MCS_LOG_INFO, "dlopen: ignoring RTLD_DEEPBIND so loaded libraries reach the shim");
        }
        mode &= ~RTLD_DEEPBIND;
    }
    return mode;
}

/* dlopen(file, mode): keep file (rdi), adjust mode (esi), tail-jump. */
__asm__(".text\n"
        ".globl dlopen\n"
        ".type dlopen, @function\n"
        "dlopen:\n"
        "    endbr64\n"
        "    pushq %rdi\n"
        "    pushq %rsi\n"
        "    subq $8, %rsp\n"
        "    movl %esi, %edi\n"
        "    call mcs_dlopen_mode\n"
        "    addq $8, %rsp\n"
        "    popq %rsi\n"
        "    popq %rdi\n"
        "    movl %eax, %esi\n"
        "    jmp *mcs_real_dlopen(%rip)\n"
        ".size dlopen, .-dlopen\n");

#endif
