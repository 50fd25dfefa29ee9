//! Memory-allocator tuning for CPU training on Linux with glibc.
//!
//! A training step allocates and frees the same activation-sized buffers (megabytes to tens of
//! megabytes) on every batch. glibc's default `malloc` serves such sizes with fresh `mmap`s or
//! trims them back to the kernel when freed, so every step pays for zeroing and page-faulting
//! them in again: on the 2-core reference machine that was a fifth of a CIFAR fine-tuning
//! step (476k page faults for 24 steps, against 103k once tuned). [`tune_allocator`] raises
//! glibc's thresholds (`mallopt`, see `man 3 mallopt`) so freed memory stays in the process for
//! the next step. Other allocators (mimalloc, jemalloc) have their own knobs; this function
//! does nothing with them.

/// Asks glibc's `malloc` to keep freed memory for reuse instead of returning it to the kernel:
/// allocations up to 32 MiB come from the heap (`M_MMAP_THRESHOLD`), and the heap is trimmed
/// only when more than 1 GiB is free at its top (`M_TRIM_THRESHOLD`). Call it once at the start
/// of a training program (the bundled examples and benchmarks do). It changes a process-wide
/// setting, which is why the library never calls it by itself; peak memory is unchanged, but
/// memory freed after training is kept by the process until it exits or allocates again.
///
/// Returns whether the settings were applied (`false` on other platforms and C libraries).
///
/// ```
/// let tuned = finetune::tune_allocator();
/// # let _ = tuned;
/// ```
pub fn tune_allocator() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: `mallopt` only changes allocator parameters, which glibc allows at any time
        // and from any thread; the values are within the documented ranges.
        unsafe {
            let mmap = libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
            let trim = libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
            mmap == 1 && trim == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}
