use strata_gc::Trace;

#[derive(Trace)]
enum E {
    A(u32),
    #[trace(no_such_option)]
    B(u32),
}

fn main() {}
