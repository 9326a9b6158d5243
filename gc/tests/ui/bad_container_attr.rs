use strata_gc::Trace;

#[derive(Trace)]
#[trace(skip)]
struct S(u32);

fn main() {}
