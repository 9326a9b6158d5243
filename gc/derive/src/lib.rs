//! `#[derive(Trace)]` for strata-gc.
