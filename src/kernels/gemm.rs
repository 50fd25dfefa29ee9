//! The one call into the `gemm` crate (the matrix-multiply kernels Burn's flex backend uses
//! itself) shared by the host kernels: dense row-major output, operands given by strides.

/// One GEMM, `dst[m, n] (+)= lhs[m, k] · rhs[k, n]`, each operand given by its row and column
/// strides (so transposes cost nothing). `parallel` allows threads for products of at least
/// 48³ multiply-adds.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm(
    (m, n, k): (usize, usize, usize),
    parallel: bool,
    dst: &mut [f32],
    accumulate: bool,
    lhs: &[f32],
    (lhs_rs, lhs_cs): (usize, usize),
    rhs: &[f32],
    (rhs_rs, rhs_cs): (usize, usize),
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst[..m * n].fill(0.0);
        }
        return;
    }
    let last = |rs: usize, cs: usize, rows: usize, cols: usize| (rows - 1) * rs + (cols - 1) * cs;
    assert!(
        dst.len() >= m * n
            && lhs.len() > last(lhs_rs, lhs_cs, m, k)
            && rhs.len() > last(rhs_rs, rhs_cs, k, n),
        "gemm: operands too small for their strides"
    );
    let parallelism = if parallel && m * n * k >= 48 * 48 * 48 {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: every index the strides reach lies inside its slice (checked above), `dst` is a
    // dense row-major m x n matrix, and `dst` is a unique borrow, so it aliases neither input.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            parallelism,
        );
    }
}
