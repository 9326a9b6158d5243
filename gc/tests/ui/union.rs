use strata_gc::Trace;

#[derive(Trace)]
union U {
    a: u32,
    b: f32,
}

fn main() {}
