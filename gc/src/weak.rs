//! Pointer layer: [`Weak<T>`], the `Gc` methods that make one
//! ([`Gc::downgrade`], and [`Gc::new_cyclic`] with its box whose value is
//! not yet initialised), and `Weak`'s `Trace` impl.

use std::alloc::{self, Layout};
use std::cell::Cell;
use std::fmt;
use std::mem::{self, ManuallyDrop};
use std::ptr::{self, addr_of, addr_of_mut, NonNull};

use crate::collector;
use crate::freelist;
use crate::gc::{dealloc_box, Gc, GcBox, Tracked};
use crate::header::{
    inc_strong, inc_weak, release_weak_node, weak_epoch, weak_refs, Counts, Links, NodePtr,
    Visitor, DROPPED, HAS_LINKS, LINKS_SIZE, NO_UPGRADE, WEAK_EPOCH_MASK, WEAK_MASK, WEAK_ONE,
};
use crate::trace::{Finalize, Trace};
use crate::tracking::{tracking_bits, untracked_height};

// ---------------------------------------------------------------------------
// Weak<T>
// ---------------------------------------------------------------------------

/// A non-owning pointer to a `Gc` allocation; see [`Gc::downgrade`].
///
/// Upgrading fails once the value has been dropped — and, for objects the
/// cycle collector found unreachable, as soon as the collector has decided
/// so, before any finalizer runs. Such a weak pointer stays cleared even if
/// a finalizer resurrects the object (PEP 442), while one made from a
/// `Gc` after that upgrades as usual.
pub struct Weak<T: ?Sized> {
    /// The box, with the object's weak epoch at this pointer's creation in
    /// its low bits (see [`WEAK_EPOCHS`](crate::header::WEAK_EPOCHS)): the
    /// collector retires a whole epoch of weak pointers without finding
    /// them. Never dereferenced as is: see [`Weak::inner`].
    ptr: Option<NonNull<GcBox<T>>>,
}

impl<T> Weak<T> {
    /// A weak pointer to nothing; `upgrade` always returns `None`.
    pub const fn new() -> Weak<T> {
        Weak { ptr: None }
    }
}

impl<T> Default for Weak<T> {
    fn default() -> Self {
        Weak::new()
    }
}

/// `p` with `epoch` in the low bits of its address.
#[inline]
fn tagged<T: ?Sized>(p: NonNull<GcBox<T>>, epoch: usize) -> NonNull<GcBox<T>> {
    debug_assert!(epoch <= WEAK_EPOCH_MASK && p.as_ptr().addr() & WEAK_EPOCH_MASK == 0);
    // SAFETY: setting low bits that the box's alignment leaves clear keeps
    // the address non-null; `map_addr` keeps the provenance.
    unsafe { NonNull::new_unchecked(p.as_ptr().map_addr(|a| a | epoch)) }
}

impl<T: ?Sized> Weak<T> {
    /// The box, without the epoch bits.
    #[inline]
    fn inner(&self) -> Option<NonNull<GcBox<T>>> {
        // SAFETY: clearing the epoch bits gives back the box's address,
        // which is not null; `map_addr` keeps the provenance.
        self.ptr.map(|p| unsafe {
            NonNull::new_unchecked(p.as_ptr().map_addr(|a| a & !WEAK_EPOCH_MASK))
        })
    }

    /// The object's weak epoch when this pointer was made.
    #[inline]
    fn epoch(&self) -> usize {
        self.ptr.map_or(0, |p| p.as_ptr().addr() & WEAK_EPOCH_MASK)
    }

    fn counts(&self) -> Option<&Counts> {
        // SAFETY: a weak reference keeps the box allocated.
        self.inner()
            .map(|p| unsafe { &*addr_of!((*p.as_ptr()).counts) })
    }

    /// The counts and the counts word, unless this pointer is dangling
    /// (`Weak::new`) or was cleared by the collector in an earlier epoch of
    /// its object.
    fn live_counts(&self) -> Option<(&Counts, u32)> {
        let c = self.counts()?;
        let v = c.word.get();
        (weak_epoch(v) == self.epoch()).then_some((c, v))
    }

    /// Attempts to get a strong pointer; `None` if the value is gone or the
    /// collector has found it unreachable (since this pointer was made).
    pub fn upgrade(&self) -> Option<Gc<T>> {
        let (c, v) = self.live_counts()?;
        if c.strong.get() == 0 || v & (NO_UPGRADE | DROPPED) != 0 {
            return None;
        }
        inc_strong(c);
        self.inner().map(Gc::from_inner)
    }

    /// Number of strong pointers (0 if the value is gone, or if the
    /// collector cleared this weak pointer before the object survived).
    pub fn strong_count(&self) -> usize {
        self.live_counts()
            .map_or(0, |(c, _)| c.strong.get() as usize)
    }

    /// Number of weak pointers (0 for `Weak::new()`, if no strong remains,
    /// or if this pointer was cleared as for [`Weak::strong_count`]); it
    /// counts the cleared ones as well, which keep the box allocated.
    pub fn weak_count(&self) -> usize {
        match self.live_counts() {
            None => 0,
            Some((c, v)) => {
                if c.strong.get() == 0 {
                    0
                } else {
                    weak_refs(v)
                }
            }
        }
    }

    /// Do both point to the same allocation (or both to nothing)?
    pub fn ptr_eq(&self, other: &Self) -> bool {
        match (self.inner(), other.inner()) {
            (None, None) => true,
            (Some(a), Some(b)) => ptr::eq(a.as_ptr() as *const u8, b.as_ptr() as *const u8),
            _ => false,
        }
    }
}

impl<T: ?Sized> Clone for Weak<T> {
    fn clone(&self) -> Self {
        if let Some(c) = self.counts() {
            inc_weak(c);
        }
        Weak { ptr: self.ptr }
    }
}

impl<T: ?Sized> Drop for Weak<T> {
    fn drop(&mut self) {
        let Some(p) = self.inner() else { return };
        // SAFETY: a weak reference keeps the box allocated.
        let c = unsafe { &*addr_of!((*p.as_ptr()).counts) };
        let v = c.word.get();
        if v & HAS_LINKS != 0 {
            // SAFETY: tracked box; we own one weak reference.
            unsafe { release_weak_node(p.as_ptr().cast::<u8>().sub(LINKS_SIZE).cast()) };
            return;
        }
        let w = v - WEAK_ONE;
        c.word.set(w);
        if w & WEAK_MASK == 0 {
            // SAFETY: no strong reference (the implicit weak is gone) and no
            // other weak one remain; the value was dropped already.
            unsafe { dealloc_box(p.as_ptr(), w) }
        }
    }
}

impl<T: ?Sized> fmt::Debug for Weak<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("(Weak)")
    }
}

impl<T: ?Sized> Weak<T> {
    /// A handle to the box `ptr` whose weak reference the caller has
    /// already counted (in epoch 0: the box is new).
    #[inline]
    pub(crate) fn from_inner(ptr: NonNull<GcBox<T>>) -> Weak<T> {
        Weak {
            ptr: Some(tagged(ptr, 0)),
        }
    }
}

impl<T: ?Sized> Gc<T> {
    /// Creates a new weak pointer to this allocation.
    pub fn downgrade(this: &Self) -> Weak<T> {
        let c = this.counts();
        inc_weak(c);
        Weak {
            ptr: Some(tagged(this.inner(), weak_epoch(c.word.get()))),
        }
    }
}

impl<T: ?Sized> Finalize for Weak<T> {
    const NEEDS_FINALIZE: bool = false;
}

// SAFETY: weak references are not edges for trial deletion.
unsafe impl<T: ?Sized> Trace for Weak<T> {
    const MAY_CONTAIN_GC: bool = false;
    #[inline]
    fn trace(&self, _: &mut Visitor) {}
}

// ---------------------------------------------------------------------------
// Gc::new_cyclic
// ---------------------------------------------------------------------------

impl<T: Trace + 'static> Gc<T> {
    /// Creates a new `Gc` to a value built from a weak reference to itself
    /// (like `Rc::new_cyclic`). Upgrading the weak reference inside `f` fails.
    ///
    /// ```
    /// use strata_gc::{Gc, Trace, Weak};
    /// #[derive(Trace)]
    /// struct Me { me: Weak<Me> }
    /// let m = Gc::new_cyclic(|w| Me { me: w.clone() });
    /// assert!(Gc::ptr_eq(&m.me.upgrade().unwrap(), &m));
    /// ```
    pub fn new_cyclic(f: impl FnOnce(&Weak<T>) -> T) -> Gc<T> {
        // Build with a placeholder-free approach: allocate the value first into
        // an `Option` box is not possible without MaybeUninit in the header, so
        // we create the weak pointer from a box whose strong count is 0.
        let uninit = UninitGc::<T>::new();
        let weak = uninit.weak();
        let value = f(&weak);
        drop(weak);
        uninit.init(value)
    }
}

// ---------------------------------------------------------------------------
// new_cyclic support
// ---------------------------------------------------------------------------

/// A box whose value slot is not yet initialised (strong count 0), used by
/// [`Gc::new_cyclic`]. Weak pointers to it cannot upgrade.
struct UninitGc<T: Trace + 'static> {
    node: Option<NodePtr>,
    inner: NonNull<GcBox<mem::MaybeUninit<T>>>,
}

impl<T: Trace + 'static> UninitGc<T> {
    fn new() -> Self {
        if T::MAY_CONTAIN_GC {
            let layout = Tracked::<T>::layout();
            // SAFETY: non-zero size layout.
            let base = unsafe { freelist::allocate(layout) };
            if base.is_null() {
                alloc::handle_alloc_error(layout);
            }
            // SAFETY: same layout reasoning as Tracked::allocate; the value
            // slot is left uninitialised (MaybeUninit has T's layout).
            unsafe {
                let inner = base
                    .add(Tracked::<T>::INNER_OFFSET)
                    .cast::<GcBox<mem::MaybeUninit<T>>>();
                let node = base
                    .add(Tracked::<T>::INNER_OFFSET - LINKS_SIZE)
                    .cast::<Links>();
                node.write(Links {
                    prev: Cell::new(ptr::null()),
                    next: Cell::new(ptr::null()),
                    vtable: Tracked::<T>::VTABLE,
                });
                addr_of_mut!((*inner).counts).write(Counts::new(0, HAS_LINKS | WEAK_ONE));
                UninitGc {
                    node: Some(node),
                    inner: NonNull::new_unchecked(inner),
                }
            }
        } else {
            let b: Box<GcBox<mem::MaybeUninit<T>>> = Box::new(GcBox {
                counts: Counts::new(0, WEAK_ONE),
                value: mem::MaybeUninit::uninit(),
            });
            UninitGc {
                node: None,
                // SAFETY: Box::into_raw never returns null.
                inner: unsafe { NonNull::new_unchecked(Box::into_raw(b)) },
            }
        }
    }

    fn weak(&self) -> Weak<T> {
        // SAFETY: the box is allocated; only the counts are touched.
        let c = unsafe { &*addr_of!((*self.inner.as_ptr()).counts) };
        inc_weak(c);
        Weak::from_inner(self.inner.cast())
    }

    fn init(self, value: T) -> Gc<T> {
        let height = untracked_height(&value);
        let this = ManuallyDrop::new(self);
        // SAFETY: the slot is uninitialised and ours; after writing it the
        // box is a valid GcBox<T> with one strong reference.
        unsafe {
            let inner = this.inner.as_ptr();
            addr_of_mut!((*inner).value).cast::<T>().write(value);
            let c = &*addr_of!((*inner).counts);
            c.strong.set(1);
            match this.node {
                Some(node) => {
                    c.word.set(c.word.get() | tracking_bits(height));
                    if height.is_none() {
                        collector::track_new(node);
                    }
                }
                None => c.word.set(c.word.get() | tracking_bits(Some(0))),
            }
            Gc::from_inner(this.inner.cast())
        }
    }
}

impl<T: Trace + 'static> Drop for UninitGc<T> {
    fn drop(&mut self) {
        // Reached only if the closure of new_cyclic panicked: release the
        // implicit weak reference; the value slot was never initialised.
        // SAFETY: the box is allocated and its value slot holds no value;
        // DROPPED makes later weak drops only deallocate.
        unsafe {
            let c = &*addr_of!((*self.inner.as_ptr()).counts);
            c.word.set(c.word.get() | DROPPED);
            match self.node {
                Some(node) => release_weak_node(node),
                None => {
                    let w = c.word.get() - WEAK_ONE;
                    c.word.set(w);
                    if w & WEAK_MASK == 0 {
                        alloc::dealloc(
                            self.inner.as_ptr().cast(),
                            Layout::new::<GcBox<mem::MaybeUninit<T>>>(),
                        );
                    }
                }
            }
        }
    }
}
