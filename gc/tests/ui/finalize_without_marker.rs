use strata_gc::{Finalize, Trace};

// A hand-written finalizer needs `#[trace(finalize)]`: without it the
// derive's empty `Finalize` conflicts with this one.
#[derive(Trace)]
struct Resource {
    a: u32,
}

impl Finalize for Resource {
    fn finalize(&self) {}
}

fn main() {}
