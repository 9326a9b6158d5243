/* Process and thread life cycle under LD_PRELOAD=libstrata.so: what runs
 * before the first malloc, what runs after a thread's heap is gone, and
 * frees the allocator must refuse. Run by capi/tests/lifecycle.rs, one
 * mode per child process:
 *
 *   atfork N     registers N pthread_atfork handlers, then mallocs
 *   atexit N     registers N atexit handlers, then mallocs
 *   threads N    runs N threads that each fail a dlopen (glibc frees the
 *                thread's dlerror buffer after every key destructor ran),
 *                printing "rss KIB" after N/5 threads and after all N
 *   churn        allocates and frees blocks of many sizes
 *   wild-free    frees a pointer into an arena header (must abort)
 *   foreign WHAT frees (free), resizes (realloc) or measures
 *                (malloc_usable_size) a pointer malloc never returned:
 *                WHAT is free-stack, free-static, free-mmap, realloc-mmap,
 *                usable-static (must abort)
 *   misuse WHAT  frees a small block wrongly, after printing "pointer %p"
 *                of the pointer at fault (must abort): WHAT is
 *                double-free, double-free-later (after 100 other frees),
 *                double-free-remote (another thread frees it twice),
 *                double-free-after-remote (another thread frees it, then
 *                this one), interior (16 bytes into a 48-byte block)
 *   overwrite-link  frees a 40-byte block, overwrites its free-list link
 *                (a write after free), then mallocs until the allocator
 *                takes the block again, after printing "expect " and the
 *                abort line the secure level must give (must abort there)
 *   order        mallocs 64 blocks of 40 bytes from a fresh pool and prints
 *                "neighbours N": how many came right after the one before
 *   overflow-large HOW  writes every byte of a large block (1 MiB; HOW is
 *                fresh, reused: a cached mapping, grown: reallocated to
 *                3 MiB, shrunk: reallocated to 600 KiB), printing
 *                "usable N"; maps a page of its own right after the usable
 *                end if that address is free ("neighbour mapped"), then
 *                writes the byte one past the usable end and prints
 *                "overflow returned" (at the secure level a guard page
 *                holds that address: no neighbour, and the write faults)
 *   reuse SIZE   mallocs SIZE bytes, fills them with 0xAB, frees them,
 *                mallocs SIZE until it gets the block back (a pool's
 *                fresh blocks come first; a neighbour stays live), prints "same" or "moved" and
 *                "nonzero N": how many bytes past the first 16 (the link
 *                and tag words) do not read zero
 *   arena-guard  reads the last byte of the arena of a 16-byte block, then
 *                prints "read returned" (at the secure level the arena's
 *                last slot is a guard and the read must fault)
 *   stress       four threads malloc, calloc, realloc and free blocks of
 *                many sizes, freeing each other's, filled with words that
 *                look like free-list links (must not abort)
 *   dlopen LIB   run without the preload: dlopens LIB and mallocs, reallocs
 *                and frees through it from four threads, freeing each
 *                other's blocks
 */
#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <malloc.h>

static void handler(void) {}

static long rss_kib(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    long size = 0, resident = 0;
    if (f == NULL || fscanf(f, "%ld %ld", &size, &resident) != 2) {
        fprintf(stderr, "cannot read /proc/self/statm\n");
        exit(2);
    }
    fclose(f);
    return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

static void *failing_dlopen(void *arg) {
    (void)arg;
    void *h = dlopen("/nonexistent/strata-no-such-library.so", RTLD_NOW);
    if (h != NULL) dlclose(h);
    return NULL;
}

static void run_threads(int n) {
    for (int i = 0; i < n; i++) {
        pthread_t t;
        if (pthread_create(&t, NULL, failing_dlopen, NULL) != 0) {
            fprintf(stderr, "pthread_create failed\n");
            exit(2);
        }
        pthread_join(t, NULL);
        if (i + 1 == n / 5 || i + 1 == n) printf("rss %ld\n", rss_kib());
    }
}

static void churn(void) {
    void *live[512] = {0};
    for (unsigned i = 0; i < 200000; i++) {
        unsigned slot = (i * 2654435761u) % 512;
        free(live[slot]);
        size_t size = 1 + (i * 40503u) % (i % 64 == 0 ? 300000 : 3000);
        live[slot] = malloc(size);
        if (live[slot] == NULL) {
            fprintf(stderr, "malloc(%zu) failed\n", size);
            exit(2);
        }
        memset(live[slot], (int)i, size < 64 ? size : 64);
    }
    for (int i = 0; i < 512; i++) free(live[i]);
}

/* Hides where `p` points from the compiler, which rejects freeing a
 * non-heap object it can see. */
static void *launder(void *p) {
    __asm__ volatile("" : "+r"(p));
    return p;
}

static void *free_it(void *p) {
    free(p);
    return NULL;
}

static void *free_it_twice(void *p) {
    void *again = launder(p);
    free(p);
    free(again);
    return NULL;
}

/* Runs `f(p)` on another thread and waits for it. */
static void on_other_thread(void *(*f)(void *), void *p) {
    pthread_t t;
    if (pthread_create(&t, NULL, f, p) != 0) exit(2);
    pthread_join(t, NULL);
}

/* The misuse `what` names (see the mode list). */
static void misuse(const char *what) {
    char *p = malloc(40);
    char *others[100];
    for (int i = 0; i < 100; i++) others[i] = malloc(40);
    if (strcmp(what, "interior") == 0) {
        printf("pointer %p\n", (void *)(p + 16));
        fflush(stdout);
        free(launder(p + 16));
    } else {
        printf("pointer %p\n", (void *)p);
        fflush(stdout);
        /* The compiler refuses a free of a pointer it saw freed. */
        void *again = launder(p);
        if (strcmp(what, "double-free") == 0) {
            free(p);
            free(again);
        } else if (strcmp(what, "double-free-later") == 0) {
            free(p);
            for (int i = 0; i < 100; i++) free(others[i]);
            free(again);
        } else if (strcmp(what, "double-free-remote") == 0) {
            on_other_thread(free_it_twice, p);
        } else if (strcmp(what, "double-free-after-remote") == 0) {
            on_other_thread(free_it, p);
            free(again);
        }
    }
    printf("%s returned\n", what);
}

/* The overwrite-link mode (see the mode list). */
static void overwrite_link(void) {
    char *p = malloc(40);
    /* A pool of 48-byte blocks is one 64 KiB arena slot, slot-aligned. */
    uintptr_t pool = (uintptr_t)p & ~(uintptr_t)0xffff;
    printf("expect strata-alloc: free list corrupted in the pool at 0x%016lx: "
           "block 0x%016lx links to 0x\n",
           (unsigned long)pool, (unsigned long)(uintptr_t)p);
    fflush(stdout);
    /* The compiler refuses a write through a pointer it saw freed. */
    char *freed = launder(p);
    free(p);
    memset(freed, 0x41, 8);
    /* The owner's frees wait until the blocks carved before run out. */
    for (int i = 0; i < 100000; i++) launder(malloc(40));
    printf("overwrite-link returned\n");
}

/* The order mode (see the mode list). */
static void order(void) {
    printf("order\n"); /* stdout's buffer first: not one of the 64 */
    char *blocks[64];
    for (int i = 0; i < 64; i++) blocks[i] = malloc(40);
    int neighbours = 0;
    for (int i = 1; i < 64; i++) neighbours += blocks[i] == blocks[i - 1] + 48;
    printf("neighbours %d\n", neighbours);
    for (int i = 0; i < 64; i++) free(blocks[i]);
}

/* Blocks handed between the stress threads. */
static void overflow_large(const char *how) {
    size_t size = 1 << 20;
    char *p = malloc(size);
    if (strcmp(how, "reused") == 0) {
        free(p);
        p = malloc(size - 4096);
    } else if (strcmp(how, "grown") == 0) {
        memset(p, 0x5a, size);
        p = realloc(p, 3 * size);
        if (p == NULL || p[size - 1] != 0x5a) exit(3);
    } else if (strcmp(how, "shrunk") == 0) {
        memset(p, 0x5a, size);
        p = realloc(p, 600 << 10);
        if (p == NULL || p[(600 << 10) - 1] != 0x5a) exit(3);
    } else if (strcmp(how, "fresh") != 0) {
        exit(2);
    }
    size_t usable = malloc_usable_size(p);
    printf("usable %zu\n", usable);
    /* Without a guard, the page after the block is usually unmapped and
     * the write would fault anyway: fill it, so only a guard faults. */
    void *next = p + usable;
    void *got = mmap(next, 4096, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    if (got == next) printf("neighbour mapped\n");
    else if (got != MAP_FAILED) munmap(got, 4096);
    fflush(stdout);
    memset(p, 1, usable);
    ((volatile char *)p)[usable] = 1;
    printf("overflow returned\n");
    fflush(stdout);
}

static void *exchanged[4][512];

static void *stress_thread(void *arg) {
    long t = (long)arg;
    unsigned x = 2463534242u + (unsigned)t;
    void *last = NULL;
    for (int round = 0; round < 400; round++) {
        for (int i = 0; i < 512; i++) {
            x ^= x << 13, x ^= x >> 17, x ^= x << 5;
            size_t size = 1 + x % (x % 16 == 0 ? 40000 : 600);
            void **p = x % 5 == 0 ? calloc(1, size) : malloc(size);
            if (p == NULL) exit(2);
            if (x % 7 == 0) {
                p = realloc(p, size * 2 + 1);
                if (p == NULL) exit(2);
            }
            if (size >= 16) {
                /* Null, the block itself, a neighbour: what a link of the
                 * block's own pool looks like. */
                p[0] = x % 3 == 0 ? NULL : last;
                p[1] = x % 2 == 0 ? (void *)p : last;
            }
            last = p;
            void *old = __atomic_exchange_n(&exchanged[(t + round) % 4][i], p, __ATOMIC_ACQ_REL);
            free(old);
        }
    }
    return NULL;
}

static void stress(void) {
    pthread_t threads[4];
    for (long t = 0; t < 4; t++) pthread_create(&threads[t], NULL, stress_thread, (void *)t);
    for (int t = 0; t < 4; t++) pthread_join(threads[t], NULL);
    for (int t = 0; t < 4; t++)
        for (int i = 0; i < 512; i++) free(exchanged[t][i]);
}

/* The allocator of a dlopened libstrata.so, and blocks passed between
 * threads through it. */
static void *(*dl_malloc)(size_t);
static void *(*dl_realloc)(void *, size_t);
static void (*dl_free)(void *);
static void *handed[4][256];

static void *use_dlopened(void *arg) {
    long t = (long)arg;
    for (int round = 0; round < 200; round++) {
        for (int i = 0; i < 256; i++) {
            void *p = dl_malloc(16 + (size_t)(i * 37 + round) % 4000);
            p = dl_realloc(p, 8 + (size_t)i * 3);
            memset(p, (int)t, 8);
            /* Frees the block another thread left in this cell. */
            void *old = __atomic_exchange_n(&handed[(t + 1) % 4][i], p, __ATOMIC_ACQ_REL);
            dl_free(old);
        }
    }
    return NULL;
}

static int run_dlopened(const char *lib) {
    void *h = dlopen(lib, RTLD_NOW | RTLD_LOCAL);
    if (h == NULL) {
        printf("dlopen failed: %s\n", dlerror());
        return 1;
    }
    dl_malloc = (void *(*)(size_t))dlsym(h, "malloc");
    dl_realloc = (void *(*)(void *, size_t))dlsym(h, "realloc");
    dl_free = (void (*)(void *))dlsym(h, "free");
    pthread_t threads[4];
    for (long t = 0; t < 4; t++) pthread_create(&threads[t], NULL, use_dlopened, (void *)t);
    for (int t = 0; t < 4; t++) pthread_join(threads[t], NULL);
    for (int t = 0; t < 4; t++)
        for (int i = 0; i < 256; i++) dl_free(handed[t][i]);
    return 0;
}

static char static_buffer[64];

/* A pointer of the kind `what` names, then the call it names on it. */
static void use_foreign(const char *what) {
    char on_stack[64];
    char *mapped = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mapped == MAP_FAILED) return;
    on_stack[0] = static_buffer[0] = mapped[0] = 1;
    if (strcmp(what, "free-stack") == 0) free(launder(on_stack));
    else if (strcmp(what, "free-static") == 0) free(launder(static_buffer));
    else if (strcmp(what, "free-mmap") == 0) free(launder(mapped + 64));
    else if (strcmp(what, "realloc-mmap") == 0) (void)!realloc(launder(mapped), 100);
    else if (strcmp(what, "usable-static") == 0)
        printf("%zu\n", malloc_usable_size(launder(static_buffer)));
    printf("%s returned\n", what);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: lifecycle MODE [N]\n");
        return 2;
    }
    const char *mode = argv[1];
    int n = argc > 2 ? atoi(argv[2]) : 0;
    if (strcmp(mode, "atfork") == 0) {
        for (int i = 0; i < n; i++) pthread_atfork(handler, handler, handler);
    } else if (strcmp(mode, "atexit") == 0) {
        for (int i = 0; i < n; i++) atexit(handler);
    } else if (strcmp(mode, "threads") == 0) {
        run_threads(n);
    } else if (strcmp(mode, "churn") == 0) {
        churn();
    } else if (strcmp(mode, "foreign") == 0 && argc > 2) {
        use_foreign(argv[2]);
        return 0;
    } else if (strcmp(mode, "misuse") == 0 && argc > 2) {
        misuse(argv[2]);
        return 0;
    } else if (strcmp(mode, "order") == 0) {
        order();
    } else if (strcmp(mode, "overwrite-link") == 0) {
        overwrite_link();
        return 0;
    } else if (strcmp(mode, "overflow-large") == 0 && argc > 2) {
        overflow_large(argv[2]);
        return 0;
    } else if (strcmp(mode, "reuse") == 0 && n > 16) {
        /* A neighbour kept live: the pool does not empty (and reset). */
        volatile unsigned char *keep = malloc(n);
        unsigned char *p = malloc(n);
        keep[0] = 1;
        /* Volatile: a store right before free is otherwise dead. */
        for (int i = 0; i < n; i++) ((volatile unsigned char *)p)[i] = 0xab;
        free(p);
        volatile unsigned char *q = NULL;
        for (int i = 0; i < 100000 && (void *)q != (void *)p; i++) q = malloc(n);
        printf("%s\n", (void *)q == (void *)p ? "same" : "moved");
        int nonzero = 0;
        for (int i = 16; i < n; i++) nonzero += q[i] != 0;
        printf("nonzero %d\n", nonzero);
        free((void *)q);
        return 0;
    } else if (strcmp(mode, "arena-guard") == 0) {
        char *p = malloc(16);
        uintptr_t arena = (uintptr_t)p & ~(uintptr_t)((4 << 20) - 1);
        volatile char *last = (volatile char *)(arena + (4 << 20) - 1);
        printf("read %d\n", *last);
        printf("read returned\n");
        return 0;
    } else if (strcmp(mode, "stress") == 0) {
        stress();
    } else if (strcmp(mode, "dlopen") == 0 && argc > 2) {
        if (run_dlopened(argv[2]) != 0) return 1;
    } else if (strcmp(mode, "wild-free") == 0) {
        char *p = malloc(16);
        /* Arenas are 4 MiB-aligned; their first 64 KiB hold the header. */
        char *header = (char *)((uintptr_t)p & ~(uintptr_t)((4 << 20) - 1));
        free(header + 256);
        printf("wild free returned\n");
        return 0;
    } else {
        fprintf(stderr, "unknown mode %s\n", mode);
        return 2;
    }
    char *p = malloc(100);
    if (p == NULL) return 1;
    strcpy(p, "ok");
    printf("%s\n", p);
    free(p);
    return 0;
}
