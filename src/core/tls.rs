//! Core layer: one pointer per thread in a TLS slot reached without
//! `__tls_get_addr`.
//!
//! Rust's `thread_local!` uses the general-dynamic TLS model, which the
//! linker relaxes to a plain `%fs` offset in an executable but not in a
//! shared object: there every access calls `__tls_get_addr`. So the slot
//! is declared in assembly here and reached with inline assembly, in one
//! of two models:
//!
//! - **A TLS descriptor** (the GNU2 dialect, `-mtls-dialect=gnu2` in C;
//!   the default): the loader resolves the slot's offset once, and an
//!   access calls a two-instruction resolver that returns it (or, in a
//!   library `dlopen`ed after start-up, the dynamic resolver). Any shared
//!   object may hold it: a Rust `cdylib` whose global allocator is
//!   strata, loaded by Python, say.
//! - **Initial-exec** (feature `initial-exec-tls`, which `libstrata.so`
//!   turns on): the offset is read from the GOT and the slot is one
//!   `%fs`-relative load, as mimalloc and jemalloc do. The indirect call
//!   and return of the descriptor cost about 1 ns per call, a third of a
//!   `malloc`/`free` pair. The price: the whole TLS block of the library
//!   must live in the static TLS area, which for a library `dlopen`ed
//!   after start-up means glibc's small surplus (about 1.6 KiB); so the
//!   thread state is not in TLS (`thread_store`), and the library's TLS is
//!   a few bytes.
//!
//! In an executable the linker relaxes either model to a `%fs` offset.
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
    // SAFETY: the GOT entry holds the slot's offset from `%fs` (the thread
    // pointer), which the loader filled at start-up; reads the eight bytes
    // of the calling thread's slot.
    #[cfg(feature = "initial-exec-tls")]
    unsafe {
        core::arch::asm!(
            "movq strata_thread_slot@GOTTPOFF(%rip), %rax",
            "movq %fs:(%rax), %rax",
            out("rax") p,
            options(att_syntax, nostack, readonly, preserves_flags),
        );
    }
    // SAFETY: the descriptor call returns the slot's offset from `%fs` (the
    // thread pointer) in `rax` and preserves every other register (the
    // TLSDESC ABI); the stack is usable and aligned (no `nostack`), as the
    // dynamic resolver needs. Reads the eight bytes of the calling
    // thread's slot.
    #[cfg(not(feature = "initial-exec-tls"))]
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
    #[cfg(feature = "initial-exec-tls")]
    unsafe {
        core::arch::asm!(
            "movq strata_thread_slot@GOTTPOFF(%rip), %rax",
            "movq {value}, %fs:(%rax)",
            out("rax") _,
            value = in(reg) value,
            options(att_syntax, nostack, preserves_flags),
        );
    }
    // SAFETY: as in `get`; writes the eight bytes of the calling thread's
    // slot.
    #[cfg(not(feature = "initial-exec-tls"))]
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

/// No TLS slot on this target.
#[cfg(not(all(target_arch = "x86_64", target_os = "linux", not(any(miri, loom)))))]
#[inline(always)]
pub(crate) fn get() -> *mut u8 {
    core::ptr::null_mut()
}

/// No TLS slot on this target.
#[cfg(not(all(target_arch = "x86_64", target_os = "linux", not(any(miri, loom)))))]
#[inline]
pub(crate) fn set(_value: *mut u8) {}
