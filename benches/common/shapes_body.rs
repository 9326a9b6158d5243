// The workload shapes of issue 16, where outside measurements found strata
// behind the best peer. Many of them are dominated by page faults and the
// kernel, so they are timed as whole processes: each allocator has its own
// binary (`benches/shapes_<allocator>.rs`) that installs it as
// `#[global_allocator]`, sets `ALLOCATOR` and includes this file, and
// `benches/shapes.py` runs every shape under every allocator, interleaved,
// and takes wall time and page faults from `wait4`, peak RSS from the
// process's own VmHWM.
//
// `shapes_<allocator> <shape>` runs one shape and prints one line of
// `key=value` fields: `checksum` (a function of the work only, never of
// addresses or thread interleaving, so equal checksums show equal work),
// `hwm_kb` (the process's peak RSS), and for the memory shapes
// `rss_after_kb` and `peak_kb` (the resident set after the free and the
// peak before it). Without a shape (as under a plain `cargo bench`) it
// prints the shape names and exits.
// Every shape is deterministic: a fixed-seed PRNG per thread.

use std::alloc::{alloc, alloc_zeroed, dealloc, handle_alloc_error, realloc, Layout};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::BuildHasherDefault;
use std::hint::black_box;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::{mpsc, Arc, Barrier, Mutex};
use std::thread;
use std::time::Duration;

/// xorshift64*: small, fast, and the same stream under every allocator.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        // splitmix64 of the seed, so that nearby seeds give unrelated streams.
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Rng((z ^ (z >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `lo..hi`.
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo) as u64) as usize
    }

    /// Log-uniform in `lo..=hi` (both powers of two): an octave, then a
    /// size inside it, as programs ask for many small and few large blocks.
    fn log_size(&mut self, lo: usize, hi: usize) -> usize {
        let octaves = (hi / lo).trailing_zeros() as u64;
        let base = lo << (self.next() % octaves.max(1));
        (base + self.range(0, base + 1)).min(hi)
    }
}

/// Order-dependent mix of a checksum with one more value.
fn mix(sum: u64, v: u64) -> u64 {
    (sum ^ v).wrapping_mul(0x0000_0100_0000_01b3).rotate_left(5)
}

/// Null is an error, not speed.
fn check(p: *mut u8, l: Layout) -> *mut u8 {
    if p.is_null() {
        handle_alloc_error(l);
    }
    p
}

/// Writes one byte per 4 KiB page of `p[..size]`, as a program that uses
/// its memory does (the page faults are part of the shape).
///
/// # Safety
/// `p` must be valid for writes of `size` bytes.
unsafe fn touch(p: *mut u8, size: usize, v: u8) {
    let mut i = 0;
    while i < size {
        // SAFETY: `i < size`.
        unsafe { p.add(i).write(v) };
        i += 4096;
    }
    if size > 0 {
        // SAFETY: `size - 1 < size`.
        unsafe { p.add(size - 1).write(v) };
    }
}

/// Reads a `kB` field such as `VmHWM` from /proc/self/status.
fn status_kb(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Resident set now, in KiB, from /proc/self/statm (pages, field 2).
fn rss_kb() -> u64 {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = s
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
    pages * page / 1024
}

/// Runs `f(thread index)` on `n` threads and returns their results in
/// thread order.
fn on_threads<T: Send>(n: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let f = &f;
    thread::scope(|s| {
        let hs: Vec<_> = (0..n).map(|t| s.spawn(move || f(t))).collect();
        hs.into_iter().map(|h| h.join().expect("worker panicked")).collect()
    })
}

/// A deterministic hasher: the map's iteration order, and so the
/// serialised text, is the same under every allocator.
type FixedState = BuildHasherDefault<std::collections::hash_map::DefaultHasher>;

/// 2 threads serve requests: each builds a small `HashMap<String, Vec<u8>>`,
/// serialises it into a `String` and drops the map, then caches the text
/// in a shared bounded cache; evicted texts are freed by whichever thread
/// evicts them, often not the one that built them.
fn service_mix() -> u64 {
    const REQUESTS: usize = 80_000;
    const CACHE: usize = 4096;
    struct Cache {
        map: HashMap<u64, String, FixedState>,
        order: VecDeque<u64>,
    }
    let cache = Mutex::new(Cache {
        map: HashMap::with_capacity_and_hasher(CACHE, FixedState::default()),
        order: VecDeque::with_capacity(CACHE),
    });
    let sums = on_threads(2, |t| {
        let mut rng = Rng::new(0x5e41_0000 + t as u64);
        let mut sum = 0u64;
        for r in 0..REQUESTS {
            let entries = rng.range(2, 9);
            let mut m: HashMap<String, Vec<u8>, FixedState> = HashMap::default();
            for e in 0..entries {
                let key = format!("field-{e}-{}", rng.next() % 1000);
                let len = rng.range(0, 200);
                m.insert(key, vec![(len & 0xff) as u8; len]);
            }
            let mut text = String::new();
            for (k, v) in &m {
                text.push_str(k);
                text.push('=');
                for b in v.iter().take(16) {
                    text.push_str(&format!("{b:02x}"));
                }
                text.push_str(&format!(":{};", v.len()));
            }
            drop(m);
            sum = mix(sum, text.len() as u64);
            let id = ((t as u64) << 32) | r as u64;
            let evicted = {
                let mut c = cache.lock().expect("cache lock");
                c.map.insert(id, text);
                c.order.push_back(id);
                if c.order.len() > CACHE {
                    let old = c.order.pop_front().expect("non-empty");
                    c.map.remove(&old)
                } else {
                    None
                }
            };
            // Freed outside the lock, as a service would.
            drop(black_box(evicted));
        }
        sum
    });
    sums.into_iter().fold(0, mix)
}

/// Requests with alignments 8..=4096 and a few of 2 MiB, half zeroed, each
/// live block grown or shrunk by `realloc` to a random size before it is
/// freed.
fn aligned_mix() -> u64 {
    const OPS: usize = 4_000_000;
    const SLOTS: usize = 1024;
    const HUGE: usize = 2 << 20;
    let mut rng = Rng::new(0x000a_119e);
    let mut live: Vec<Option<(*mut u8, Layout)>> = vec![None; SLOTS];
    let mut sum = 0u64;
    for _ in 0..OPS {
        let slot = rng.range(0, SLOTS);
        match live[slot] {
            None => {
                let (align, size) = if rng.next() % 2048 == 0 {
                    (HUGE, rng.log_size(64 << 10, 4 << 20))
                } else {
                    let align = 8usize << rng.range(0, 10);
                    (align, rng.log_size(8, 8192))
                };
                let l = Layout::from_size_align(size, align).expect("layout");
                let zeroed = rng.next() % 2 == 0;
                // SAFETY: `size` is non-zero.
                let p = check(unsafe { if zeroed { alloc_zeroed(l) } else { alloc(l) } }, l);
                assert_eq!(p as usize % align, 0, "misaligned block");
                // SAFETY: `p` holds `size` bytes.
                unsafe {
                    if zeroed {
                        sum = mix(sum, u64::from(p.add(size - 1).read()));
                    }
                    touch(p, size, 0x5a);
                }
                live[slot] = Some((p, l));
                sum = mix(sum, size as u64);
            }
            Some((p, l)) => {
                if rng.next() % 2 == 0 {
                    let new_size = if l.align() == HUGE {
                        rng.log_size(64 << 10, 4 << 20)
                    } else {
                        rng.log_size(8, 8192)
                    };
                    // SAFETY: `p` is live with `l`; `new_size` is non-zero
                    // and far below isize::MAX.
                    let q = check(unsafe { realloc(p, l, new_size) }, l);
                    assert_eq!(q as usize % l.align(), 0, "realloc lost the alignment");
                    // SAFETY: `q` holds `new_size` bytes; the first byte was
                    // kept by realloc.
                    unsafe {
                        sum = mix(sum, u64::from(q.read()));
                        touch(q, new_size, 0x5b);
                    }
                    let nl = Layout::from_size_align(new_size, l.align()).expect("layout");
                    live[slot] = Some((q, nl));
                    sum = mix(sum, new_size as u64);
                } else {
                    // SAFETY: `p` is live with `l`.
                    unsafe { dealloc(p, l) };
                    live[slot] = None;
                }
            }
        }
    }
    for (p, l) in live.into_iter().flatten() {
        // SAFETY: `p` is live with `l`.
        unsafe { dealloc(p, l) };
    }
    sum
}

/// 2 threads each allocate and free `volume` bytes in objects of `size`
/// bytes, in waves: a wave allocates `WAVE` bytes (a byte of each page
/// written), then frees them all, so each wave needs fresh or recycled
/// pages at the rate a batch job uses them.
fn fixed_objects(size: usize, volume: usize) -> u64 {
    const WAVE: usize = 256 << 20;
    let l = Layout::from_size_align(size, 8).expect("layout");
    let sums = on_threads(2, |t| {
        let mut live = Vec::with_capacity(WAVE / size);
        let mut sum = 0u64;
        for wave in 0..volume / WAVE {
            for i in 0..WAVE / size {
                // SAFETY: `size` is non-zero.
                let p = check(unsafe { alloc(l) }, l);
                // SAFETY: `p` holds `size` bytes.
                unsafe { touch(p, size, (i + wave + t) as u8) };
                live.push(p);
            }
            for p in live.drain(..) {
                // SAFETY: `p` is a live block of layout `l`.
                unsafe {
                    sum = sum.wrapping_add(u64::from(p.read()));
                    dealloc(p, l);
                }
            }
        }
        sum
    });
    sums.into_iter().fold(0, mix)
}

/// 1 MiB objects, 1 GiB per thread, 2 threads.
fn big_objects() -> u64 {
    fixed_objects(1 << 20, 1 << 30)
}

/// The same volume as `big_objects` in 64-byte objects (16 M per thread).
fn small_objects() -> u64 {
    fixed_objects(64, 1 << 30)
}

/// Growth: `Vec<u64>` and `String` grown by `push`, four at a time
/// interleaved, and explicit `realloc` chains growing by random factors
/// 1.1–2×, up to 1 MiB.
fn realloc_chains() -> u64 {
    const ROUNDS: usize = 5_000;
    let mut rng = Rng::new(0x0009_e0e7);
    let mut sum = 0u64;
    for _ in 0..ROUNDS {
        let target = rng.log_size(16, 16 << 10);
        let mut vs: [Vec<u64>; 4] = Default::default();
        let mut ss: [String; 4] = Default::default();
        for i in 0..target {
            for (k, v) in vs.iter_mut().enumerate() {
                v.push((i * 4 + k) as u64);
            }
            for s in ss.iter_mut() {
                s.push(char::from(b'a' + (i % 26) as u8));
            }
        }
        sum = mix(sum, vs.iter().map(|v| v.iter().sum::<u64>()).sum());
        sum = mix(sum, ss.iter().map(|s| s.len() as u64).sum());
        drop(black_box(vs));
        drop(black_box(ss));
        // Explicit chains: 4 interleaved, so none is alone at its heap's end.
        let limit = rng.log_size(4 << 10, 1 << 20);
        let mut chains: Vec<(*mut u8, Layout)> = (0..4)
            .map(|_| {
                let l = Layout::from_size_align(16, 8).expect("layout");
                // SAFETY: non-zero size.
                (check(unsafe { alloc(l) }, l), l)
            })
            .collect();
        while chains.iter().any(|&(_, l)| l.size() < limit) {
            for c in chains.iter_mut() {
                let (p, l) = *c;
                if l.size() >= limit {
                    continue;
                }
                let grown = l.size() + l.size() * rng.range(10, 101) / 100;
                let new_size = grown.min(limit);
                // SAFETY: `p` is live with `l`; `new_size` is non-zero.
                let q = check(unsafe { realloc(p, l, new_size) }, l);
                // SAFETY: `q` holds `new_size` bytes.
                unsafe { q.add(new_size - 1).write(new_size as u8) };
                *c = (q, Layout::from_size_align(new_size, 8).expect("layout"));
                sum = mix(sum, new_size as u64);
            }
        }
        for (p, l) in chains {
            // SAFETY: `p` is live with `l`.
            unsafe {
                sum = mix(sum, u64::from(p.add(l.size() - 1).read()));
                dealloc(p, l);
            }
        }
    }
    sum
}

/// A block with its size in its first word, so any thread can free it.
fn sized_block(size: usize, v: u8) -> *mut u8 {
    let l = Layout::from_size_align(size, 8).expect("layout");
    // SAFETY: `size` >= 16.
    let p = check(unsafe { alloc(l) }, l);
    // SAFETY: `p` holds `size` >= 16 bytes, aligned for usize.
    unsafe {
        p.add(8).write_bytes(v, size - 8);
        p.cast::<usize>().write(size);
    }
    p
}

/// Frees a block from `sized_block` and returns its size.
///
/// # Safety
/// `p` must be a live block from `sized_block`.
unsafe fn free_sized(p: *mut u8) -> usize {
    // SAFETY: the first word is the block's size.
    unsafe {
        let size = p.cast::<usize>().read();
        dealloc(p, Layout::from_size_align_unchecked(size, 8));
        size
    }
}

/// Larson-style server: 2 threads replace random slots of one shared array
/// of blocks of 16..1024 bytes, so most blocks are freed by a thread other
/// than the one that allocated them.
fn larson() -> u64 {
    const SLOTS: usize = 8192;
    const OPS: usize = 3_000_000;
    let slots: Vec<AtomicPtr<u8>> = (0..SLOTS)
        .map(|i| AtomicPtr::new(sized_block(16 + i % 1009, 1)))
        .collect();
    let freed = on_threads(2, |t| {
        let mut rng = Rng::new(0x1a45_0000 + t as u64);
        let mut freed = 0u64;
        for _ in 0..OPS {
            let size = rng.range(16, 1025);
            let p = sized_block(size, size as u8);
            let old = slots[rng.range(0, SLOTS)].swap(p, Ordering::AcqRel);
            // SAFETY: every slot holds a live block from `sized_block`,
            // and the swap made this thread its only owner.
            freed += unsafe { free_sized(old) } as u64;
        }
        freed
    });
    let mut total: u64 = freed.iter().sum();
    for s in &slots {
        // SAFETY: as above; no other thread is running.
        total += unsafe { free_sized(s.load(Ordering::Acquire)) } as u64;
    }
    // All sizes ever allocated: independent of the interleaving.
    total
}

/// Thousands of short threads, two at a time, each allocating blocks that
/// a long-lived consumer frees after the producer has exited.
fn thread_churn() -> u64 {
    const PRODUCERS: usize = 3000;
    const BLOCKS: usize = 200;
    let (tx, rx) = mpsc::channel::<Vec<Box<[u8]>>>();
    let consumer = thread::spawn(move || {
        let mut sum = 0u64;
        for batch in rx {
            for b in batch {
                sum = sum.wrapping_add(b.len() as u64 + u64::from(b[0]));
            }
        }
        sum
    });
    for pair in 0..PRODUCERS / 2 {
        let hs: Vec<_> = (0..2)
            .map(|k| {
                thread::spawn(move || {
                    let mut rng = Rng::new((pair * 2 + k) as u64);
                    (0..BLOCKS)
                        .map(|_| {
                            let len = rng.log_size(16, 2048);
                            vec![len as u8; len].into_boxed_slice()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in hs {
            // `join` returns after the producer exited.
            let blocks = h.join().expect("producer panicked");
            tx.send(blocks).expect("consumer alive");
        }
    }
    drop(tx);
    consumer.join().expect("consumer panicked")
}

/// 100 k live small blocks; each round frees a random one and allocates
/// another of a random size 16..=512 in its place.
fn random_replace() -> u64 {
    const LIVE: usize = 100_000;
    const ROUNDS: usize = 8_000_000;
    let mut rng = Rng::new(0x04e9_1ace);
    let mut live: Vec<*mut u8> = (0..LIVE)
        .map(|_| sized_block(rng.range(16, 513), 2))
        .collect();
    let mut sum = 0u64;
    for _ in 0..ROUNDS {
        let i = rng.range(0, LIVE);
        // SAFETY: every entry is a live block from `sized_block`.
        sum = sum.wrapping_add(unsafe { free_sized(live[i]) } as u64);
        let size = rng.range(16, 513);
        // Only the header and one line are written: the shape is the
        // allocator's, not memset's.
        let l = Layout::from_size_align(size, 8).expect("layout");
        // SAFETY: non-zero size.
        let p = check(unsafe { alloc(l) }, l);
        // SAFETY: `p` holds `size` >= 16 bytes, aligned for usize.
        unsafe {
            p.cast::<usize>().write(size);
            p.add(8).write(size as u8);
        }
        live[i] = p;
    }
    for p in live {
        // SAFETY: as above.
        sum = sum.wrapping_add(unsafe { free_sized(p) } as u64);
    }
    sum
}

/// Builds a `BTreeMap<u64, Vec<u8>>` of about 200 MiB of mixed sizes, frees
/// a random 90 % of it, and reports the resident set right after the free
/// against the peak.
fn fragment_then_free() -> (u64, u64, u64) {
    const TOTAL: usize = 200 << 20;
    let mut rng = Rng::new(0xf7a9);
    let mut map = BTreeMap::new();
    let mut bytes = 0;
    while bytes < TOTAL {
        let len = rng.log_size(16, 32 << 10);
        map.insert(rng.next(), vec![len as u8; len]);
        bytes += len;
    }
    map.retain(|_, _| rng.next() % 10 == 0);
    let sum = map
        .iter()
        .fold(0, |s, (k, v)| mix(s, k ^ v.len() as u64));
    let after = rss_kb();
    let peak = status_kb("VmHWM");
    drop(black_box(map));
    (sum, after, peak)
}

/// 2 threads each allocate about 100 MiB of mixed sizes and free all of it,
/// then stay alive and idle; the resident set 200 ms later, against the
/// peak.
fn idle_after_free() -> (u64, u64, u64) {
    const PER_THREAD: usize = 100 << 20;
    let freed = Arc::new(Barrier::new(3));
    let measured = Arc::new(Barrier::new(3));
    let hs: Vec<_> = (0..2u64)
        .map(|t| {
            let (freed, measured) = (freed.clone(), measured.clone());
            thread::spawn(move || {
                let mut rng = Rng::new(0x1d1e + t);
                let mut live = Vec::new();
                let mut bytes = 0;
                let mut sum = 0u64;
                while bytes < PER_THREAD {
                    let len = rng.log_size(16, 64 << 10);
                    live.push(vec![len as u8; len]);
                    bytes += len;
                    sum = mix(sum, len as u64);
                }
                drop(live);
                freed.wait();
                // Idle, alive, until the main thread has measured.
                measured.wait();
                sum
            })
        })
        .collect();
    freed.wait();
    thread::sleep(Duration::from_millis(200));
    let after = rss_kb();
    let peak = status_kb("VmHWM");
    measured.wait();
    let sum = hs
        .into_iter()
        .map(|h| h.join().expect("worker panicked"))
        .fold(0, mix);
    (sum, after, peak)
}

/// Every shape, by its subcommand name.
const SHAPES: [&str; 10] = [
    "service-mix",
    "aligned-mix",
    "big-objects",
    "small-objects",
    "realloc-chains",
    "larson",
    "thread-churn",
    "random-replace",
    "fragment-then-free",
    "idle-after-free",
];

fn main() {
    let Some(shape) = std::env::args().skip(1).find(|a| !a.starts_with("--")) else {
        // Under a plain `cargo bench` (which passes `--bench`): no work.
        println!(
            "shapes_{ALLOCATOR}: run one shape as `shapes_{ALLOCATOR} <shape>`, \
             or all of them with `python3 benches/shapes.py`; shapes: {}",
            SHAPES.join(" ")
        );
        return;
    };
    let line = match shape.as_str() {
        "service-mix" => format!("checksum={:016x}", service_mix()),
        "aligned-mix" => format!("checksum={:016x}", aligned_mix()),
        "big-objects" => format!("checksum={:016x}", big_objects()),
        "small-objects" => format!("checksum={:016x}", small_objects()),
        "realloc-chains" => format!("checksum={:016x}", realloc_chains()),
        "larson" => format!("checksum={:016x}", larson()),
        "thread-churn" => format!("checksum={:016x}", thread_churn()),
        "random-replace" => format!("checksum={:016x}", random_replace()),
        "fragment-then-free" | "idle-after-free" => {
            let (sum, after, peak) = if shape == "idle-after-free" {
                idle_after_free()
            } else {
                fragment_then_free()
            };
            format!("checksum={sum:016x} rss_after_kb={after} peak_kb={peak}")
        }
        other => {
            eprintln!("unknown shape {other}; shapes: {}", SHAPES.join(" "));
            std::process::exit(2);
        }
    };
    // The process's own peak: `wait4`'s `ru_maxrss` cannot go below the
    // RSS of the parent that spawned us (exec carries it over).
    let hwm = status_kb("VmHWM");
    println!("allocator={ALLOCATOR} shape={shape} {line} hwm_kb={hwm}");
}
