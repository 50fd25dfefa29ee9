//! Seeded random splits with the semantics of PyTorch's `torch.utils.data.random_split`
//! (counts, or fractions whose floors are topped up round-robin), and index subsets.
//!
//! The permutation comes from [`SeededRng`] (Xoshiro256++ seeded through SplitMix64,
//! Fisher–Yates shuffle), not from PyTorch's generator: the same seed gives the same split on
//! every machine and build of this crate, but not the same split as PyTorch.

use std::marker::PhantomData;
use std::ops::Range;
use std::sync::Arc;

use burn::data::dataset::{Dataset, DatasetError};

use super::error::DataError;
use super::rng::SeededRng;

/// The sizes of the parts of a split.
#[derive(Clone, Debug, PartialEq)]
pub enum Lengths {
    /// Exact numbers of items; they must add up to the dataset's length.
    Counts(Vec<usize>),
    /// Fractions in `[0, 1]` adding up to 1; each part gets `floor(n * fraction)` items and the
    /// remainder is handed out one by one from the first part on (PyTorch's rule).
    Fractions(Vec<f64>),
}

impl From<&[usize]> for Lengths {
    fn from(v: &[usize]) -> Self {
        Lengths::Counts(v.to_vec())
    }
}
impl<const N: usize> From<[usize; N]> for Lengths {
    fn from(v: [usize; N]) -> Self {
        Lengths::Counts(v.to_vec())
    }
}
impl From<&[f64]> for Lengths {
    fn from(v: &[f64]) -> Self {
        Lengths::Fractions(v.to_vec())
    }
}
impl<const N: usize> From<[f64; N]> for Lengths {
    fn from(v: [f64; N]) -> Self {
        Lengths::Fractions(v.to_vec())
    }
}

impl Lengths {
    /// The number of items of each part for a dataset of `n` items.
    pub fn resolve(&self, n: usize) -> Result<Vec<usize>, DataError> {
        let counts = match self {
            Lengths::Counts(c) => c.clone(),
            Lengths::Fractions(f) => {
                let sum: f64 = f.iter().sum();
                if f.is_empty() || (sum - 1.0).abs() > 1e-9 || sum > 1.0 + 1e-9 {
                    return Err(DataError::Split(format!(
                        "fractions {f:?} add up to {sum}, not 1"
                    )));
                }
                if let Some(bad) = f.iter().find(|x| !(0.0..=1.0).contains(*x)) {
                    return Err(DataError::Split(format!("fraction {bad} is not in [0, 1]")));
                }
                let mut c: Vec<usize> = f.iter().map(|x| (n as f64 * x).floor() as usize).collect();
                let assigned: usize = c.iter().sum();
                let parts = c.len();
                for i in 0..n.saturating_sub(assigned) {
                    c[i % parts] += 1;
                }
                c
            }
        };
        let total: usize = counts.iter().sum();
        if total != n {
            return Err(DataError::Split(format!(
                "lengths {counts:?} add up to {total} but the dataset has {n} items"
            )));
        }
        Ok(counts)
    }
}

/// The items of a dataset at the given indices, in that order (PyTorch's `Subset`).
pub struct Subset<I> {
    dataset: Arc<dyn Dataset<I>>,
    indices: Arc<[usize]>,
    _item: PhantomData<fn() -> I>,
}

impl<I> Clone for Subset<I> {
    fn clone(&self) -> Self {
        Subset {
            dataset: self.dataset.clone(),
            indices: self.indices.clone(),
            _item: PhantomData,
        }
    }
}

impl<I> std::fmt::Debug for Subset<I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subset")
            .field("len", &self.indices.len())
            .field("of", &self.dataset.len())
            .finish()
    }
}

impl<I: 'static> Subset<I> {
    /// The items of `dataset` at `indices` (each must be in range).
    pub fn new(dataset: impl Dataset<I> + 'static, indices: Vec<usize>) -> Result<Self, DataError> {
        let dataset: Arc<dyn Dataset<I>> = Arc::new(dataset);
        if let Some(&bad) = indices.iter().find(|&&i| i >= dataset.len()) {
            return Err(DataError::Split(format!(
                "index {bad} is out of range for a dataset of {} items",
                dataset.len()
            )));
        }
        Ok(Subset {
            dataset,
            indices: indices.into(),
            _item: PhantomData,
        })
    }

    /// The items in `range` (clamped to the dataset), e.g. the first N for a quick run.
    pub fn range(dataset: impl Dataset<I> + 'static, range: Range<usize>) -> Self {
        let dataset: Arc<dyn Dataset<I>> = Arc::new(dataset);
        let end = range.end.min(dataset.len());
        let start = range.start.min(end);
        Subset {
            dataset,
            indices: (start..end).collect::<Vec<_>>().into(),
            _item: PhantomData,
        }
    }

    /// The indices into the underlying dataset.
    pub fn indices(&self) -> &[usize] {
        &self.indices
    }

    /// The underlying dataset.
    pub fn dataset(&self) -> &Arc<dyn Dataset<I>> {
        &self.dataset
    }
}

impl<I: Send + Sync> Dataset<I> for Subset<I> {
    fn get(&self, index: usize) -> Result<I, DatasetError> {
        match self.indices.get(index) {
            Some(&i) => self.dataset.get(i),
            None => Err(DatasetError::new(DataError::Item {
                index,
                reason: format!("out of range (the subset has {} items)", self.indices.len()),
            })),
        }
    }

    fn len(&self) -> usize {
        self.indices.len()
    }
}

/// Splits `dataset` into non-overlapping random parts of the given lengths (PyTorch's
/// `random_split`). The same `seed` always gives the same parts.
///
/// ```
/// use burn::data::dataset::{Dataset, InMemDataset};
/// use finetune::data::{Lengths, random_split};
///
/// let test = InMemDataset::new((0..10_000).collect::<Vec<u32>>());
/// // The tutorial's 50/50 split of the test set into validation and test.
/// let parts = random_split(test, [0.5, 0.5], 42).unwrap();
/// assert_eq!((parts[0].len(), parts[1].len()), (5_000, 5_000));
/// ```
pub fn random_split<I: 'static>(
    dataset: impl Dataset<I> + 'static,
    lengths: impl Into<Lengths>,
    seed: u64,
) -> Result<Vec<Subset<I>>, DataError> {
    let dataset: Arc<dyn Dataset<I>> = Arc::new(dataset);
    let counts = lengths.into().resolve(dataset.len())?;
    let perm = SeededRng::new(seed).permutation(dataset.len());
    let mut parts = Vec::with_capacity(counts.len());
    let mut offset = 0;
    for c in counts {
        parts.push(Subset {
            dataset: dataset.clone(),
            indices: perm[offset..offset + c].to_vec().into(),
            _item: PhantomData,
        });
        offset += c;
    }
    Ok(parts)
}
