#!/usr/bin/env bash
# The project's test command (README): formatting, the layers' imports,
# lints, every test of the workspace, the musl and aarch64 builds, the
# tour, the preloaded C library, the loom models and Miri. Sanitizers and fuzzing take longer: see
# ci/sanitizers.sh and fuzz/ (README, "Correctness").
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "imports point down the layers (ci/layers.txt)"
python3 ci/imports.py

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo test (workspace)"
cargo test --workspace

step "build for x86_64-unknown-linux-musl (pure Rust over libc)"
if rustup target add x86_64-unknown-linux-musl >/dev/null 2>&1; then
  cargo build -p strata-alloc --target x86_64-unknown-linux-musl
else
  echo "musl target unavailable here; skipped"
fi

step "check for aarch64-unknown-linux-gnu"
if rustup target add aarch64-unknown-linux-gnu >/dev/null 2>&1; then
  cargo check -p strata-alloc --target aarch64-unknown-linux-gnu
else
  echo "aarch64 target unavailable here; skipped"
fi

step "the tour"
cargo run --release --example tour >/dev/null

step "libstrata.so preloaded into C tests, python3, git and sort"
bash ci/capi.sh

step "loom models"
bash ci/loom.sh

step "miri"
bash ci/miri.sh

step "all checks passed"
