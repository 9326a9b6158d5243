//! Loom model checks of strata-alloc live in `tests/`; they run only with `--cfg loom`.
