#!/usr/bin/env bash
# Instructions per call of the fast paths, counted by callgrind (exact and
# repeatable, unlike times on a shared machine): a C loop of malloc(32)/free
# pairs through the preloaded release libstrata.so, a C working set of
# 1024 blocks replaced at random (glibc-bench's sizes: 4 B to 32 KiB,
# inverse-square, so half are 8 B or less), and a Rust loop of 16-byte
# `GlobalAlloc::alloc`/`dealloc` pairs on `strata_alloc::Strata`. Both C
# loops are also counted under mimalloc, jemalloc and tcmalloc where the
# system has them (the same loops, in the same run).
# Each loop runs N and 2N times; the difference over N is the cost of one
# pair, start-up excluded. Also counts the exported `malloc` and `free`
# alone (callgrind's --toggle-collect), per call, and `free` of blocks
# another thread allocated (N of them, freed by a second thread). Not run by CI (a report, not a check).
# Extra arguments go to cargo (e.g. `--features secure`).
set -euo pipefail
cd "$(dirname "$0")/.."
N="${N:-1000000}"
TARGET="${CARGO_TARGET_DIR:-target}"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/strata-callgrind.XXXXXX")"
trap '[ -n "${KEEP:-}" ] || rm -rf "$WORK"' EXIT

# The release rlib of strata-alloc that the build links, for the Rust loop.
RLIB="$(cargo build --release -p strata-capi --message-format=json "$@" |
  python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "strata_alloc":
        rlib = [f for f in m["filenames"] if f.endswith(".rlib")]
        if rlib:
            print(rlib[0])
')"
SO="$(cd "$TARGET/release" && pwd)/libstrata.so"
DEPS="$(dirname "$RLIB")"

cat >"$WORK/pairs.c" <<'EOF'
#include <stdlib.h>
int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 1000000;
    void *volatile sink;
    for (long i = 0; i < n; i++) {
        void *p = malloc(32);
        sink = p;
        free(p);
    }
    (void)sink;
    return 0;
}
EOF
cat >"$WORK/workset.c" <<'EOF'
#include <stdlib.h>
/* 1024 slots; each step frees a random slot and refills it with a block
   of a size drawn like glibc's bench-malloc-thread (inverse square). */
int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 1000000;
    static void *slots[1024];
    static unsigned sizes[8192], picks[4096];
    srand(88);
    for (int i = 0; i < 8192; i++) {
        double r = (double)rand() / RAND_MAX;
        sizes[i] = (unsigned)(1.0 / (1.0 / 4 - r * (1.0 / 4 - 1.0 / 32768)));
    }
    for (int i = 0; i < 4096; i++) picks[i] = rand() % 1024;
    for (long i = 0; i < n; i++) {
        unsigned s = picks[i & 4095];
        free(slots[s]);
        slots[s] = malloc(sizes[i & 8191]);
    }
    return 0;
}
EOF
cat >"$WORK/remote.c" <<'EOF'
#include <pthread.h>
#include <stdlib.h>
static void **blocks;
static long n;
static void *freer(void *arg) {
    (void)arg;
    for (long i = 0; i < n; i++) free(blocks[i]);
    return NULL;
}
int main(int argc, char **argv) {
    n = argc > 1 ? atol(argv[1]) : 100000;
    blocks = malloc(n * sizeof *blocks);
    for (long i = 0; i < n; i++) blocks[i] = malloc(32);
    pthread_t t;
    pthread_create(&t, NULL, freer, NULL);
    pthread_join(t, NULL);
    free(blocks);
    return 0;
}
EOF
cat >"$WORK/pairs.rs" <<'EOF'
use std::alloc::{GlobalAlloc, Layout};
use std::hint::black_box;
fn main() {
    let n: usize = std::env::args().nth(1).map_or(1_000_000, |s| s.parse().unwrap());
    let layout = Layout::from_size_align(16, 8).unwrap();
    for _ in 0..n {
        // SAFETY: a valid layout; the block is freed once.
        unsafe {
            let p = strata_alloc::Strata.alloc(black_box(layout));
            strata_alloc::Strata.dealloc(black_box(p), layout);
        }
    }
}
EOF
cc -O2 -o "$WORK/pairs" "$WORK/pairs.c"
cc -O2 -o "$WORK/workset" "$WORK/workset.c"
cc -O2 -pthread -o "$WORK/remote" "$WORK/remote.c"
rustc --edition 2021 -C opt-level=3 -C debuginfo=1 --extern strata_alloc="$RLIB" \
  -L dependency="$DEPS" -o "$WORK/rpairs" "$WORK/pairs.rs"

# total OUT [CALLGRIND OPTIONS] PROGRAM ARGS... -> instructions counted
total() {
  local out="$WORK/$1"
  shift
  valgrind --tool=callgrind --callgrind-out-file="$out" "$@" >/dev/null 2>&1
  callgrind_annotate "$out" | awk '/PROGRAM TOTALS/ && !done { gsub(",", "", $1); print $1; done = 1 }'
}
per_pair() { python3 -c "print(f'{($2 - $1) / $3:.2f}')" "$1" "$2" "$N"; }

# c_loop LIB PROGRAM -> instructions per step of PROGRAM under LIB
c_loop() {
  local a b
  a="$(LD_PRELOAD="$1" total c1 "$WORK/$2" "$N")"
  b="$(LD_PRELOAD="$1" total c2 "$WORK/$2" $((2 * N)))"
  per_pair "$a" "$b" "$N"
}
echo "C malloc(32)/free pair: $(c_loop "$SO" pairs) instructions"
echo "C random working set, per free + malloc: $(c_loop "$SO" workset) instructions"
for peer in mimalloc.so.2 jemalloc.so.2 tcmalloc_minimal.so.4; do
  lib="$(ldconfig -p | awk -v l="lib$peer" '$1 == l { print $NF; exit }')"
  [ -n "$lib" ] || continue
  echo "  $peer: pair $(c_loop "$lib" pairs), working set $(c_loop "$lib" workset)"
done
for f in malloc free; do
  # Only inside the exported function and what it calls.
  inside="$(LD_PRELOAD="$SO" total "$f" --toggle-collect="$f" "$WORK/pairs" "$N")"
  echo "  $f: $(python3 -c "print(f'{$inside / $N:.2f}')") instructions per call"
done
inside="$(LD_PRELOAD="$SO" total remote.out --toggle-collect=free "$WORK/remote" "$N")"
echo "  free from another thread: $(python3 -c "print(f'{$inside / $N:.2f}')") instructions per call"
r1="$(total r1 "$WORK/rpairs" "$N")"
r2="$(total r2 "$WORK/rpairs" $((2 * N)))"
echo "Rust 16 B GlobalAlloc alloc/dealloc pair: $(per_pair "$r1" "$r2" "$N") instructions"
