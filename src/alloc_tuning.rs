//! glibc malloc settings for a long-running streaming process.
//!
//! df2redis allocates and frees buffers of 64 KiB to a few MiB at a high rate (decompressed
//! blobs, pipelines, batches). With glibc's defaults those are served by fresh `mmap`s or
//! returned to the kernel by trimming, and the kernel then zeroes new pages on every reuse
//! (`clear_page` was 11% of a full sync's profile). Keeping them in the heap costs no more
//! than the peak the process reaches anyway. Two `mallopt` calls through FFI instead of a
//! dependency.

extern "C" {
    fn mallopt(param: i32, value: i32) -> i32;
}

const M_TRIM_THRESHOLD: i32 = -1;
const M_MMAP_THRESHOLD: i32 = -3;

/// Call once at start-up, before threads start.
pub fn tune() {
    // SAFETY: mallopt only changes allocator parameters; called before other threads exist.
    unsafe {
        mallopt(M_MMAP_THRESHOLD, 32 << 20);
        mallopt(M_TRIM_THRESHOLD, 128 << 20);
    }
}
