//! Core layer: one pointer per thread in a TLS slot reached through a TLS
//! descriptor.
//!
//! Rust's `thread_local!` uses the general-dynamic TLS model, which the
//! linker relaxes to a plain `%fs` offset in an executable but not in a
//! shared object: in `libstrata.so` every access called `__tls_get_addr`
//! (11 % of the instructions of a `malloc`/`realloc`/`free` loop).
//! mimalloc uses the initial-exec model instead, but that marks the whole
//! library `STATIC_TLS`, and its 2.4 KiB of thread-locals then no longer
//! fit the static TLS block of a program that `dlopen`s it. A TLS
//! descriptor (the GNU2 dialect, `-mtls-dialect=gnu2` in C) has neither
//! cost: the loader resolves the slot's offset once, and for a library in
//! static TLS (preloaded, or linked) an access is a call to a two-
//! instruction resolver that returns it; a `dlopen`ed library gets the
//! dynamic resolver. In an executable the linker relaxes it to a `%fs`
//! offset. Rust emits descriptors only on nightly (`-Z tls-dialect`), so
//! the slot is declared in assembly here and reached with inline assembly.
//!
//! Other targets, Miri and loom use the `thread_local!` directly
//! ([`ENABLED`] is false).

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
    // SAFETY: the descriptor call returns the slot's offset from `%fs` (the
    // thread pointer) in `rax` and preserves every other register (the
    // TLSDESC ABI); the stack is usable and aligned (no `nostack`), as the
    // dynamic resolver needs. Reads the eight bytes of the calling
    // thread's slot.
    unsafe {
        core::arch::asm!(
            "leaq strata_thread_slot@TLSDESC(%rip), %rax",
            "call *strata_thread_slot@TLSCALL(%rax)",
            "movq %fs:(%rax), %rax",
            out("rax") p,
            options(att_syntax),
        );
    }
    p
}

/// Sets the calling thread's slot.
#[cfg(all(target_arch = "x86_64", target_os = "linux", not(any(miri, loom))))]
#[inline]
pub(crate) fn set(value: *mut u8) {
    // SAFETY: as in `get`; writes the eight bytes of the calling thread's
    // slot.
    unsafe {
        core::arch::asm!(
            "leaq strata_thread_slot@TLSDESC(%rip), %rax",
            "call *strata_thread_slot@TLSCALL(%rax)",
            "movq {value}, %fs:(%rax)",
            out("rax") _,
            value = in(reg) value,
            options(att_syntax),
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
