//! Core layer: the purge thread's sleep and wake.
//!
//! Freed memory goes back to the OS once the purge delay has passed, and
//! the allocator's slow paths run a due purge. A program whose threads
//! free their memory and then go idle (a server between bursts, workers
//! waiting on a queue) takes no slow path, so without help it would keep
//! all of it. The purge thread (its loop is in `purge`) sleeps until the
//! next purge deadline and runs the purge then.
//!
//! It is started by the second heap to start, so single-threaded programs
//! never get one. The heap's start runs outside any allocator state, so
//! what `pthread_create` allocates re-enters the allocator safely. The
//! thread itself never allocates, so it has no heap. `STRATA_PURGE_THREAD=0`
//! turns it off. A purge delay of 0 needs none.
//!
//! Waking. A new deadline is announced by [`deadline_set`]: a freed arena
//! slot or large mapping when none was waiting. The thread waits in one of
//! two ways:
//!
//! - with a deadline pending, until that deadline. Later deadlines come
//!   after it, since there is one delay, and the purge pass that runs at
//!   it finds them;
//! - with none pending, idle, for up to `IDLE_POLL_MS`.
//!
//! The thread stores `idle` and then reads the deadlines. The announcer
//! stores its deadline and then reads `idle`, with `SeqCst` fences
//! between. So either the thread sees the deadline, or the announcer sees
//! `idle` and bumps the futex word, which makes the thread's wait return at
//! once. The loom model `purge_wake` checks this. A wake that is lost anyway
//! costs at most one poll interval, never memory safety: a purge only ever
//! runs what a slow path could run at the same moment.

use crate::core::os;
use crate::core::sync::{fence, AtomicBool, AtomicU32, Ordering};

/// How long an idle purge thread sleeps before looking again.
const IDLE_POLL_MS: u64 = 1000;

const NOT_STARTED: u32 = 0;
const STARTED: u32 = 1;
const OFF: u32 = 2;

/// The purge thread's state and wait word.
pub(crate) struct Wake {
    state: AtomicU32,
    /// The futex word the thread waits on; bumped to wake it.
    word: AtomicU32,
    /// The thread is waiting with no deadline pending.
    idle: AtomicBool,
}

impl Wake {
    #[cfg(not(loom))]
    const fn new() -> Self {
        Wake {
            state: AtomicU32::new(NOT_STARTED),
            word: AtomicU32::new(0),
            idle: AtomicBool::new(false),
        }
    }

    #[cfg(loom)]
    fn new() -> Self {
        Wake {
            state: AtomicU32::new(NOT_STARTED),
            word: AtomicU32::new(0),
            idle: AtomicBool::new(false),
        }
    }

    /// [`deadline_set`].
    pub(crate) fn announce(&self) {
        fence(Ordering::SeqCst);
        if self.idle.load(Ordering::Relaxed) && self.idle.swap(false, Ordering::Relaxed) {
            // Release: a thread that reads the new value also reads the
            // deadline stored before it.
            self.word.fetch_add(1, Ordering::Release);
            os::wake(&self.word);
        }
    }

    /// The first half of [`sleep_until`]: returns the futex word's value to
    /// wait on and the deadline to wait for (0: none).
    pub(crate) fn prepare(&self, next_deadline: impl Fn() -> u64) -> (u32, u64) {
        self.idle.store(true, Ordering::Relaxed);
        let seen = self.word.load(Ordering::Acquire);
        fence(Ordering::SeqCst);
        let due = next_deadline();
        if due != 0 {
            self.idle.store(false, Ordering::Relaxed);
        }
        (seen, due)
    }

    /// The futex word, for the loom model.
    #[cfg(loom)]
    pub(crate) fn word(&self) -> u32 {
        self.word.load(Ordering::Acquire)
    }
}

/// The process's purge thread state.
#[cfg(not(loom))]
pub(crate) fn wake() -> &'static Wake {
    static WAKE: Wake = Wake::new();
    &WAKE
}

/// The purge thread state of the current loom execution.
#[cfg(loom)]
pub(crate) fn wake() -> &'static Wake {
    loom::lazy_static! {
        static ref WAKE: Wake = Wake::new();
    }
    &WAKE
}

/// Turns the purge thread off (`STRATA_PURGE_THREAD=0`), if it has not
/// started.
pub(crate) fn turn_off() {
    let _ = wake()
        .state
        .compare_exchange(NOT_STARTED, OFF, Ordering::Relaxed, Ordering::Relaxed);
}

/// Starts a thread running `body` unless one was started or the thread
/// is off. The caller must hold no allocator state (see the module docs).
pub(crate) fn start(body: extern "C" fn(*mut core::ffi::c_void) -> *mut core::ffi::c_void) {
    let state = &wake().state;
    if state.load(Ordering::Relaxed) == NOT_STARTED
        && state
            .compare_exchange(NOT_STARTED, STARTED, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        && !os::spawn_detached(body, c"strata-purge")
    {
        state.store(OFF, Ordering::Relaxed);
    }
}

/// A purge deadline was set where none was pending: wakes the thread if
/// it waits without one.
#[inline]
pub(crate) fn deadline_set() {
    wake().announce();
}

/// In the child of `fork`: the thread does not exist there.
pub(crate) fn forget_after_fork() {
    let w = wake();
    if w.state.load(Ordering::Relaxed) == STARTED {
        w.state.store(NOT_STARTED, Ordering::Relaxed);
    }
    w.idle.store(false, Ordering::Relaxed);
}

/// The purge thread's wait: until `next_deadline()` (0: none pending,
/// then up to `IDLE_POLL_MS`) or a wake from [`deadline_set`].
pub(crate) fn sleep_until(next_deadline: fn() -> u64) {
    let w = wake();
    let (seen, due) = w.prepare(next_deadline);
    let timeout = if due == 0 {
        IDLE_POLL_MS
    } else {
        // One more millisecond: the clock of the deadlines is coarse.
        due.saturating_sub(os::now_ms()) + 1
    };
    os::wait(&w.word, seen, timeout);
}
