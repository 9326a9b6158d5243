use strata_gc::{Finalize, Trace};

#[derive(Trace, Finalize)]
struct S {
    #[trace(ignore)]
    a: u32,
}

fn main() {}
