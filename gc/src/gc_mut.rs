//! Pointer layer: [`GcMut`], the guard of [`Gc::get_mut`](crate::Gc::get_mut)
//! that lends the value mutably while the box's `MUT_BORROWED` flag keeps
//! the collector out of it.

use std::fmt;
use std::ops::{Deref, DerefMut};

use crate::header::{links, NodePtr, MUT_BORROWED};

/// Mutable access to a uniquely owned `Gc` value; see
/// [`Gc::get_mut`](crate::Gc::get_mut).
pub struct GcMut<'a, T: ?Sized> {
    pub(crate) value: &'a mut T,
    /// The box's links, whose `MUT_BORROWED` flag the guard clears when
    /// dropped (`None` for a box without links).
    pub(crate) node: Option<NodePtr>,
}

impl<T: ?Sized> Deref for GcMut<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.value
    }
}

impl<T: ?Sized> DerefMut for GcMut<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.value
    }
}

impl<T: ?Sized> Drop for GcMut<'_, T> {
    fn drop(&mut self) {
        if let Some(n) = self.node {
            // SAFETY: the guard borrows the only strong handle, so the box is
            // alive; only the flag bit is touched.
            let l = unsafe { links(n) };
            l.set_prev_bits(l.prev_bits() & !MUT_BORROWED);
        }
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for GcMut<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.value, f)
    }
}
