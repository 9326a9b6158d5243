//! Core layer: the secure level — the key that encodes free-list links,
//! and the level the process runs at.
//!
//! With the `secure` feature, the link word of every free block of a pool
//! (its `free`, `local_free` and `thread_free` lists) holds the next
//! block's address encoded with a per-process random key, and every link
//! the allocator follows is decoded and checked: it must be null or a
//! block start of the same pool, carved so far (`Pool::next_free`). A use
//! after free that overwrites a link then aborts on the pop that would
//! follow it, naming the pool and the link, instead of handing out memory
//! the attacker chose (mimalloc's `MI_SECURE` encodes its links the same
//! way). `STRATA_SECURE` picks the level at run time: 0 (links plain and
//! unchecked), 1 (the default with the feature), 2 (as 1, and the blocks
//! carved from a pool are linked in a random order, [`shuffle`], so that
//! where the next block comes from cannot be guessed from the last one,
//! as mimalloc's secure mode does, and freed small blocks are zeroed,
//! [`zeroes`]). Without the
//! feature all of it compiles away ([`COMPILED`]) and the variable is
//! ignored with a warning.
//!
//! The key is fixed once per process, before the first pool is made
//! ([`ensure`] from `Pool::init`), and never changes: every link is
//! encoded and decoded with the same key. It comes from `getrandom(2)`;
//! if that fails, from what differs between runs (ASLR'd addresses, the
//! clock, the process id), mixed.
//!
//! `core`'s atomics under loom too, like the chunk map: a value set once,
//! before any pool exists, is no protocol to model.

use core::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use crate::core::os;

/// Whether the secure level is compiled in (the `secure` feature). False:
/// links are plain pointers and nothing below runs.
pub(crate) const COMPILED: bool = cfg!(feature = "secure");

/// The level without `STRATA_SECURE`, when [`COMPILED`].
const DEFAULT_LEVEL: u8 = 1;

/// [`ensure`]'s progress: not started, under way, done.
const UNSET: u8 = 0;
const SETTING: u8 = 1;
const SET: u8 = 2;

static STATE: AtomicU8 = AtomicU8::new(UNSET);
static LEVEL: AtomicU8 = AtomicU8::new(0);
/// The two words of the key, `add` then `xor` (0 and 0 at level 0: links
/// plain). `add` is odd at level 1 and up, so [`Key::checking`] can tell.
/// One static, so a pop finds both through one address.
static KEY: [AtomicUsize; 2] = [AtomicUsize::new(0), AtomicUsize::new(0)];

/// The link key: `(add, xor)`, both 0 when links are plain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Key {
    add: usize,
    xor: usize,
}

impl Key {
    /// Links plain, unchecked.
    pub(crate) const PLAIN: Key = Key { add: 0, xor: 0 };

    /// The key of two random words (the first made odd, so never
    /// [`Key::PLAIN`]).
    pub(crate) const fn from_words(add: u64, xor: u64) -> Key {
        Key {
            add: add as usize | 1,
            xor: xor as usize,
        }
    }

    /// Whether links are encoded and checked.
    #[inline(always)]
    pub(crate) const fn checking(self) -> bool {
        self.add != 0
    }

    /// The link word for a link to address `next` (mimalloc's
    /// `mi_ptr_encode`: xor, rotate, add).
    #[inline(always)]
    pub(crate) const fn encode(self, next: usize) -> usize {
        (next ^ self.xor)
            .rotate_left((self.add & 63) as u32)
            .wrapping_add(self.add)
    }

    /// The address a link word links to: [`Key::encode`] undone.
    #[inline(always)]
    pub(crate) const fn decode(self, word: usize) -> usize {
        word.wrapping_sub(self.add)
            .rotate_right((self.add & 63) as u32)
            ^ self.xor
    }
}

/// The process's link key. [`ensure`] has run (every pool's creation
/// runs it first), so this is the key every link was encoded with.
#[inline(always)]
pub(crate) fn key() -> Key {
    if !COMPILED {
        return Key::PLAIN;
    }
    Key {
        add: KEY[0].load(Ordering::Relaxed),
        xor: KEY[1].load(Ordering::Relaxed),
    }
}

/// Whether fresh blocks are handed out in a random order (level 2).
/// [`ensure`] has run (as for [`key`]).
#[inline]
pub(crate) fn shuffles() -> bool {
    COMPILED && LEVEL.load(Ordering::Relaxed) >= 2
}

/// Whether each large block has a `PROT_NONE` guard page after it
/// (level 1 and up): a linear overflow past its end faults at once. Runs
/// [`ensure`] first: a large block may be the process's first allocation.
#[inline]
pub(crate) fn guards() -> bool {
    reached(1)
}

/// Whether small blocks are zeroed when freed (level 2): after the checks
/// of the free, all but their link and tag words, so a use after free
/// reads zeros. Runs [`ensure`] first (a heap may start before any pool).
#[inline]
pub(crate) fn zeroes() -> bool {
    reached(2)
}

/// Whether the level is `level` or higher, read first if no pool has yet.
#[inline]
fn reached(level: u8) -> bool {
    if !COMPILED {
        return false;
    }
    ensure();
    LEVEL.load(Ordering::Relaxed) >= level
}

/// [`zeroes`] where [`ensure`] has run (a pool exists): a load.
#[inline(always)]
pub(crate) fn zeroes_set() -> bool {
    COMPILED && LEVEL.load(Ordering::Relaxed) >= 2
}

/// A seed for [`shuffle`] of the blocks carved at `addr`: differs between
/// processes (the key) and between carves (the address).
pub(crate) fn seed_for(addr: usize) -> u64 {
    mix(KEY[1].load(Ordering::Relaxed) as u64 ^ addr as u64)
}

/// Puts `order` in a random order drawn from `seed` (Fisher-Yates over
/// splitmix64; the carve of a pool is at most a few hundred blocks).
pub(crate) fn shuffle(order: &mut [u16], seed: u64) {
    let mut state = seed;
    for i in (1..order.len()).rev() {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let j = (mix(state) % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
}

/// Fixes the level and the key, once per process; later calls return at
/// once (a load). Called before the first pool is made, and at process
/// start (`config::init`), whichever comes first.
#[inline]
pub(crate) fn ensure() {
    if COMPILED && STATE.load(Ordering::Acquire) != SET {
        set_up();
    }
}

/// [`ensure`]'s work: one thread reads `STRATA_SECURE` and draws the key;
/// any other thread that gets here meanwhile waits for it (a few system
/// calls, once).
#[cold]
#[inline(never)]
fn set_up() {
    if STATE
        .compare_exchange(UNSET, SETTING, Ordering::Acquire, Ordering::Acquire)
        .is_err()
    {
        while STATE.load(Ordering::Acquire) != SET {
            core::hint::spin_loop();
        }
        return;
    }
    let level = match os::secure_env_var(c"STRATA_SECURE") {
        None => DEFAULT_LEVEL,
        Some(value) => parse_level(value).unwrap_or_else(|| {
            os::write_stderr(b"strata-alloc: STRATA_SECURE must be 0, 1 or 2; using 1\n");
            DEFAULT_LEVEL
        }),
    };
    let key = if level == 0 {
        Key::PLAIN
    } else {
        Key::from_words(random_word(0), random_word(1))
    };
    LEVEL.store(level, Ordering::Relaxed);
    KEY[0].store(key.add, Ordering::Relaxed);
    KEY[1].store(key.xor, Ordering::Relaxed);
    // Release: a thread that sees SET sees the key (pools are handed
    // between threads with synchronisation of their own, too).
    STATE.store(SET, Ordering::Release);
}

/// What `STRATA_SECURE=value` asks for; `None` if malformed.
pub(crate) fn parse_level(value: &[u8]) -> Option<u8> {
    match value {
        b"0" => Some(0),
        b"1" => Some(1),
        b"2" => Some(2),
        _ => None,
    }
}

/// A random word from the OS, or, when it has none, one mixed from what
/// differs between runs and calls (`salt`).
fn random_word(salt: u64) -> u64 {
    if let Some(word) = os::random_u64() {
        return word;
    }
    let local = 0u8;
    let seed = (core::ptr::addr_of!(local).addr() as u64)
        ^ (core::ptr::addr_of!(STATE).addr() as u64).rotate_left(32)
        ^ os::now_ms().wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ u64::from(std::process::id()).rotate_left(16)
        ^ salt.wrapping_mul(0xd1b5_4a32_d192_ed03);
    mix(seed)
}

/// splitmix64's finaliser: every input bit reaches every output bit.
const fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_decode_to_what_was_encoded() {
        let keys = [
            Key::PLAIN,
            Key::from_words(0, 0),
            Key::from_words(mix(1), mix(2)),
            Key::from_words(u64::MAX, u64::MAX),
        ];
        for key in keys {
            for next in [0usize, 16, 0x7f12_3456_7890, usize::MAX - 15] {
                assert_eq!(key.decode(key.encode(next)), next, "{key:?} {next:#x}");
            }
        }
        assert_eq!(Key::PLAIN.encode(0x1234_5670), 0x1234_5670, "plain links");
        assert!(!Key::PLAIN.checking());
        assert!(
            Key::from_words(0, 0).checking(),
            "a drawn key is never plain"
        );
        let key = Key::from_words(mix(3), mix(4));
        assert_ne!(key.encode(0x7f00_0000_1000), 0x7f00_0000_1000);
        assert_ne!(key.encode(0), 0, "null is encoded too");
    }

    #[test]
    fn shuffles_are_permutations_that_differ_by_seed() {
        let identity: Vec<u16> = (0..256).collect();
        let mut orders = Vec::new();
        for seed in [1u64, 2, 3] {
            let mut order = identity.clone();
            shuffle(&mut order, seed);
            let mut sorted = order.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, identity, "a permutation");
            let in_place = order.windows(2).filter(|w| w[1] == w[0] + 1).count();
            assert!(in_place < 16, "{in_place} neighbours kept");
            orders.push(order);
        }
        assert!(orders[0] != orders[1] && orders[1] != orders[2]);
        let mut again = identity.clone();
        shuffle(&mut again, 1);
        assert_eq!(again, orders[0], "the same seed, the same order");
        let mut one = [0u16];
        shuffle(&mut one, 5);
        assert_eq!(one, [0]);
    }

    #[test]
    fn levels_are_parsed() {
        assert_eq!(parse_level(b"0"), Some(0));
        assert_eq!(parse_level(b"2"), Some(2));
        for bad in [&b""[..], b"3", b"yes", b" 1", b"01"] {
            assert_eq!(parse_level(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn fallback_words_differ() {
        assert_ne!(mix(1), mix(2));
        assert_ne!(random_word(0), random_word(1));
    }
}
