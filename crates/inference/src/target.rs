//! [`Target`]: an output buffer's base pointer, shared by parallel units of work that
//! write disjoint parts of it (the packed products' tiles, attention's heads).

// Sharing a raw pointer across threads; each user proves its units' writes disjoint.
#![allow(unsafe_code)]

/// The base pointer of an output (of `f32` unless said otherwise) that units of work
/// on several threads write, each its own elements.
pub(crate) struct Target<T = f32>(*mut T);

impl<T> Target<T> {
    /// The base of `out`'s spare capacity, which must outlive every unit that
    /// writes through it: the units fill an output without a pass that zeroes it
    /// first (2-3% of a batch's time), and their caller then sets its length.
    pub(crate) fn spare(out: &mut Vec<T>) -> Self {
        Target(out.spare_capacity_mut().as_mut_ptr().cast())
    }

    /// The same base, as an output of `U`.
    #[cfg(target_arch = "x86_64")]
    pub(crate) fn cast<U>(self) -> Target<U> {
        Target(self.0.cast())
    }

    /// The element `offset` past the base.
    ///
    /// # Safety
    /// `offset` is within the output, and no other unit writes what the caller does.
    pub(crate) unsafe fn at(&self, offset: usize) -> *mut T {
        // SAFETY: the caller's contract.
        unsafe { self.0.add(offset) }
    }
}

// SAFETY: a `Target` only hands out pointers through `at`, whose callers write
// disjoint elements (see `packed::Weight::product` and `attention::Attention`).
unsafe impl<T> Send for Target<T> {}
unsafe impl<T> Sync for Target<T> {}
