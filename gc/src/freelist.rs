//! Allocation layer of tracked boxes: per-thread free lists of recently
//! freed blocks, by size (CPython keeps such free lists for its tuples,
//! lists and dicts). Cyclic garbage is freed and reallocated in bursts of
//! hundreds of same-sized boxes; a pop or push here replaces a trip through
//! the global allocator.
//!
//! Only blocks of alignment 8 and at most [`MAX_SIZE`] bytes are kept, at
//! most [`MAX_PER_CLASS`] per size, so a thread holds at most
//! `MAX_PER_CLASS * MAX_SIZE * CLASSES / 2` bytes (~1 MiB, usually far
//! less) beyond what it uses; the lists are returned to the global
//! allocator when the thread exits. Every block is allocated and
//! deallocated with exactly the layout it is served for.

use std::alloc::{self, Layout};
use std::cell::Cell;
use std::ptr;

/// Largest block kept (bytes): tracked boxes of small values.
const MAX_SIZE: usize = 256;
/// Blocks kept per size: enough for the garbage of a young collection
/// (700 objects by default) of a few types.
const MAX_PER_CLASS: usize = 1024;
/// Alignment of the blocks kept (that of the `Links` header).
const ALIGN: usize = 8;
/// Number of size classes: sizes 8, 16, ..., MAX_SIZE.
const CLASSES: usize = MAX_SIZE / ALIGN;

/// A free block; its first word links the next free block of its size.
struct FreeBlock {
    next: *mut FreeBlock,
}

struct Class {
    head: Cell<*mut FreeBlock>,
    len: Cell<usize>,
}

/// State of a thread's lists.
#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing kept yet; [`FLUSH_AT_EXIT`] not registered.
    Unused,
    /// Blocks may be kept; they are returned at thread exit.
    Open,
    /// The thread is exiting: blocks go straight back to the allocator.
    Closed,
}

/// The lists: const initialised and without a destructor, so that the
/// allocation fast path reads them without a liveness check.
struct FreeLists {
    classes: [Class; CLASSES],
    state: Cell<State>,
}

impl FreeLists {
    /// Return every kept block to the global allocator.
    fn flush(&self) {
        for (i, class) in self.classes.iter().enumerate() {
            let layout = class_layout(i);
            let mut p = class.head.replace(ptr::null_mut());
            class.len.set(0);
            while !p.is_null() {
                // SAFETY: every listed block was allocated with the layout
                // of its class and is owned by the list.
                unsafe {
                    let next = (*p).next;
                    alloc::dealloc(p.cast(), layout);
                    p = next;
                }
            }
        }
    }
}

/// Registered on the first kept block; its destructor closes and empties
/// the lists when the thread exits.
struct FlushAtExit;

impl Drop for FlushAtExit {
    fn drop(&mut self) {
        let _ = FREE.try_with(|f| {
            f.state.set(State::Closed);
            f.flush();
        });
    }
}

thread_local! {
    static FREE: FreeLists = const {
        FreeLists {
            classes: [const { Class { head: Cell::new(ptr::null_mut()), len: Cell::new(0) } }; CLASSES],
            state: Cell::new(State::Unused),
        }
    };
    static FLUSH_AT_EXIT: FlushAtExit = const { FlushAtExit };
}

/// The class of `layout`, if blocks of it are kept.
#[inline]
fn class_of(layout: Layout) -> Option<usize> {
    if layout.align() == ALIGN && layout.size() <= MAX_SIZE && layout.size() >= ALIGN {
        // Layouts of tracked boxes are padded to their alignment.
        debug_assert!(layout.size() % ALIGN == 0);
        Some(layout.size() / ALIGN - 1)
    } else {
        None
    }
}

fn class_layout(i: usize) -> Layout {
    // (i + 1) * ALIGN <= MAX_SIZE and ALIGN is a power of two.
    Layout::from_size_align((i + 1) * ALIGN, ALIGN).unwrap_or_else(|_| unreachable!())
}

/// Allocate a block for `layout`; null if out of memory.
///
/// # Safety
///
/// `layout` has a non-zero size.
#[inline]
pub(crate) unsafe fn allocate(layout: Layout) -> *mut u8 {
    if let Some(i) = class_of(layout) {
        let p = FREE.with(|f| {
            let class = &f.classes[i];
            let p = class.head.get();
            if !p.is_null() {
                // SAFETY: listed blocks are owned by the list and start
                // with a FreeBlock.
                class.head.set(unsafe { (*p).next });
                class.len.set(class.len.get() - 1);
            }
            p
        });
        if !p.is_null() {
            return p.cast();
        }
    }
    // SAFETY: the caller passes a layout of non-zero size.
    unsafe { alloc::alloc(layout) }
}

/// May blocks be kept? Registers the exit flush on first use.
#[inline]
fn is_open(f: &FreeLists) -> bool {
    match f.state.get() {
        State::Open => true,
        State::Closed => false,
        State::Unused => {
            // Fails only if the thread is already exiting.
            let registered = FLUSH_AT_EXIT.try_with(|_| ()).is_ok();
            f.state.set(if registered {
                State::Open
            } else {
                State::Closed
            });
            registered
        }
    }
}

/// Give back a block obtained from [`allocate`] with the same `layout`.
///
/// # Safety
///
/// `p` was returned by `allocate(layout)` and is not used afterwards.
#[inline]
pub(crate) unsafe fn deallocate(p: *mut u8, layout: Layout) {
    if let Some(i) = class_of(layout) {
        let kept = FREE.with(|f| {
            let class = &f.classes[i];
            if class.len.get() >= MAX_PER_CLASS || !is_open(f) {
                return false;
            }
            let b = p.cast::<FreeBlock>();
            // SAFETY: the block is ours, at least ALIGN bytes and
            // ALIGN-aligned, so a FreeBlock fits at its start.
            unsafe {
                b.write(FreeBlock {
                    next: class.head.get(),
                })
            };
            class.head.set(b);
            class.len.set(class.len.get() + 1);
            true
        });
        if kept {
            return;
        }
    }
    // SAFETY: guaranteed by the caller.
    unsafe { alloc::dealloc(p, layout) }
}
