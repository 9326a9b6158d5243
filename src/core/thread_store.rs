//! Core layer: where each thread's allocator state (`thread`'s heap and
//! counters) lives on targets with the TLS slot (`tls`): in a record of
//! its own, carved from mapped chunks, rather than in a `thread_local!`.
//! That keeps the library's TLS block to a few bytes, which is what lets
//! `libstrata.so` reach its slot in the initial-exec model and still be
//! `dlopen`ed (see `tls`).
//!
//! A thread claims a record on its first call and gives it back once its
//! exit destructor has run, so a program that starts thousands of short
//! threads keeps as many records as it ever had threads alive at once
//! (mimalloc caches its thread data the same way). Calls made after that
//! destructor (later `pthread` key destructors, glibc's own thread
//! cleanup) and calls of a thread whose record could not be mapped share
//! one more record, a static one, under a lock: they are rare, and a
//! record that nothing would give back is never claimed for them.
//!
//! Nothing here allocates: chunks come from `os`. Records are never
//! unmapped (a reader of a record's counters may be another thread;
//! those reads are ordered by the counters' own lock, not by this
//! module).

use core::cell::UnsafeCell;
use core::ptr;

use crate::core::os;
use crate::core::sync::{AtomicBool, Ordering, RawLock};

/// The bytes of one record: a page, more than a thread's state needs
/// (`thread` checks it at compile time), so records never share a cache
/// line.
pub(crate) const RECORD_SIZE: usize = 4096;

/// The alignment of every record.
pub(crate) const RECORD_ALIGN: usize = 64;

/// Records mapped at a time.
const RECORDS_PER_CHUNK: usize = 16;

/// The bytes of a chunk, which is aligned to its size.
const CHUNK_SIZE: usize = RECORDS_PER_CHUNK * RECORD_SIZE;

/// A free record: its first word links the next.
struct FreeRecord {
    next: *mut FreeRecord,
}

/// The record that calls after a thread's exit share.
#[repr(C, align(64))]
struct SharedRecord([u8; RECORD_SIZE]);

/// The alignment of a chunk: its size, at least a page.
fn chunk_align() -> usize {
    CHUNK_SIZE.max(os::page_size())
}

/// The records of live threads' chunks that are not in use.
struct Records {
    free: *mut FreeRecord,
    /// The unclaimed rest of the newest chunk.
    next: *mut u8,
    end: *mut u8,
}

impl Records {
    const EMPTY: Records = Records {
        free: ptr::null_mut(),
        next: ptr::null_mut(),
        end: ptr::null_mut(),
    };

    /// A free record, else the next of the newest chunk, else one of a
    /// new chunk; null when the OS has no memory.
    fn claim(&mut self) -> *mut u8 {
        if !self.free.is_null() {
            let record = self.free;
            // SAFETY: a free record: its first word is the link.
            self.free = unsafe { (*record).next };
            return record.cast();
        }
        if self.next == self.end {
            let chunk = os::reserve_aligned(CHUNK_SIZE, chunk_align());
            if chunk.is_null() {
                return ptr::null_mut();
            }
            self.next = chunk;
            // SAFETY: the end of the chunk just mapped.
            self.end = unsafe { chunk.add(CHUNK_SIZE) };
        }
        let record = self.next;
        // SAFETY: at most `end`: chunks hold whole records.
        self.next = unsafe { record.add(RECORD_SIZE) };
        record
    }

    /// # Safety
    /// As for [`ThreadStore::release`].
    unsafe fn release(&mut self, record: *mut u8) {
        let record = record.cast::<FreeRecord>();
        // SAFETY: `record` is ours to overwrite (caller), and aligned for a
        // pointer.
        unsafe { (*record).next = self.free };
        self.free = record;
    }
}

/// Records of live threads, the free ones, and the shared one.
pub(crate) struct ThreadStore {
    lock: RawLock,
    /// Guarded by `lock`.
    records: UnsafeCell<Records>,
    shared_lock: RawLock,
    /// Guarded by `shared_lock`.
    shared: UnsafeCell<SharedRecord>,
    /// Whether `shared` has been filled (set once, under the lock).
    shared_ready: AtomicBool,
}

// SAFETY: every field but the atomic is read and written only with its
// lock held (`shared`'s address alone is handed out without it).
unsafe impl Sync for ThreadStore {}

impl ThreadStore {
    #[cfg(not(loom))]
    const fn new() -> Self {
        ThreadStore {
            lock: RawLock::new(),
            records: UnsafeCell::new(Records::EMPTY),
            shared_lock: RawLock::new(),
            shared: UnsafeCell::new(SharedRecord([0; RECORD_SIZE])),
            shared_ready: AtomicBool::new(false),
        }
    }

    #[cfg(loom)]
    fn new() -> Self {
        ThreadStore {
            lock: RawLock::new(),
            records: UnsafeCell::new(Records::EMPTY),
            shared_lock: RawLock::new(),
            shared: UnsafeCell::new(SharedRecord([0; RECORD_SIZE])),
            shared_ready: AtomicBool::new(false),
        }
    }

    /// A record of [`RECORD_SIZE`] bytes aligned to [`RECORD_ALIGN`], for
    /// the calling thread alone until [`ThreadStore::release`]; its
    /// contents are unspecified. Null when the OS has no memory.
    pub(crate) fn claim(&self) -> *mut u8 {
        // SAFETY: we hold the lock.
        self.lock.with(|| unsafe { (*self.records.get()).claim() })
    }

    /// Gives back a record.
    ///
    /// # Safety
    /// `record` came from [`ThreadStore::claim`] and nothing uses it any
    /// more.
    pub(crate) unsafe fn release(&self, record: *mut u8) {
        // SAFETY: we hold the lock; the rest is the caller's.
        self.lock
            .with(|| unsafe { (*self.records.get()).release(record) });
    }

    /// Runs `f` on the shared record with its lock held; `init` fills the
    /// record the first time.
    pub(crate) fn with_shared<R>(&self, init: fn(*mut u8), f: impl FnOnce(*mut u8) -> R) -> R {
        self.shared_lock.with(|| {
            let record = self.shared_record();
            if !self.shared_ready.load(Ordering::Relaxed) {
                init(record);
                // Release: pairs with the Acquire in `shared`.
                self.shared_ready.store(true, Ordering::Release);
            }
            f(record)
        })
    }

    /// The shared record, filled by `init` if it was not yet; for what
    /// may be read without the lock (`thread`'s counters, which are
    /// atomics). Takes no lock once the record is filled, so `f` of
    /// [`ThreadStore::with_shared`] may call it.
    pub(crate) fn shared(&self, init: fn(*mut u8)) -> *mut u8 {
        if self.shared_ready.load(Ordering::Acquire) {
            return self.shared_record();
        }
        self.with_shared(init, |record| record)
    }

    fn shared_record(&self) -> *mut u8 {
        self.shared.get().cast()
    }

    /// Takes both locks (before `fork`), in the order of every other path:
    /// the shared record's lock is held while the heap takes the others.
    pub(crate) fn lock_all(&self) {
        self.shared_lock.lock();
        self.lock.lock();
    }

    /// Releases what [`ThreadStore::lock_all`] took.
    pub(crate) fn unlock_all(&self) {
        self.lock.unlock();
        self.shared_lock.unlock();
    }
}

/// The process-wide store.
#[cfg(not(loom))]
pub(crate) fn store() -> &'static ThreadStore {
    static STORE: ThreadStore = ThreadStore::new();
    &STORE
}

/// The store of the current loom execution.
#[cfg(loom)]
pub(crate) fn store() -> &'static ThreadStore {
    loom::lazy_static! {
        static ref STORE: ThreadStore = ThreadStore::new();
    }
    &STORE
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// Records are distinct, aligned, writable whole, and come back after
    /// a release; a store maps more chunks as it needs them.
    #[test]
    fn claims_are_distinct_and_released_records_come_back() {
        let store = ThreadStore::new();
        let claimed: std::vec::Vec<*mut u8> = (0..RECORDS_PER_CHUNK * 2 + 3)
            .map(|_| store.claim())
            .collect();
        for (i, &r) in claimed.iter().enumerate() {
            assert!(!r.is_null());
            assert_eq!(r.addr() % RECORD_ALIGN, 0);
            // SAFETY: a claimed record of RECORD_SIZE bytes.
            unsafe { r.write_bytes(i as u8, RECORD_SIZE) };
        }
        for (i, &r) in claimed.iter().enumerate() {
            // SAFETY: as above; nothing else wrote it.
            unsafe { assert_eq!(*r.add(RECORD_SIZE - 1), i as u8) };
        }
        let mut sorted = claimed.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), claimed.len());
        // SAFETY: claimed above, no longer used.
        unsafe { store.release(claimed[5]) };
        assert_eq!(store.claim(), claimed[5]);
        // The store never unmaps; the test does, chunk by chunk.
        let mut chunks: std::vec::Vec<*mut u8> = claimed
            .iter()
            .map(|r| r.map_addr(|a| a & !(CHUNK_SIZE - 1)))
            .collect();
        chunks.sort();
        chunks.dedup();
        assert_eq!(chunks.len(), 3);
        for chunk in chunks {
            // SAFETY: a chunk the store mapped; none of its records is used.
            unsafe { os::release(chunk, CHUNK_SIZE, chunk_align()) };
        }
    }

    /// The shared record is filled once, and is the same on every call.
    #[test]
    fn the_shared_record_is_filled_once() {
        fn init(record: *mut u8) {
            // SAFETY: the shared record, `RECORD_SIZE` bytes.
            unsafe { *record += 1 };
        }
        let store = ThreadStore::new();
        let a = store.with_shared(init, |r| r);
        let b = store.shared(init);
        assert_eq!(a, b);
        // SAFETY: the shared record; no other thread uses this store.
        assert_eq!(unsafe { *a }, 1);
    }
}
