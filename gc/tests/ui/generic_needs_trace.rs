use strata_gc::{Finalize, Gc, Trace};

#[derive(Trace, Finalize)]
struct Wrap<T>(T);

struct Opaque;

fn main() {
    let _ = Gc::new(Wrap(Opaque));
}
