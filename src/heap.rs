//! Returning freed heap to the system (glibc only).
//!
//! glibc keeps freed memory for reuse instead of unmapping it, per thread arena. Work that
//! allocates a lot on one thread and frees it on another leaves RSS high long after:
//! loading 10,000 apps (the parsed file, intermediate config values, the probe list) left
//! ~47 MB nothing would use again; a cluster outage's publications (10,000 app plans
//! rebuilt on the publisher thread, the old ones freed where the last reader dropped them)
//! and a reload (a whole new snapshot and table, the old ones freed on their own thread)
//! grew RSS by ~240 MiB that stayed after the recovery. So gtmd trims after those: once
//! the first snapshot and the probe tasks exist, after the first probe round, after each
//! reload, and after a burst of publications once it has been quiet for a second. Each trim
//! costs milliseconds, off the query path.

/// Makes every thread allocate from one glibc arena (unless `MALLOC_ARENA_MAX` is set,
/// which glibc applies itself). Called first thing, before any thread starts.
///
/// glibc gives threads arenas of their own (up to 8 per core), and memory freed into one
/// arena is reused only by allocations there: the publisher thread's new plans, the probe
/// workers' results and the freeing thread's old snapshots spread a cluster outage's
/// churn over several arenas, and RSS grew by 69 MiB (10,000 transitions) against ~24 MiB
/// of live heap (`heaptrack`). With one arena the same outage grew RSS by 29 MiB, at
/// the same probing CPU: the query path does not allocate, and small allocations are
/// served from glibc's per-thread cache without the arena's lock.
pub fn one_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only changes the allocator's tuning; it is called before other
        // threads exist.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}

/// Returns the heap freed since the last trim to the system.
pub fn release_freed() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory of the allocator; it has no
    // preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}
