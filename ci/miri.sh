#!/usr/bin/env bash
# Undefined-behaviour check under Miri: strata-alloc's unit tests, and all
# of strata-gc (unit, integration and doc tests; the heaviest cases shrink
# or skip themselves under cfg(miri)).
#
# Under cfg(miri) os.rs runs on a fake OS over std::alloc::System, so the
# arena, pool, heap and large-block code run unchanged. The allocator
# derives every pointer from its arena or mapping (`map_addr`-style), so
# its tests run with strict provenance.
# Extra arguments go to the test harness (e.g. a test-name filter).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo +nightly miri --version >/dev/null 2>&1; then
    rustup +nightly component add miri rust-src
fi

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target/miri}"

MIRIFLAGS="-Zmiri-strict-provenance ${MIRIFLAGS:-}" \
    cargo +nightly miri test -p strata-alloc --lib -- "$@"

MIRIFLAGS="-Zmiri-strict-provenance ${MIRIFLAGS:-}" \
    cargo +nightly miri test -p strata-gc -- "$@"
