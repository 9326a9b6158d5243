#!/usr/bin/env bash
# Loom model checks of the concurrent protocols of strata-alloc and of
# strata_gc::sync (loom-tests/).
#
# The models call the real code built with `--cfg loom`: for the allocator
# (src/loom_api.rs) sync.rs swaps in loom's atomics, os.rs a fake OS over
# std::alloc::System, and the globals become per-execution; for the sync
# collector, gc/src/sync/shim.rs does the same. Debug
# assertions and overflow checks stay on in the release build so that a
# pool released twice or a free into a released pool (its `used` count
# underflows) fails a model. Preemptions are bounded to keep the whole run
# to a few minutes on 2 cores; raise LOOM_MAX_PREEMPTIONS for a deeper search.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target/loom}"
export RUSTFLAGS="${RUSTFLAGS:-} --cfg loom"
export CARGO_PROFILE_RELEASE_DEBUG_ASSERTIONS=true
export CARGO_PROFILE_RELEASE_OVERFLOW_CHECKS=true
export LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-2}"

cargo test -p loom-tests --release -- --test-threads "${LOOM_TEST_THREADS:-2}" "$@"
