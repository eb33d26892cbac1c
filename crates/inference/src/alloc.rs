//! [`LineAligned`]: the global allocator of the binaries that run the model.

// A global allocator is an unsafe trait over raw pointers; it forwards to the system's.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};

/// Allocations of this many bytes or more start on a cache line.
const LARGE: usize = 4096;
/// Bytes in a cache line.
const LINE: usize = 64;

/// The system allocator, with every allocation of 4 KiB or more starting on a cache
/// line. Install it in a binary that runs the model:
///
/// ```
/// #[global_allocator]
/// static ALLOCATOR: offpath_inference::LineAligned = offpath_inference::LineAligned;
///
/// offpath_inference::LineAligned::keep_freed_blocks();
/// let rows = vec![0f32; 1 << 16];
/// assert_eq!(rows.as_ptr() as usize % 64, 0);
/// ```
///
/// The packed products and attention share an output's rows among threads by
/// column panels of 128 bytes. glibc starts a large buffer 16 bytes into a cache line,
/// so there neighbouring panels share a line on every row, and two cores writing them
/// pass it back and forth (false sharing). On two Sapphire Rapids cores, aligned
/// outputs took one sentence from 497 to 543 sentences/s and one 256-token window
/// from 43.7 to 49 chunks/s; batches whose passes each run on one core do not change.
/// Small allocations keep the system's alignment.
pub struct LineAligned;

/// Mappings larger than this stay fresh mappings; smaller freed blocks go back to
/// the heap.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 64 << 20;
/// Free memory at the heap's top beyond this is returned to the system.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD: libc::c_int = 256 << 20;

impl LineAligned {
    /// Tells glibc's allocator to keep the blocks a pass frees for the next pass:
    /// call it once, at the start of a binary that runs the model. A pass allocates
    /// and frees buffers of up to tens of MiB; glibc serves blocks over its mapping
    /// threshold (128 KiB, rising with what is freed, to at most 32 MiB) as fresh
    /// mappings, whose every page then faults in again on each pass. With the
    /// threshold at 64 MiB, a batch of 64 sentences on AMX tiles went from 2,172 to
    /// 2,651 sentences/s on two Sapphire Rapids cores (`f32`, slower per byte, did
    /// not change). The cost: freed memory below the heap's top stays with the
    /// process, which peaks as high either way. Does nothing on other C libraries.
    pub fn keep_freed_blocks() {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: mallopt changes two tuning parameters of the C allocator, which is
        // safe at any time.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
            libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
        }
    }
}

/// `layout`, aligned to a cache line if it is large.
fn aligned(layout: Layout) -> Layout {
    if layout.size() >= LARGE {
        layout.align_to(LINE).unwrap_or(layout)
    } else {
        layout
    }
}

// SAFETY: every call forwards to the system allocator with the layout `aligned` makes
// of the caller's, and `aligned` is a function of the layout alone, so a block is
// always freed or resized with the layout it was allocated with.
unsafe impl GlobalAlloc for LineAligned {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: `aligned` keeps the size (non-zero, the caller's contract).
        unsafe { System.alloc(aligned(layout)) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as in `alloc`.
        unsafe { System.alloc_zeroed(aligned(layout)) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated with `aligned(layout)` (see the impl).
        unsafe { System.dealloc(ptr, aligned(layout)) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract: `new_size` rounded up to the alignment fits
        // an `isize`.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        if aligned(layout).align() == aligned(new_layout).align() {
            // SAFETY: `ptr` was allocated with `aligned(layout)`, whose alignment the
            // new block keeps.
            return unsafe { System.realloc(ptr, aligned(layout), new_size) };
        }
        // SAFETY: the new block holds `new_size` bytes, the old `layout.size()`; they
        // are distinct blocks, and the old one is freed with its own layout.
        unsafe {
            let new = self.alloc(new_layout);
            if !new.is_null() {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            new
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_blocks_start_on_a_line_and_keep_their_bytes_when_resized() {
        let small = Layout::from_size_align(100, 4).unwrap();
        // SAFETY: each block is used within its size and freed with its layout.
        unsafe {
            let ptr = LineAligned.alloc(small);
            for i in 0..100 {
                *ptr.add(i) = i as u8;
            }
            // Growing past LARGE moves the block onto a line; shrinking back moves it
            // again; every step keeps the bytes both sizes hold.
            let ptr = LineAligned.realloc(ptr, small, 3 * LARGE);
            assert_eq!(ptr as usize % LINE, 0);
            let large = Layout::from_size_align(3 * LARGE, 4).unwrap();
            let ptr = LineAligned.realloc(ptr, large, 5 * LARGE);
            assert_eq!(ptr as usize % LINE, 0);
            let larger = Layout::from_size_align(5 * LARGE, 4).unwrap();
            let ptr = LineAligned.realloc(ptr, larger, 50);
            assert!((0..50).all(|i| *ptr.add(i) == i as u8));
            LineAligned.dealloc(ptr, Layout::from_size_align(50, 4).unwrap());
            for size in [LARGE, 100_000, 1 << 22] {
                let layout = Layout::from_size_align(size, 4).unwrap();
                let ptr = LineAligned.alloc_zeroed(layout);
                assert_eq!(ptr as usize % LINE, 0, "{size} bytes");
                assert_eq!(*ptr.add(size - 1), 0);
                LineAligned.dealloc(ptr, layout);
            }
        }
    }
}
