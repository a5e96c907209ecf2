//! Step 8 of `ALGORITHM.md` §3.2: one seeded Gaussian random projection `R ∈ R^{d'×D}`, entries i.i.d.
//! `N(0, 1/d')`, shared by all volumes, all three axes and all layers.
//!
//! Input: pooled tokens `[M, D]`. Output: `u = R·T` per token, `[M, d']`.
//!
//! The matrix is drawn row-major (`R[0,0], R[0,1], …`) from `rand_distr::Normal(0, 1/√d')` driven by
//! `ChaCha20Rng::seed_from_u64(seed)`: the same seed gives the same matrix on every machine and in every
//! run. `mri-ad extract --save-projection FILE` writes it as `.npy` `[d', D]` (the Python reference reads it
//! instead of re-implementing the generator).
//!
//! Traps: `D` must equal the backbone width (checked); the scale only multiplies every distance by one
//! constant, so it changes neither rankings nor ratios, but it is part of the token values.

use ndarray::{Array2, ArrayView2};
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};

use crate::{Error, Result};

/// The projection matrix and how it was made.
#[derive(Debug, Clone, PartialEq)]
pub struct Projection {
    /// `[d', D]`.
    pub matrix: Array2<f32>,
    pub seed: u64,
}

impl Projection {
    /// Draws the `[out_dim, in_dim]` matrix from `seed`.
    pub fn new(out_dim: usize, in_dim: usize, seed: u64) -> Result<Self> {
        if out_dim == 0 || in_dim == 0 {
            return Err(Error::bad_argument(
                "--proj-dim",
                format!("projection dimensions must be positive, got d' = {out_dim}, D = {in_dim}"),
            ));
        }
        let normal =
            Normal::new(0.0f64, 1.0 / (out_dim as f64).sqrt()).expect("positive finite std");
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed);
        let matrix =
            Array2::from_shape_simple_fn((out_dim, in_dim), || normal.sample(&mut rng) as f32);
        Ok(Projection { matrix, seed })
    }

    /// `d'`.
    pub fn out_dim(&self) -> usize {
        self.matrix.nrows()
    }
    /// `D`.
    pub fn in_dim(&self) -> usize {
        self.matrix.ncols()
    }

    /// Projects tokens `[M, D]` to `[M, d']` (`u = R·T` for every token).
    pub fn apply(&self, tokens: ArrayView2<f32>) -> Array2<f32> {
        assert_eq!(
            tokens.ncols(),
            self.in_dim(),
            "token width must equal the projection input width"
        );
        tokens.dot(&self.matrix.t())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_shared_and_scaled() {
        let a = Projection::new(64, 300, 7).unwrap();
        let b = Projection::new(64, 300, 7).unwrap();
        let c = Projection::new(64, 300, 8).unwrap();
        assert_eq!(a, b);
        assert_ne!(a.matrix, c.matrix);
        // entries ~ N(0, 1/64): sample variance close to 1/64
        let n = a.matrix.len() as f64;
        let mean = a.matrix.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = a
            .matrix
            .iter()
            .map(|&v| (v as f64 - mean).powi(2))
            .sum::<f64>()
            / n;
        assert!(mean.abs() < 0.005, "mean {mean}");
        assert!(
            (var * 64.0 - 1.0).abs() < 0.05,
            "variance·d' = {}",
            var * 64.0
        );
        let t = Array2::from_shape_fn((3, 300), |(i, j)| (i + j) as f32 / 300.0);
        let u = a.apply(t.view());
        assert_eq!(u.dim(), (3, 64));
        let manual: f32 = (0..300).map(|j| a.matrix[[5, j]] * t[[2, j]]).sum();
        assert!((u[[2, 5]] - manual).abs() < 1e-4);
        assert!(Projection::new(0, 3, 1).is_err());
    }
}
