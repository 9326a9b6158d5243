#!/usr/bin/env bash
# Benchmarks: strata against mimalloc, jemalloc, snmalloc and the system
# allocator in one run each, then the ratio table (README "Performance").
# Takes about 10 minutes on 2 cores. Not part of ci/test.sh: timings are
# reports, never assertions.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target/bench}"
cargo bench --bench alloc
for a in strata mimalloc jemalloc snmalloc system; do
    cargo bench --bench "global_$a"
done
cargo bench --bench rss_peak
python3 benches/report.py "$CARGO_TARGET_DIR"
