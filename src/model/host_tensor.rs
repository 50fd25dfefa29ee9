//! Raw f32 access to Burn flex tensors, shared by the host kernels (`host_conv`, `host_norm`).

use burn::backend::flex::{FlexTensor, Layout};
use burn::tensor::{Bytes, DType, Shape};

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
