use strata_gc::{Trace, Visitor};

// A hand-written Trace impl gets no Finalize from anywhere.
struct Manual(u32);

// SAFETY: owns no Gc.
unsafe impl Trace for Manual {
    fn trace(&self, _: &mut Visitor) {}
}

fn main() {}
