// The criterion group settings every allocator bench uses (included by
// `alloc.rs`, `pools.rs` and `common/global_body.rs`).

/// A benchmark group of 10 samples, 1 s warm-up, 2 s measurement.
fn configure<'a>(
    c: &'a mut criterion::Criterion,
    name: &str,
) -> criterion::BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group(name);
    g.sample_size(10)
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(2));
    g
}
