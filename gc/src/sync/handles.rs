//! Sync layer: the handles — [`Gc<T>`], the `Arc` of cycle collection,
//! and its [`Weak<T>`].

use std::borrow::Borrow;
use std::cmp::Ordering as CmpOrdering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::ops::Deref;
use std::ptr::{self, NonNull};

use super::auto;
use super::boxed::{
    count_overflow, epoch_of, header, inc_strong, release_last, release_weak, try_upgrade, value,
    GcBox, Header, Upgrade, CANDIDATE, COLLECTING, COUNT, COUNT_LIMIT, DROPPED, EPOCHS, STRONG,
};
use super::buffer;
use super::shim::Ordering;
use crate::header::{VisitMode, Visitor};
use crate::trace::{Finalize, Trace};

/// A thread-safe reference-counted pointer whose cycles are collected: the
/// [`Arc`](std::sync::Arc) of `strata_gc`.
///
/// Cloning gives another handle to the same value; when the last handle is
/// dropped the value is dropped at once, on the thread that dropped it,
/// exactly like `Arc`. Values that own other `Gc`s in a cycle are found by
/// the collector and freed (see [the module documentation](super)).
///
/// `Gc<T>` is `Send` and `Sync` when `T` is. Mutation goes through
/// `Mutex`, `RwLock` or atomics inside the value, as with `Arc`: those
/// locks implement [`Trace`], and the collector traces through them.
pub struct Gc<T: Trace + Send + Sync + 'static> {
    ptr: NonNull<Header>,
    _owns: PhantomData<GcBox<T>>,
}

// SAFETY: as `Arc<T>`: the value is shared between threads (Sync) and may be
// dropped on any of them (Send); the counts are atomic.
unsafe impl<T: Trace + Send + Sync> Send for Gc<T> {}
// SAFETY: as above.
unsafe impl<T: Trace + Send + Sync> Sync for Gc<T> {}

impl<T: Trace + Send + Sync> Gc<T> {
    /// Put `value` in a new box with one strong handle. Costs what
    /// `Arc::new` costs: the box is registered nowhere.
    pub fn new(value: T) -> Self {
        Gc::from_header(GcBox::allocate(value))
    }

    fn from_header(ptr: NonNull<Header>) -> Self {
        Gc {
            ptr,
            _owns: PhantomData,
        }
    }

    /// A pointer to the value (valid while a handle lives).
    pub fn as_ptr(this: &Self) -> *const T {
        // SAFETY: the box is allocated while `this` lives; no reference to
        // the value is made.
        unsafe { &raw const (*this.ptr.cast::<GcBox<T>>().as_ptr()).value }
    }

    /// Whether two handles point to the same allocation.
    pub fn ptr_eq(this: &Self, other: &Self) -> bool {
        this.ptr == other.ptr
    }

    /// Number of strong handles (the collector's own reference during a
    /// collection is not counted).
    pub fn strong_count(this: &Self) -> usize {
        handles(header(this.ptr).strong.load(Ordering::Relaxed))
    }

    /// Number of [`Weak`] handles.
    pub fn weak_count(this: &Self) -> usize {
        // Minus the weak reference all strong handles share, and the
        // candidate stack's.
        let hd = header(this.ptr);
        let stack = (hd.strong.load(Ordering::Relaxed) & CANDIDATE != 0) as u64;
        (hd.weak.load(Ordering::Relaxed) - 1 - stack) as usize
    }

    /// Make a [`Weak`] handle.
    pub fn downgrade(this: &Self) -> Weak<T> {
        let hd = header(this.ptr);
        if hd.weak.fetch_add(1, Ordering::Relaxed) & COUNT >= COUNT_LIMIT {
            count_overflow();
        }
        let epoch = epoch_of(hd.strong.load(Ordering::Relaxed));
        Weak {
            tagged: this.ptr.as_ptr().map_addr(|a| a | epoch as usize),
            _owns: PhantomData,
        }
    }

    /// A mutable reference to the value if this is its only handle, no
    /// [`Weak`] exists and the collector has nothing to do with it.
    ///
    /// Unlike `Arc::get_mut`, this also returns `None` while the value is a
    /// candidate of the cycle collector: after another handle to it was
    /// dropped and until the next collection (the candidate stack can reach
    /// the value, so it is not provably unique).
    pub fn get_mut(this: &mut Self) -> Option<&mut T> {
        let hd = header(this.ptr);
        // Acquire on the weak word first: no `Weak` exists and none can
        // appear (making one needs a strong handle, and this is the only
        // one); then no other strong handle and no collection.
        if hd.weak.load(Ordering::Acquire) != 1 {
            return None;
        }
        if !is_sole(hd.strong.load(Ordering::Acquire)) {
            return None;
        }
        // SAFETY: this is the only handle, no weak handle or candidate stack
        // entry or collection can reach the value, and `this` is borrowed
        // mutably for the lifetime of the result.
        Some(unsafe { &mut (*this.ptr.cast::<GcBox<T>>().as_ptr()).value })
    }

    /// The value, if this is its only strong handle (weak handles then stop
    /// upgrading); otherwise the handle back.
    pub fn try_unwrap(this: Self) -> Result<T, Self> {
        let strong = &header(this.ptr).strong;
        let mut cur = strong.load(Ordering::Relaxed);
        loop {
            if !is_sole(cur) {
                return Err(this);
            }
            match strong.compare_exchange_weak(cur, cur - 1, STRONG, Ordering::Relaxed) {
                Ok(_) => break,
                Err(now) => cur = now,
            }
        }
        let this = ManuallyDrop::new(this);
        // SAFETY: the count is now zero: no handle can reach the value and
        // no collection will hold the box; the value is moved out once.
        let v = unsafe { ptr::read(&(*this.ptr.cast::<GcBox<T>>().as_ptr()).value) };
        // SAFETY: the strong handles' weak reference, the value moved out.
        unsafe { release_weak(this.ptr) };
        Ok(v)
    }

    /// The value, if this is its only strong handle; `None` otherwise (as
    /// `Arc::into_inner`, with the same caveat of `try_unwrap`).
    pub fn into_inner(this: Self) -> Option<T> {
        Gc::try_unwrap(this).ok()
    }

    #[cold]
    #[inline(never)]
    fn dropped_panic() -> ! {
        panic!(
            "strata_gc::sync: dereferenced a Gc whose value the cycle collector \
             already dropped (a Drop impl of garbage reached another object of \
             the same garbage)"
        )
    }
}

/// The strong handles the strong word `w` counts: its count, minus the
/// collector's hold while `COLLECTING`.
fn handles(w: u64) -> usize {
    ((w & COUNT) - (w & COLLECTING != 0) as u64) as usize
}

/// Whether the strong word `w` says its handle is the only one: a count of
/// one, no collection holding the box or about to, the value not dropped.
fn is_sole(w: u64) -> bool {
    w & (COUNT | COLLECTING | CANDIDATE | DROPPED) == 1
}

impl<T: Trace + Send + Sync> Deref for Gc<T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        // Values that cannot own a `Gc` are never dropped by the collector.
        if T::MAY_CONTAIN_GC && header(self.ptr).strong.load(Ordering::Relaxed) & DROPPED != 0 {
            Self::dropped_panic();
        }
        // SAFETY: the box is alive while `self` is and its value is not
        // dropped (checked above); only shared references are handed out
        // while more than one handle exists.
        unsafe { value::<T>(self.ptr) }
    }
}

impl<T: Trace + Send + Sync> Clone for Gc<T> {
    #[inline]
    fn clone(&self) -> Self {
        inc_strong(self.ptr);
        Gc::from_header(self.ptr)
    }
}

impl<T: Trace + Send + Sync> Drop for Gc<T> {
    #[inline]
    fn drop(&mut self) {
        if T::MAY_CONTAIN_GC {
            // SAFETY: this handle's strong reference, given up once.
            if let Some(n) = unsafe { buffer::release(self.ptr) } {
                auto::candidate_pushed(n);
            }
            return;
        }
        // Release (in `STRONG`): our uses of the value happen before its
        // drop.
        let old = header(self.ptr).strong.fetch_sub(1, STRONG);
        if old & COUNT == 1 {
            // SAFETY: ours was the last strong reference.
            unsafe { release_last(self.ptr, old) };
        }
    }
}

impl<T: Trace + Send + Sync> Finalize for Gc<T> {
    const NEEDS_FINALIZE: bool = false;
}

// SAFETY: a `Gc` owns one strong reference to its box, reported once.
unsafe impl<T: Trace + Send + Sync> Trace for Gc<T> {
    const INTERIOR_MUTABLE: bool = false;
    #[inline]
    fn trace(&self, visitor: &mut Visitor) {
        if let VisitMode::Sync(sink) = visitor.mode {
            // SAFETY: the sink outlives the visitor; the box is alive while
            // the value holding `self` is.
            unsafe { (*sink).edge(self.ptr.cast()) }
        }
    }
}

/// A handle that does not keep the value alive; [`upgrade`](Weak::upgrade)
/// gives a [`Gc`] while the value lives.
///
/// When the collector finds the value unreachable, its weak handles stop
/// upgrading before any finalizer runs (PEP 442). Those made after a
/// finalizer resurrected it upgrade again (the weak epoch, as in the
/// single-threaded `Weak`).
pub struct Weak<T: Trace + Send + Sync + 'static> {
    /// The box address with the weak epoch of its making in the low bits;
    /// null for [`Weak::new`], which points nowhere.
    tagged: *mut Header,
    _owns: PhantomData<GcBox<T>>,
}

// SAFETY: as `std::sync::Weak<T>`.
unsafe impl<T: Trace + Send + Sync> Send for Weak<T> {}
// SAFETY: as above.
unsafe impl<T: Trace + Send + Sync> Sync for Weak<T> {}

impl<T: Trace + Send + Sync> Weak<T> {
    /// A weak handle to nothing: `upgrade` always fails.
    pub const fn new() -> Self {
        Weak {
            tagged: ptr::null_mut(),
            _owns: PhantomData,
        }
    }

    fn header_ptr(&self) -> Option<NonNull<Header>> {
        NonNull::new(self.tagged.map_addr(|a| a & !(EPOCHS - 1)))
    }

    fn epoch(&self) -> u64 {
        (self.tagged.addr() & (EPOCHS - 1)) as u64
    }

    /// A strong handle, if the value is alive and the collector has not
    /// found it unreachable.
    pub fn upgrade(&self) -> Option<Gc<T>> {
        let h = self.header_ptr()?;
        match try_upgrade(h, self.epoch()) {
            Upgrade::Done => Some(Gc::from_header(h)),
            Upgrade::Dead => None,
        }
    }

    /// Number of strong handles (0 once the value is gone).
    pub fn strong_count(&self) -> usize {
        self.header_ptr().map_or(0, |h| {
            let w = header(h).strong.load(Ordering::Relaxed);
            if w & DROPPED != 0 {
                return 0;
            }
            handles(w)
        })
    }

    /// Whether two weak handles point to the same allocation.
    pub fn ptr_eq(&self, other: &Self) -> bool {
        self.header_ptr() == other.header_ptr()
    }
}

impl<T: Trace + Send + Sync> Default for Weak<T> {
    fn default() -> Self {
        Weak::new()
    }
}

impl<T: Trace + Send + Sync> Clone for Weak<T> {
    fn clone(&self) -> Self {
        if let Some(h) = self.header_ptr() {
            if header(h).weak.fetch_add(1, Ordering::Relaxed) & COUNT >= COUNT_LIMIT {
                count_overflow();
            }
        }
        Weak {
            tagged: self.tagged,
            _owns: PhantomData,
        }
    }
}

impl<T: Trace + Send + Sync> Drop for Weak<T> {
    fn drop(&mut self) {
        if let Some(h) = self.header_ptr() {
            // SAFETY: this handle owns one weak reference; the value is gone
            // if it is the last (the strong handles share one weak reference
            // until the value is dropped).
            unsafe { release_weak(h) }
        }
    }
}

impl<T: Trace + Send + Sync> Finalize for Weak<T> {
    const NEEDS_FINALIZE: bool = false;
}

// SAFETY: a weak handle owns no strong reference: nothing to report.
unsafe impl<T: Trace + Send + Sync> Trace for Weak<T> {
    const MAY_CONTAIN_GC: bool = false;
    #[inline]
    fn trace(&self, _: &mut Visitor) {}
}

impl<T: Trace + Send + Sync> fmt::Debug for Weak<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("(Weak)")
    }
}

// ---------------------------------------------------------------------------
// The traits `Arc` implements
// ---------------------------------------------------------------------------

impl<T: Trace + Send + Sync + Default> Default for Gc<T> {
    fn default() -> Self {
        Gc::new(T::default())
    }
}

impl<T: Trace + Send + Sync> From<T> for Gc<T> {
    fn from(value: T) -> Self {
        Gc::new(value)
    }
}

impl<T: Trace + Send + Sync> AsRef<T> for Gc<T> {
    fn as_ref(&self) -> &T {
        self
    }
}

impl<T: Trace + Send + Sync> Borrow<T> for Gc<T> {
    fn borrow(&self) -> &T {
        self
    }
}

impl<T: Trace + Send + Sync + fmt::Debug> fmt::Debug for Gc<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl<T: Trace + Send + Sync + fmt::Display> fmt::Display for Gc<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&**self, f)
    }
}

impl<T: Trace + Send + Sync> fmt::Pointer for Gc<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Pointer::fmt(&Gc::as_ptr(self), f)
    }
}

impl<T: Trace + Send + Sync + PartialEq> PartialEq for Gc<T> {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl<T: Trace + Send + Sync + Eq> Eq for Gc<T> {}

impl<T: Trace + Send + Sync + PartialOrd> PartialOrd for Gc<T> {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        (**self).partial_cmp(&**other)
    }
}

impl<T: Trace + Send + Sync + Ord> Ord for Gc<T> {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        (**self).cmp(&**other)
    }
}

impl<T: Trace + Send + Sync + Hash> Hash for Gc<T> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (**self).hash(state)
    }
}
