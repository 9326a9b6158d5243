use strata_gc::Trace;

// A skipped variant's fields are still checked.
#[derive(Trace)]
enum E {
    #[trace(skip)]
    A(#[trace(tracked)] u32),
}

fn main() {}
