/*
 * Heap allocation counting (see alloc_count.h).
 *
 * Without sanitizers, this file defines the C allocator's entry points and
 * forwards each to glibc's __libc_* implementation, so every allocation in
 * the process passes through here, including those made inside libc and
 * third-party libraries. Under ASan the sanitizer owns malloc, so the count
 * comes from __sanitizer_install_malloc_and_free_hooks instead.
 *
 * The per-thread class lives in an initial-exec TLS slot, which needs no
 * allocation to reach, so the counters can be bumped from inside malloc.
 * Counters are relaxed atomics: cheap, and readable from any thread.
 */
#include "core/alloc_count.h"

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

static _Atomic uint64_t alloc_counts[SL_ALLOC_CLASS_COUNT];
static _Atomic uint64_t free_counts[SL_ALLOC_CLASS_COUNT];
static __thread __attribute__((tls_model("initial-exec"))) int thread_class;

static inline void count_alloc(void)
{
    atomic_fetch_add_explicit(&alloc_counts[thread_class], 1, memory_order_relaxed);
}

static inline void count_free(void)
{
    atomic_fetch_add_explicit(&free_counts[thread_class], 1, memory_order_relaxed);
}

void sl_alloc_track(enum sl_alloc_class cls)
{
    thread_class = (int)cls;
}

uint64_t sl_alloc_count(enum sl_alloc_class cls)
{
    return atomic_load_explicit(&alloc_counts[cls], memory_order_relaxed);
}

uint64_t sl_alloc_free_count(enum sl_alloc_class cls)
{
    return atomic_load_explicit(&free_counts[cls], memory_order_relaxed);
}

/* Under a sanitizer that owns malloc (ASan, TSan), count through its hooks instead. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SL_ALLOC_VIA_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define SL_ALLOC_VIA_ASAN 1
#endif
#endif

#ifdef SL_ALLOC_VIA_ASAN

int __sanitizer_install_malloc_and_free_hooks(void (*malloc_hook)(const volatile void *, size_t),
                                              void (*free_hook)(const volatile void *));

static void asan_malloc_hook(const volatile void *ptr, size_t bytes)
{
    (void)ptr;
    (void)bytes;
    count_alloc();
}

static void asan_free_hook(const volatile void *ptr)
{
    (void)ptr;
    count_free();
}

static int hooks_installed;

__attribute__((constructor)) static void install_hooks(void)
{
    hooks_installed = __sanitizer_install_malloc_and_free_hooks(asan_malloc_hook, asan_free_hook);
}

bool sl_alloc_counting_active(void)
{
    return hooks_installed != 0;
}

#else /* interpose glibc */

extern void *__libc_malloc(size_t bytes);
extern void *__libc_calloc(size_t count, size_t bytes);
extern void *__libc_realloc(void *ptr, size_t bytes);
extern void __libc_free(void *ptr);
extern void *__libc_memalign(size_t alignment, size_t bytes);
extern void *__libc_valloc(size_t bytes);
extern void *__libc_pvalloc(size_t bytes);

void *malloc(size_t bytes);
void *calloc(size_t count, size_t bytes);
void *realloc(void *ptr, size_t bytes);
void free(void *ptr);
void *memalign(size_t alignment, size_t bytes);
void *aligned_alloc(size_t alignment, size_t bytes);
int posix_memalign(void **out, size_t alignment, size_t bytes);
void *valloc(size_t bytes);
void *pvalloc(size_t bytes);
void *reallocarray(void *ptr, size_t count, size_t bytes);

void *malloc(size_t bytes)
{
    count_alloc();
    return __libc_malloc(bytes);
}

void *calloc(size_t count, size_t bytes)
{
    count_alloc();
    return __libc_calloc(count, bytes);
}

void *realloc(void *ptr, size_t bytes)
{
    count_alloc();
    return __libc_realloc(ptr, bytes);
}

void free(void *ptr)
{
    if (ptr != NULL) {
        count_free();
    }
    __libc_free(ptr);
}

void *memalign(size_t alignment, size_t bytes)
{
    count_alloc();
    return __libc_memalign(alignment, bytes);
}

void *aligned_alloc(size_t alignment, size_t bytes)
{
    count_alloc();
    return __libc_memalign(alignment, bytes);
}

int posix_memalign(void **out, size_t alignment, size_t bytes)
{
    count_alloc();
    if (alignment < sizeof(void *) || (alignment & (alignment - 1)) != 0) {
        return 22; /* EINVAL, without pulling errno.h into an allocator */
    }
    void *p = __libc_memalign(alignment, bytes);
    if (p == NULL) {
        return 12; /* ENOMEM */
    }
    *out = p;
    return 0;
}

void *valloc(size_t bytes)
{
    count_alloc();
    return __libc_valloc(bytes);
}

void *pvalloc(size_t bytes)
{
    count_alloc();
    return __libc_pvalloc(bytes);
}

void *reallocarray(void *ptr, size_t count, size_t bytes)
{
    size_t total;
    if (__builtin_mul_overflow(count, bytes, &total)) {
        return NULL;
    }
    return realloc(ptr, total);
}

bool sl_alloc_counting_active(void)
{
    return true;
}

#endif
