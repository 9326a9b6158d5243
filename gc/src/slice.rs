//! Pointer layer, slice boxes: `Gc<[T]>` and `Gc<str>` built from a
//! `Vec`, a slice, a string or an iterator, as `Rc<[T]>` and `Rc<str>`
//! are. The length of a slice is known only at run time, so a tracked
//! slice box keeps it in front of its `Links` (see [`TrackedSlice`]); an
//! untracked one is a plain `GcBox<[T]>`, whose length is in the pointer.

use std::alloc::{self, Layout};
use std::any::TypeId;
use std::cell::Cell;
use std::marker::PhantomData;
use std::mem::{self, ManuallyDrop};
use std::ptr::{self, NonNull};

use crate::collector;
use crate::freelist;
use crate::gc::{Gc, GcBox};
use crate::header::{Counts, Links, NodePtr, NodeVTable, Visitor, HAS_LINKS, LINKS_SIZE, WEAK_ONE};
use crate::release::release_strong_node;
use crate::trace::{Finalize, Trace};
use crate::tracking::{tracking_bits, untracked_height};

/// Bytes in front of the `Links` of a tracked slice box that hold its
/// length (a `usize`, 8-aligned like the `Links` after it).
const LEN_PREFIX: usize = 8;

/// Vtable and layout of tracked `[T]` boxes:
///
/// ```text
/// [pad?][len usize][prev|flags][next][vtable][counts][T; len]
/// ```
///
/// The collector only has the node, so the vtable's operations read the
/// length at `node - LEN_PREFIX`. The statically typed release of a
/// `Gc<[T]>` (`gc::dealloc_box`) frees such a box through the vtable too,
/// since its allocation does not start where that of a sized value's box
/// would.
pub(crate) struct TrackedSlice<T>(PhantomData<T>);

impl<T: Trace + 'static> TrackedSlice<T> {
    const VTABLE: &'static NodeVTable = &NodeVTable {
        trace: Self::trace,
        finalize: Self::finalize,
        drop_value: Self::drop_value,
        dealloc: Self::dealloc,
        release_strong: release_strong_node,
        type_name: std::any::type_name::<[T]>,
        type_id: TypeId::of::<[T]>,
        value_offset: mem::offset_of!(GcBox<[T; 0]>, value),
        needs_finalize: <[T] as Finalize>::NEEDS_FINALIZE,
    };

    /// Layout of the allocation for `len` elements, and the offset of the
    /// `GcBox` in it. Panics if the size overflows.
    fn layout(len: usize) -> (Layout, usize) {
        let inner = inner_layout::<T>(len);
        let offset = (LEN_PREFIX + LINKS_SIZE).next_multiple_of(inner.align());
        let layout = offset
            .checked_add(inner.size())
            .and_then(|size| {
                Layout::from_size_align(size, inner.align().max(mem::align_of::<Links>())).ok()
            })
            .unwrap_or_else(|| too_large::<T>());
        (layout.pad_to_align(), offset)
    }

    /// # Safety
    ///
    /// `node` is the Links record of an allocated tracked `[T]` box.
    unsafe fn len(node: NodePtr) -> usize {
        // SAFETY: the length sits LEN_PREFIX bytes before the Links of such
        // a box, aligned; `node` has the provenance of the whole allocation.
        unsafe { *node.cast::<u8>().sub(LEN_PREFIX).cast::<usize>() }
    }

    /// # Safety
    ///
    /// As for [`Self::len`].
    unsafe fn value(node: NodePtr) -> *mut [T] {
        // SAFETY: the elements start `value_offset` bytes after the counts
        // word, which is LINKS_SIZE after `node`.
        unsafe {
            let first = node
                .cast::<u8>()
                .add(LINKS_SIZE + Self::VTABLE.value_offset)
                .cast_mut()
                .cast::<T>();
            ptr::slice_from_raw_parts_mut(first, Self::len(node))
        }
    }

    /// # Safety
    ///
    /// `node` is a tracked `[T]` box whose value is alive and not mutably
    /// borrowed.
    unsafe fn trace(node: NodePtr, visitor: &mut Visitor) {
        // SAFETY: guaranteed by the caller (the collector skips
        // MUT_BORROWED nodes and only traces live values).
        unsafe { (*Self::value(node)).trace(visitor) }
    }

    /// # Safety
    ///
    /// As for [`Self::trace`].
    unsafe fn finalize(node: NodePtr) {
        // SAFETY: guaranteed by the caller.
        unsafe { (*Self::value(node)).finalize() }
    }

    /// # Safety
    ///
    /// `node` is a tracked `[T]` box whose value is alive and that no
    /// reference points into; the value is never used again.
    unsafe fn drop_value(node: NodePtr) {
        // SAFETY: guaranteed by the caller.
        unsafe { ptr::drop_in_place(Self::value(node)) }
    }

    /// # Safety
    ///
    /// `node` is a tracked `[T]` box whose value was dropped, to which no
    /// handle remains.
    unsafe fn dealloc(node: NodePtr) {
        // SAFETY: the allocation starts `offset` bytes before the counts
        // word (LINKS_SIZE after `node`) and was made with `layout`, both
        // computed from the length it still holds.
        unsafe {
            let (layout, offset) = Self::layout(Self::len(node));
            let base = node.cast::<u8>().add(LINKS_SIZE).sub(offset).cast_mut();
            freelist::deallocate(base, layout);
        }
    }
}

/// Layout of a `GcBox<[T]>` of `len` elements (as `Layout::for_value`
/// would give). Panics if the size overflows.
fn inner_layout<T>(len: usize) -> Layout {
    Layout::array::<T>(len)
        .and_then(|array| Layout::new::<Cell<u64>>().extend(array))
        .map(|(l, _)| l.pad_to_align())
        .unwrap_or_else(|_| too_large::<T>())
}

#[cold]
fn too_large<T>() -> ! {
    panic!(
        "strata_gc: slice of {} too large",
        std::any::type_name::<T>()
    )
}

impl<T: Trace + 'static> From<Vec<T>> for Gc<[T]> {
    /// Moves the elements into a new `Gc<[T]>` (tracked if `T` may contain
    /// a `Gc`, as for [`Gc::new`]).
    ///
    /// ```
    /// use strata_gc::Gc;
    /// let g: Gc<[u32]> = Gc::from(vec![1, 2, 3]);
    /// assert_eq!(&g[..], [1, 2, 3]);
    /// ```
    fn from(v: Vec<T>) -> Gc<[T]> {
        let mut v = ManuallyDrop::new(v);
        let len = v.len();
        let src = v.as_mut_ptr();
        let g = if <[T] as Trace>::MAY_CONTAIN_GC {
            let (layout, offset) = TrackedSlice::<T>::layout(len);
            // SAFETY: the layout has a non-zero size (it holds the length,
            // the Links and the counts word).
            let base = unsafe { freelist::allocate(layout) };
            if base.is_null() {
                alloc::handle_alloc_error(layout);
            }
            // SAFETY: `base` is a fresh allocation of `layout`: the GcBox
            // at `offset` is aligned for GcBox<[T]>, the Links before it
            // and the length before them are 8-aligned. The elements are
            // moved (copied, then never dropped in the Vec) and written
            // before anything reads them; the height is read from them
            // before the counts word is written, and only the referents'
            // counts are read for it.
            unsafe {
                let inner = base.add(offset);
                let node = inner.sub(LINKS_SIZE).cast::<Links>();
                node.cast::<u8>().sub(LEN_PREFIX).cast::<usize>().write(len);
                let first = inner.add(mem::offset_of!(GcBox<[T; 0]>, value)).cast::<T>();
                ptr::copy_nonoverlapping(src, first, len);
                let height = untracked_height(&*ptr::slice_from_raw_parts(first, len));
                node.write(Links {
                    prev: Cell::new(ptr::null()),
                    next: Cell::new(ptr::null()),
                    vtable: TrackedSlice::<T>::VTABLE,
                });
                inner
                    .cast::<Counts>()
                    .write(Counts::new(1, HAS_LINKS | WEAK_ONE | tracking_bits(height)));
                let boxed =
                    ptr::slice_from_raw_parts_mut(inner.cast::<T>(), len) as *mut GcBox<[T]>;
                let g = Gc::from_inner(NonNull::new_unchecked(boxed));
                if height.is_none() {
                    // As in `Gc::new`: initialised, unlinked, flagged
                    // TRACKED, and `g` is its only handle.
                    collector::track_new(node);
                }
                g
            }
        } else {
            let layout = inner_layout::<T>(len);
            // SAFETY: the layout holds at least the counts word; the
            // elements are moved as above.
            unsafe {
                let base = alloc::alloc(layout);
                if base.is_null() {
                    alloc::handle_alloc_error(layout);
                }
                base.cast::<Counts>()
                    .write(Counts::new(1, WEAK_ONE | tracking_bits(Some(0))));
                let first = base.add(mem::offset_of!(GcBox<[T; 0]>, value)).cast::<T>();
                ptr::copy_nonoverlapping(src, first, len);
                let boxed = ptr::slice_from_raw_parts_mut(base.cast::<T>(), len) as *mut GcBox<[T]>;
                Gc::from_inner(NonNull::new_unchecked(boxed))
            }
        };
        // SAFETY: the elements were moved out: free the buffer only.
        unsafe {
            v.set_len(0);
            ManuallyDrop::drop(&mut v);
        }
        g
    }
}

impl<T: Trace + Clone + 'static> From<&[T]> for Gc<[T]> {
    /// Clones the elements into a new `Gc<[T]>` (through a `Vec`, which
    /// drops the clones made so far if one panics).
    fn from(s: &[T]) -> Gc<[T]> {
        Gc::from(s.to_vec())
    }
}

impl<T: Trace + 'static> From<Box<[T]>> for Gc<[T]> {
    fn from(b: Box<[T]>) -> Gc<[T]> {
        Gc::from(b.into_vec())
    }
}

impl<T: Trace + 'static> FromIterator<T> for Gc<[T]> {
    /// Collects into a `Vec`, then moves it into a `Gc<[T]>`.
    ///
    /// ```
    /// use strata_gc::Gc;
    /// let g: Gc<[u32]> = (1..=3).collect();
    /// assert_eq!(g.iter().sum::<u32>(), 6);
    /// ```
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Gc<[T]> {
        Gc::from(iter.into_iter().collect::<Vec<T>>())
    }
}

impl From<&str> for Gc<str> {
    /// ```
    /// use strata_gc::Gc;
    /// let s: Gc<str> = Gc::from("hello");
    /// assert_eq!(&*s, "hello");
    /// ```
    fn from(s: &str) -> Gc<str> {
        let bytes = ManuallyDrop::new(Gc::<[u8]>::from(s.as_bytes().to_vec()));
        let inner = bytes.inner().as_ptr() as *mut GcBox<str>;
        // SAFETY: GcBox<str> and GcBox<[u8]> have the same layout and
        // metadata, the bytes are valid UTF-8, and the box is untracked
        // (`str` holds no `Gc`, like `[u8]`); the handle moves over.
        Gc::from_inner(unsafe { NonNull::new_unchecked(inner) })
    }
}

impl From<String> for Gc<str> {
    fn from(s: String) -> Gc<str> {
        Gc::from(&s[..])
    }
}

impl From<Box<str>> for Gc<str> {
    fn from(s: Box<str>) -> Gc<str> {
        Gc::from(&s[..])
    }
}
