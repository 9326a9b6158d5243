#!/usr/bin/env bash
# Instructions per call of the fast paths, counted by callgrind (exact and
# repeatable, unlike times on a shared machine): a C loop of malloc(32)/free
# pairs through the preloaded release libstrata.so, and a Rust loop of
# 16-byte `GlobalAlloc::alloc`/`dealloc` pairs on `strata_alloc::Strata`.
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

c1="$(LD_PRELOAD="$SO" total c1 "$WORK/pairs" "$N")"
c2="$(LD_PRELOAD="$SO" total c2 "$WORK/pairs" $((2 * N)))"
echo "C malloc(32)/free pair: $(per_pair "$c1" "$c2" "$N") instructions"
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
