use strata_gc::{Finalize, Trace};

struct Opaque;

#[derive(Trace, Finalize)]
struct Holder {
    inner: Opaque,
}

fn main() {}
