//! Collector layer: the control API — counts, thresholds, enabling,
//! debug flags, statistics, `freeze`, and walks over the generation
//! lists for introspection (CPython's `gc` module functions).

use super::*;

pub(crate) fn get_count() -> (usize, usize, usize) {
    CORE.with(counts)
}

pub(crate) fn set_enabled(on: bool) {
    CORE.with(|c| {
        c.enabled.set(on);
        update_trigger(c);
    });
}

pub(crate) fn is_enabled() -> bool {
    CORE.with(|c| c.enabled.get())
}

pub(crate) fn is_collecting() -> bool {
    CORE.with(|c| c.collecting.get())
}

pub(crate) fn threshold() -> (usize, usize, usize) {
    CORE.with(|c| {
        (
            c.gens[0].threshold.get(),
            c.gens[1].threshold.get(),
            c.gens[2].threshold.get(),
        )
    })
}

pub(crate) fn set_threshold(t0: usize, t1: usize, t2: usize) {
    CORE.with(|c| {
        c.gens[0].threshold.set(t0);
        c.gens[1].threshold.set(t1);
        c.gens[2].threshold.set(t2);
        update_trigger(c);
    });
}

pub(crate) fn debug_flags() -> DebugFlags {
    CORE.with(|c| c.debug.get())
}

pub(crate) fn set_debug_flags(f: DebugFlags) {
    CORE.with(|c| c.debug.set(f));
}

pub(crate) fn stats() -> [GenerationStats; NUM_GENERATIONS] {
    CORE.with(|c| c.stats.get())
}

/// Move every tracked object into the permanent generation.
pub(crate) fn freeze() {
    CORE.with(|core| {
        let perm = head(&core.permanent);
        for g in 0..NUM_GENERATIONS {
            // SAFETY: generation lists and the permanent list are valid
            // whenever user code runs (a collection from a finalizer only
            // touches its own scratch lists at that point).
            unsafe { merge(core.gen_head(g), perm) };
        }
        core.gens[0].count.set(0);
    });
}

/// Move the permanent generation back into the oldest generation.
pub(crate) fn unfreeze() {
    CORE.with(|core| {
        let perm = head(&core.permanent);
        // SAFETY: as in `freeze`.
        unsafe { merge(perm, core.gen_head(NUM_GENERATIONS - 1)) };
        // Frozen objects may be purple.
        core.purple_gens
            .set(core.purple_gens.get() | 1 << (NUM_GENERATIONS - 1));
    });
}

pub(crate) fn freeze_count() -> usize {
    // SAFETY: the permanent list is valid whenever user code runs.
    CORE.with(|core| unsafe { len(head(&core.permanent)) })
}

/// Call `f` on every tracked object in the generations and the permanent
/// generation (not on objects of a collection in progress).
pub(crate) fn for_each_tracked(mut f: impl FnMut(NodePtr)) {
    CORE.with(|core| {
        for g in 0..NUM_GENERATIONS {
            // SAFETY: lists are valid whenever user code runs, and `f` is
            // crate code that does not modify them.
            unsafe { for_each(core.gen_head(g), &mut f) };
        }
        // SAFETY: as above.
        unsafe { for_each(head(&core.permanent), &mut f) };
    });
}

/// Number of objects in each generation list (not the allocation counters).
pub(crate) fn generation_sizes() -> [usize; NUM_GENERATIONS] {
    // SAFETY: lists are valid whenever user code runs.
    CORE.with(|core| std::array::from_fn(|g| unsafe { len(core.gen_head(g)) }))
}

/// Which generation list (0..3, or 3 = permanent) holds `node`, if any.
///
/// # Safety
///
/// `node` is a live tracked box.
pub(crate) unsafe fn generation_of(node: NodePtr) -> Option<usize> {
    // SAFETY: guaranteed by the caller.
    if !unsafe { is_linked(node) } {
        return None;
    }
    CORE.with(|core| {
        let mut found = None;
        for g in 0..=NUM_GENERATIONS {
            let h = if g < NUM_GENERATIONS {
                core.gen_head(g)
            } else {
                head(&core.permanent)
            };
            // SAFETY: lists are valid whenever user code runs.
            unsafe {
                for_each(h, |n| {
                    if ptr::eq(n, node) {
                        found = Some(g);
                    }
                })
            };
            if found.is_some() {
                break;
            }
        }
        found
    })
}
