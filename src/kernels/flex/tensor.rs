//! Raw f32 access to Burn flex tensors, shared by the host kernels (`conv`, `norm`,
//! `pool`).

use burn::backend::flex::{FlexTensor, Layout};
use burn::tensor::{Bytes, DType, Shape};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// `x` with a dense layout (copied only when it is a strided view).
pub(crate) fn dense(x: FlexTensor) -> FlexTensor {
    if x.as_slice::<f32>().is_some() {
        x
    } else {
        x.to_contiguous()
    }
}

/// The elements of a [`dense`] f32 tensor.
pub(crate) fn f32s(x: &FlexTensor) -> &[f32] {
    x.as_slice::<f32>()
        .expect("host kernels work on dense f32 tensors (checked before dispatch)")
}

/// A contiguous f32 tensor owning `data`.
pub(crate) fn tensor(data: Vec<f32>, shape: impl Into<Shape>) -> FlexTensor {
    FlexTensor::new(
        Bytes::from_elems(data),
        Layout::contiguous(shape.into()),
        DType::F32,
    )
}

/// A vector of `n` floats built in parallel, `chunk` elements at a time from the values
/// `fill(i)` yields for chunk `i` (elements `i·chunk..`, the last chunk may be shorter). Skips
/// the zeroing pass of `vec![0.0; n]`, which on large activations costs as much as the kernel's
/// own writes.
///
/// # Panics
/// When `fill` yields fewer values than its chunk holds (an internal bug, not an input error).
pub(crate) fn par_build<I>(n: usize, chunk: usize, fill: impl Fn(usize) -> I + Sync) -> Vec<f32>
where
    I: Iterator<Item = f32>,
{
    let mut v = Vec::with_capacity(n);
    v.spare_capacity_mut()[..n]
        .par_chunks_mut(chunk.max(1))
        .enumerate()
        .for_each(|(i, out): (usize, &mut [MaybeUninit<f32>])| {
            let mut written = 0;
            for (o, value) in out.iter_mut().zip(fill(i)) {
                o.write(value);
                written += 1;
            }
            assert_eq!(written, out.len(), "par_build: chunk {i} not filled");
        });
    // SAFETY: every chunk of the first `n` elements was written in full (asserted above).
    unsafe { v.set_len(n) };
    v
}

/// `n` reproducible values in `[-0.5, 0.5)` from `seed` (a 64-bit LCG), for the kernels' unit
/// tests.
#[cfg(test)]
pub(crate) fn test_values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        })
        .collect()
}
