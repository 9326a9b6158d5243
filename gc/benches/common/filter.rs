// Shared by `shapes.rs` and `sync.rs`, which print rows that are not
// criterion benches and so filter their names themselves.

/// Whether the command line's filter (if any) selects `id`: plain
/// substrings joined by `|` only; criterion's own filter is a regex.
fn selected(id: &str) -> bool {
    const TAKES_VALUE: &[&str] = &[
        "--warm-up-time",
        "--measurement-time",
        "--sample-size",
        "--save-baseline",
        "-s",
        "--baseline",
        "-b",
        "--baseline-lenient",
        "--load-baseline",
        "--output-format",
        "--color",
        "-c",
        "--plotting-backend",
        "--profile-time",
        "--significance-level",
        "--noise-threshold",
        "--confidence-level",
        "--nresamples",
        "--format",
    ];
    let mut args = std::env::args().skip(1);
    let mut filters = Vec::new();
    while let Some(a) = args.next() {
        if a == "--list" {
            return false;
        }
        if TAKES_VALUE.contains(&a.as_str()) {
            args.next();
        } else if !a.starts_with('-') {
            filters.push(a);
        }
    }
    filters.is_empty()
        || filters
            .iter()
            .flat_map(|f| f.split('|'))
            .any(|f| id.contains(f))
}
