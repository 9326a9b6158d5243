// `sync::Gc` shares its value between threads: a `RefCell` inside must be
// a `Mutex` or `RwLock` instead.
fn main() {
    let _ = strata_gc::sync::Gc::new(std::cell::RefCell::new(0_u32));
}
