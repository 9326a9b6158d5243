/* Edge cases of the C allocation interface, run with
 * LD_PRELOAD=libstrata.so (ci/capi.sh). Exits 0 when every check passes;
 * prints each failure. Also built with -DGLIBC_REFERENCE and run without
 * the preload, as a cross-check that glibc (2.36) meets the expectations. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* The checks pass absurd sizes and reuse pointers after failed reallocs
 * on purpose. */
#pragma GCC diagnostic ignored "-Walloc-size-larger-than="
#pragma GCC diagnostic ignored "-Wuse-after-free"

/* cfree is no longer declared or linkable in glibc; find it at run time
 * (strata exports it; glibc only as a compat symbol). */
static void (*cfree_fn)(void *);
static void cfree(void *p) {
    if (cfree_fn) cfree_fn(p);
    else free(p);
}

static int failures;

/* glibc 2.38 made aligned_alloc refuse an alignment that is not a power of
 * two; 2.36, like strata, rounds it up as memalign does. */
#if defined(GLIBC_REFERENCE) && __GLIBC_PREREQ(2, 38)
#define ALIGNED_ALLOC_ROUNDS_UP 0
#else
#define ALIGNED_ALLOC_ROUNDS_UP 1
#endif

#define CHECK(cond)                                                          \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond); \
            failures++;                                                      \
        }                                                                    \
    } while (0)

static int is_aligned(const void *p, size_t a) { return ((uintptr_t)p % a) == 0; }

/* The alignment glibc's memalign serves for `a`: 16 at least, else `a`
 * rounded up to a power of two. */
static size_t memalign_alignment(size_t a) {
    size_t p = 16;
    while (p < a) p <<= 1;
    return p;
}

static void fill(unsigned char *p, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i++) p[i] = (unsigned char)(i * 31 + seed);
}

static int check_fill(const unsigned char *p, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i++)
        if (p[i] != (unsigned char)(i * 31 + seed)) return 0;
    return 1;
}

static void test_basics(void) {
    /* free(NULL) is a no-op; malloc(0) gives unique freeable pointers. */
    free(NULL);
    cfree(NULL);
    void *a = malloc(0), *b = malloc(0);
    CHECK(a != NULL && b != NULL && a != b);
    CHECK(is_aligned(a, 16));
    free(a);
    free(b);
    CHECK(malloc_usable_size(NULL) == 0);

    /* malloc alignment and usable size. */
    for (size_t n = 1; n <= (1u << 22); n = n * 3 / 2 + 1) {
        unsigned char *p = malloc(n);
        CHECK(p != NULL);
        CHECK(is_aligned(p, 16));
        CHECK(malloc_usable_size(p) >= n);
        fill(p, n, 7);
        CHECK(check_fill(p, n, 7));
        free(p);
    }

    /* Huge requests fail with ENOMEM. */
    errno = 0;
    CHECK(malloc(SIZE_MAX) == NULL && errno == ENOMEM);
    errno = 0;
    CHECK(malloc(SIZE_MAX / 2) == NULL && errno == ENOMEM);
    errno = 0;
    CHECK(malloc((size_t)1 << 50) == NULL && errno == ENOMEM);

    /* calloc: zeroed, overflow -> NULL/ENOMEM, zero size -> unique. */
    errno = 0;
    CHECK(calloc(SIZE_MAX / 2 + 2, 2) == NULL && errno == ENOMEM);
    errno = 0;
    CHECK(calloc((size_t)1 << 33, (size_t)1 << 33) == NULL && errno == ENOMEM);
    void *z = calloc(0, 8);
    CHECK(z != NULL);
    free(z);
    for (size_t n = 1; n <= (1u << 21); n *= 4) {
        /* Dirty some memory first so a recycled block must be cleared. */
        unsigned char *d = malloc(n * 8);
        memset(d, 0xAB, n * 8);
        free(d);
        unsigned char *c = calloc(n, 8);
        CHECK(c != NULL);
        int zero = 1;
        for (size_t i = 0; i < n * 8; i++) zero &= c[i] == 0;
        CHECK(zero);
        free(c);
    }
    cfree(malloc(10));
}

static void test_realloc(void) {
    /* realloc(NULL, n) == malloc(n). */
    unsigned char *p = realloc(NULL, 10);
    CHECK(p != NULL);
    fill(p, 10, 1);
    /* Growth and shrink keep contents, across small/large boundaries. */
    size_t cur = 10;
    size_t sizes[] = {20, 100, 1000, 5000, 70000, 200000, 3000000, 9000000, 150000,
                      4000, 64, 17, 1, 600000, 24};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        size_t n = sizes[i];
        size_t keep = cur < n ? cur : n;
        unsigned char *q = realloc(p, n);
        CHECK(q != NULL);
        CHECK(is_aligned(q, 16));
        CHECK(malloc_usable_size(q) >= n);
        CHECK(check_fill(q, keep, 1));
        fill(q, n, 1);
        p = q;
        cur = n;
    }
    /* Failing realloc leaves the block intact. */
    errno = 0;
    CHECK(realloc(p, SIZE_MAX - 4096) == NULL && errno == ENOMEM);
    CHECK(check_fill(p, cur, 1));
    /* realloc(p, 0) frees p and returns NULL (glibc semantics). */
    CHECK(realloc(p, 0) == NULL);

    /* reallocarray. */
    int *arr = reallocarray(NULL, 100, sizeof(int));
    CHECK(arr != NULL);
    for (int i = 0; i < 100; i++) arr[i] = i;
    errno = 0;
    CHECK(reallocarray(arr, SIZE_MAX / 2, 4) == NULL && errno == ENOMEM);
    int *arr2 = reallocarray(arr, 1000, sizeof(int));
    CHECK(arr2 != NULL);
    int ok = 1;
    for (int i = 0; i < 100; i++) ok &= arr2[i] == i;
    CHECK(ok);
    free(arr2);

    /* realloc of an over-aligned block. */
    void *al = NULL;
    CHECK(posix_memalign(&al, 4096, 100) == 0);
    fill(al, 100, 3);
    unsigned char *r = realloc(al, 100000);
    CHECK(r != NULL && check_fill(r, 100, 3));
    free(r);
}

static void test_aligned(void) {
    void *p;
    /* posix_memalign: EINVAL for non-powers of two and for powers of two
     * that are not multiples of sizeof(void *). */
    /* The error is returned, errno left alone (glibc). */
    size_t bad[] = {0, 1, 2, 4, 3, 12, 24, 48, 4097, sizeof(void *) * 3};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        p = (void *)0x1;
        errno = EDOM;
        CHECK(posix_memalign(&p, bad[i], 16) == EINVAL);
        CHECK(p == (void *)0x1);
        CHECK(errno == EDOM);
    }
    /* Out of memory: returned, and errno is ENOMEM too (glibc). */
    p = (void *)0x1;
    errno = 0;
    CHECK(posix_memalign(&p, 64, SIZE_MAX - 100) == ENOMEM);
    CHECK(p == (void *)0x1);
    CHECK(errno == ENOMEM);
    CHECK(posix_memalign(&p, 64, 0) == 0 && p != NULL);
    free(p);

    /* memalign / aligned_alloc take any alignment: below 16 it is a plain
     * malloc, else rounded up to the next power of two. */
    size_t odd[] = {0, 1, 2, 3, 12, 24, 48, 100, 4097, (1u << 20) + 1};
    for (size_t i = 0; i < sizeof odd / sizeof *odd; i++) {
        size_t want = memalign_alignment(odd[i]);
        errno = 0;
        void *m = memalign(odd[i], 64);
        CHECK(m != NULL && is_aligned(m, want) && malloc_usable_size(m) >= 64);
        CHECK(errno == 0);
        free(m);
        if (ALIGNED_ALLOC_ROUNDS_UP) {
            void *a = aligned_alloc(odd[i], 64);
            CHECK(a != NULL && is_aligned(a, want) && malloc_usable_size(a) >= 64);
            CHECK(errno == 0);
            free(a);
        }
    }
    /* No power of two is above SIZE_MAX / 2 + 1: EINVAL. The largest
     * powers of two (and what rounds up to them) are ENOMEM. */
    size_t too_big[] = {SIZE_MAX, SIZE_MAX / 2 + 2};
    for (size_t i = 0; i < sizeof too_big / sizeof *too_big; i++) {
        errno = 0;
        CHECK(memalign(too_big[i], 10) == NULL && errno == EINVAL);
        errno = 0;
        CHECK(aligned_alloc(too_big[i], 10) == NULL && errno == EINVAL);
    }
    errno = 0;
    CHECK(memalign(SIZE_MAX / 2 + 1, 10) == NULL && errno == ENOMEM);
    errno = 0;
    CHECK(memalign(SIZE_MAX / 4 + 2, 10) == NULL && errno == ENOMEM);
    errno = 0;
    CHECK(aligned_alloc(SIZE_MAX / 2 + 1, 10) == NULL && errno == ENOMEM);
    errno = 0;
    CHECK(aligned_alloc(64, SIZE_MAX - 100) == NULL && errno == ENOMEM);

    /* Every alignment 8 ..= 1 MiB, several sizes each. */
    size_t sz[] = {0, 1, 8, 100, 4096, 70000, 300000};
    for (size_t a = 8; a <= (1u << 20); a *= 2) {
        for (size_t i = 0; i < sizeof sz / sizeof *sz; i++) {
            size_t n = sz[i];
            void *x = NULL;
            CHECK(posix_memalign(&x, a, n) == 0);
            CHECK(x != NULL && is_aligned(x, a) && malloc_usable_size(x) >= n);
            memset(x, 0x5A, n);
            void *y = aligned_alloc(a, n);
            CHECK(y != NULL && is_aligned(y, a) && malloc_usable_size(y) >= n);
            memset(y, 0x5A, n);
            void *w = memalign(a, n);
            CHECK(w != NULL && is_aligned(w, a) && malloc_usable_size(w) >= n);
            memset(w, 0x5A, n);
            free(x);
            free(y);
            free(w);
        }
    }
    /* memalign accepts small powers of two. */
    p = memalign(1, 10);
    CHECK(p != NULL);
    free(p);

    long page = sysconf(_SC_PAGESIZE);
    void *v = valloc(100);
    CHECK(v != NULL && is_aligned(v, page) && malloc_usable_size(v) >= 100);
    free(v);
    void *pv = pvalloc(1);
    CHECK(pv != NULL && is_aligned(pv, page) && malloc_usable_size(pv) >= (size_t)page);
    free(pv);
    pv = pvalloc(0);
    CHECK(pv != NULL && is_aligned(pv, page));
    free(pv);
    errno = 0;
    CHECK(pvalloc(SIZE_MAX - 10) == NULL && errno == ENOMEM);
}

/* Alignments of megabytes and more: the padding that finds an aligned
 * address is not kept mapped, so many such blocks fit. An absurd one (a
 * terabyte) is refused with ENOMEM, as glibc's mapping of it is refused by
 * the kernel's overcommit heuristic (the default vm.overcommit_memory=0,
 * on a machine with less than a terabyte of RAM + swap). */
#define HUGE_ALIGNED 200
static void test_huge_alignment(void) {
    errno = 0;
    CHECK(aligned_alloc((size_t)1 << 40, 10) == NULL && errno == ENOMEM);
    errno = 0;
    CHECK(memalign((size_t)1 << 40, 10) == NULL && errno == ENOMEM);
    void *p = (void *)0x1;
    CHECK(posix_memalign(&p, (size_t)1 << 40, 10) == ENOMEM && p == (void *)0x1);
    errno = 0;
    CHECK(malloc((size_t)1 << 40) == NULL && errno == ENOMEM);

    static unsigned char *blocks[HUGE_ALIGNED];
    size_t aligns[] = {(size_t)8 << 20, (size_t)64 << 20};
    for (size_t k = 0; k < sizeof aligns / sizeof *aligns; k++) {
        size_t a = aligns[k];
        for (size_t i = 0; i < HUGE_ALIGNED; i++) {
            size_t n = 100 + i * 1000;
            blocks[i] = aligned_alloc(a, n);
            CHECK(blocks[i] != NULL);
            if (!blocks[i]) return;
            CHECK(is_aligned(blocks[i], a) && malloc_usable_size(blocks[i]) >= n);
            fill(blocks[i], n, (unsigned)i);
        }
        /* Growing one keeps its contents. */
        unsigned char *grown = realloc(blocks[1], 5u << 20);
        CHECK(grown != NULL && check_fill(grown, 1100, 1));
        if (grown) blocks[1] = grown;
        for (size_t i = 0; i < HUGE_ALIGNED; i++) {
            CHECK(check_fill(blocks[i], 100 + i * 1000, (unsigned)i));
            free(blocks[i]);
        }
    }
}

/* Threads: each allocates blocks and hands half of them to the next thread
 * to free (cross-thread frees), then exits and is joined. */
#define NTHREADS 8
#define PER_THREAD 20000
static void *handoff[NTHREADS][PER_THREAD];
static pthread_barrier_t barrier;

static void *worker(void *arg) {
    long id = (long)arg;
    unsigned seed = (unsigned)id * 2654435761u;
    for (int i = 0; i < PER_THREAD; i++) {
        seed = seed * 1103515245u + 12345u;
        size_t n = (seed >> 8) % ((i % 100 == 0) ? 300000 : 600) + 1;
        unsigned char *p = malloc(n);
        if (!p) return (void *)1;
        p[0] = (unsigned char)id;
        p[n - 1] = (unsigned char)id;
        handoff[id][i] = p;
        if (i % 2) {
            free(handoff[id][i - 1]);
            handoff[id][i - 1] = NULL;
        }
    }
    pthread_barrier_wait(&barrier);
    /* Free the neighbour's surviving blocks. */
    long other = (id + 1) % NTHREADS;
    for (int i = 0; i < PER_THREAD; i++) {
        unsigned char *p = handoff[other][i];
        if (p) {
            if (p[0] != (unsigned char)other) return (void *)2;
            free(p);
        }
    }
    return NULL;
}

static void *short_lived(void *arg) {
    void *keep = malloc(100);
    for (int i = 0; i < 100; i++) free(malloc((size_t)i * 50 + 1));
    *(void **)arg = keep;
    return NULL;
}

static void test_threads(void) {
    for (int round = 0; round < 3; round++) {
        pthread_t t[NTHREADS];
        pthread_barrier_init(&barrier, NULL, NTHREADS);
        for (long i = 0; i < NTHREADS; i++)
            CHECK(pthread_create(&t[i], NULL, worker, (void *)i) == 0);
        for (int i = 0; i < NTHREADS; i++) {
            void *ret = (void *)9;
            CHECK(pthread_join(t[i], &ret) == 0);
            CHECK(ret == NULL);
        }
        pthread_barrier_destroy(&barrier);
    }
    /* Many short-lived threads: each leaves blocks for the main thread
     * to free after it exited (its heap was abandoned). */
    static void *leftovers[256];
    for (int i = 0; i < 256; i++) {
        pthread_t t;
        CHECK(pthread_create(&t, NULL, short_lived, &leftovers[i]) == 0);
        CHECK(pthread_join(t, NULL) == 0);
    }
    for (int i = 0; i < 256; i++) free(leftovers[i]);
}

/* Fork while other threads hold the allocator busy. */
static volatile int stop_spinners;
static void *spinner(void *arg) {
    (void)arg;
    while (!stop_spinners) {
        void *p = malloc(64 + (rand() % 100000));
        free(p);
    }
    return NULL;
}

static void test_fork(const char *self) {
    pthread_t t[2];
    stop_spinners = 0;
    for (int i = 0; i < 2; i++) pthread_create(&t[i], NULL, spinner, NULL);
    for (int i = 0; i < 20; i++) {
        pid_t pid = fork();
        CHECK(pid >= 0);
        if (pid == 0) {
            /* The child mallocs (small and large), frees, exits 0. */
            for (int j = 0; j < 1000; j++) {
                void *p = malloc((size_t)j * 37 + 1);
                if (!p) _exit(3);
                memset(p, 1, (size_t)j * 37 + 1);
                free(p);
            }
            void *big = malloc(5 << 20);
            if (!big) _exit(4);
            free(big);
            _exit(0);
        }
        int status = 0;
        CHECK(waitpid(pid, &status, 0) == pid);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    stop_spinners = 1;
    for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);

    /* fork + exec: the child runs this program's "child" mode, which
     * allocates (under the inherited LD_PRELOAD) and exits 0. */
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        char *argv[] = {(char *)self, "child", NULL};
        execv(self, argv);
        _exit(127);
    }
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);

    /* fork + exec of a system program through the shell (popen allocates). */
    FILE *f = popen("echo hello | tr a-z A-Z", "r");
    CHECK(f != NULL);
    char buf[64] = {0};
    CHECK(fgets(buf, sizeof buf, f) != NULL);
    CHECK(strcmp(buf, "HELLO\n") == 0);
    CHECK(pclose(f) == 0);
}

static void test_dlopen(void) {
    void *h = dlopen("libm.so.6", RTLD_NOW | RTLD_LOCAL);
    CHECK(h != NULL);
    if (h) {
        double (*cos_fn)(double) = (double (*)(double))dlsym(h, "cos");
        CHECK(cos_fn != NULL && cos_fn(0.0) == 1.0);
        CHECK(dlclose(h) == 0);
    }
    /* Another library loaded and unloaded repeatedly, and new threads
     * started while it is loaded. */
    for (int i = 0; i < 5; i++) {
        void *z = dlopen("libz.so.1", RTLD_NOW);
        if (z) dlclose(z);
    }
    /* A failing dlopen allocates its error message. */
    CHECK(dlopen("libdoes-not-exist.so", RTLD_NOW) == NULL);
    CHECK(dlerror() != NULL);
    for (int i = 0; i < 4; i++) {
        void *z = dlopen("libz.so.1", RTLD_NOW);
        pthread_t t;
        void *left = NULL;
        CHECK(pthread_create(&t, NULL, short_lived, &left) == 0);
        CHECK(pthread_join(t, NULL) == 0);
        free(left);
        if (z) dlclose(z);
    }
}

/* The usual libc users of malloc: stdio, strdup, asprintf, qsort, getline. */
static void test_libc(void) {
    char *s = strdup("strata");
    CHECK(s && strcmp(s, "strata") == 0);
    free(s);
    char *a = NULL;
    CHECK(asprintf(&a, "%d-%s", 42, "x") == 4 && strcmp(a, "42-x") == 0);
    free(a);
    FILE *f = tmpfile();
    CHECK(f != NULL);
    for (int i = 0; i < 1000; i++) fprintf(f, "line %d\n", i);
    rewind(f);
    char *line = NULL;
    size_t cap = 0;
    int count = 0;
    while (getline(&line, &cap, f) > 0) count++;
    CHECK(count == 1000);
    free(line);
    fclose(f);
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "child") == 0) {
        void *p = malloc(1000);
        char *q = strdup("exec child");
        int ok = p && q && malloc_usable_size(p) >= 1000;
        free(p);
        free(q);
        return ok ? 0 : 1;
    }
    cfree_fn = (void (*)(void *))dlsym(RTLD_DEFAULT, "cfree");
#ifndef GLIBC_REFERENCE
    CHECK(cfree_fn != NULL);
#endif
    test_basics();
    test_realloc();
    test_aligned();
    test_huge_alignment();
    test_libc();
    test_threads();
    test_fork(argv[0]);
    test_dlopen();
    if (failures) {
        fprintf(stderr, "edge_cases: %d failure(s)\n", failures);
        return 1;
    }
    printf("edge_cases: all checks passed\n");
    return 0;
}
