//! How the query commands use the C allocator.
//!
//! glibc gives each thread that allocates its own arena (up to 8 per core) and rarely returns an
//! arena's free pages: DataFusion's short-lived buffers, built on the query runtime's threads and
//! freed on others, leave every arena holding its own high-water mark. Measured on the
//! 10-million-event history (README's Performance section), `cdlake serve` answering every
//! dashboard panel peaked at 1.3-1.4 GiB with the default arenas and 0.95-0.99 GiB with one,
//! at the same median panel time; mimalloc peaked higher still (1.7-1.9 GiB for one report).

/// Limit glibc's malloc to `arenas` arenas for this process, unless `MALLOC_ARENA_MAX` is
/// set (the user's choice wins). Called before the runtime starts its threads.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub(crate) fn limit_arenas(arenas: i32) {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    // SAFETY: mallopt only sets one of malloc's parameters; M_ARENA_MAX takes any positive
    // count, and allocations made before or after it stay valid.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, arenas);
    }
}

/// Other allocators keep their own arenas.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub(crate) fn limit_arenas(_arenas: i32) {}
