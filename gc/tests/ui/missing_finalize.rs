use strata_gc::Trace;

#[derive(Trace)]
struct NoFinalize {
    a: u32,
}

fn main() {}
