//! Core layer: one pointer per thread in an initial-exec TLS slot.
//!
//! Rust's `thread_local!` uses the general-dynamic TLS model, which the
//! linker relaxes to a plain `%fs` offset in an executable but not in a
//! shared object: in `libstrata.so` every access calls `__tls_get_addr`
//! (about 20 instructions, a tenth of a `malloc`/`free` pair). mimalloc
//! and glibc's own malloc use the initial-exec model instead: the slot's
//! offset from the thread pointer is fixed when the library is loaded and
//! read from the GOT, so an access is two loads. Rust has that model only
//! on nightly (`#[thread_local]`, `-Z tls-model`), so the slot is declared
//! in assembly here, and read and written with inline assembly.
//!
//! Initial-exec TLS of a shared object lives in the static TLS block:
//! always there for an `LD_PRELOAD`ed or linked library, and taken from
//! glibc's static-TLS surplus (over a kilobyte) for a `dlopen`ed one; the
//! slot is eight bytes. Other targets, Miri and loom use the
//! `thread_local!` directly ([`ENABLED`] is false).

#[cfg(all(target_arch = "x86_64", target_os = "linux", not(any(miri, loom))))]
core::arch::global_asm!(
    ".pushsection .tbss,\"awT\",@nobits",
    ".p2align 3",
    ".globl strata_thread_slot",
    ".hidden strata_thread_slot",
    ".type strata_thread_slot, @object",
    ".size strata_thread_slot, 8",
    "strata_thread_slot:",
    ".zero 8",
    ".popsection",
);

/// Whether this target has the slot; [`get`] and [`set`] must not be
/// called where it has not.
pub(crate) const ENABLED: bool = cfg!(all(
    target_arch = "x86_64",
    target_os = "linux",
    not(any(miri, loom))
));

/// The calling thread's slot: null until [`set`], and in every new thread.
#[cfg(all(target_arch = "x86_64", target_os = "linux", not(any(miri, loom))))]
#[inline(always)]
pub(crate) fn get() -> *mut u8 {
    let p: *mut u8;
    // SAFETY: reads the eight bytes of the calling thread's slot, at the
    // offset from `%fs` (the thread pointer) that the GOT entry holds.
    unsafe {
        core::arch::asm!(
            "movq strata_thread_slot@GOTTPOFF(%rip), {p}",
            "movq %fs:({p}), {p}",
            p = out(reg) p,
            options(att_syntax, nostack, readonly, preserves_flags),
        );
    }
    p
}

/// Sets the calling thread's slot.
#[cfg(all(target_arch = "x86_64", target_os = "linux", not(any(miri, loom))))]
#[inline]
pub(crate) fn set(value: *mut u8) {
    // SAFETY: writes the eight bytes of the calling thread's slot (see `get`).
    unsafe {
        core::arch::asm!(
            "movq strata_thread_slot@GOTTPOFF(%rip), {offset}",
            "movq {value}, %fs:({offset})",
            offset = out(reg) _,
            value = in(reg) value,
            options(att_syntax, nostack, preserves_flags),
        );
    }
}

/// No initial-exec slot on this target.
#[cfg(not(all(target_arch = "x86_64", target_os = "linux", not(any(miri, loom)))))]
#[inline(always)]
pub(crate) fn get() -> *mut u8 {
    core::ptr::null_mut()
}

/// No initial-exec slot on this target.
#[cfg(not(all(target_arch = "x86_64", target_os = "linux", not(any(miri, loom)))))]
#[inline]
pub(crate) fn set(_value: *mut u8) {}
