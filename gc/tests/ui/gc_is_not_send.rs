use strata_gc::Gc;

fn main() {
    let g = Gc::new(1_u32);
    std::thread::spawn(move || drop(g));
}
