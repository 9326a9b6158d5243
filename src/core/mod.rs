//! Core layer: the allocator itself, and nothing else. Files here import
//! only each other (ci/layers.txt); the features above (`insight`, the
//! typed pools and owned heaps) reach the core through its `pub(crate)`
//! items, and the core reaches them only through [`hooks`].
//!
//! Bottom-up (each file imports only files before it): `sync` and `os`
//! (the platform), `tls` (a thread's pointer in a TLS slot),
//! `diag` (output without allocating), `purge_thread` (the background
//! purge's sleep and wake), `arena` (OS
//! regions cut into slots), `size_class`, `secure` (the free-list link
//! key), `pool` (one size class, three free lists), `large_cache`, `purge` (when memory goes back), `large`
//! (blocks straight from the OS), `abandoned` (pools of exited threads),
//! `hooks` and `counters`, `heap` (a heap's pools), `thread_store` (the records
//! threads' states live in), process life
//! (`config`, `fork`, `init`), `thread` (the thread heap, its start
//! and exit), and `entry`, the entry points the crate's face calls.

pub(crate) mod abandoned;
pub(crate) mod arena;
pub(crate) mod chunk_map;
pub(crate) mod config;
pub(crate) mod counters;
pub(crate) mod diag;
pub(crate) mod entry;
pub(crate) mod fork;
pub(crate) mod heap;
pub(crate) mod hooks;
pub(crate) mod init;
pub(crate) mod large;
pub(crate) mod large_cache;
pub(crate) mod os;
pub(crate) mod pool;
pub(crate) mod purge;
pub(crate) mod purge_thread;
pub(crate) mod secure;
pub(crate) mod size_class;
pub(crate) mod sync;
pub(crate) mod thread;
pub(crate) mod thread_store;
pub(crate) mod tls;
