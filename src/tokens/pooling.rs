//! Steps 5–7 of `ALGORITHM.md` §3.2: patch-aligned mean pooling over groups of 14 slices, L2 per token,
//! re-indexing to canonical `(z, y, x)`.
//!
//! Input: the patch tokens of one slice, `[L, N, C]` (`N = G²`, patch `(i, j)` at `n = i·G + j`), added one
//! slice at a time in any order. Output: `[L, M, C]` with `M = G³` in raster order `p = (z·G + y)·G + x`,
//! each token the mean of its 14 slices' tokens, divided by its L2 norm (a zero vector stays zero).
//!
//! Traps: memory — the accumulator is already the pooled `[L, G³, C]` (16.8 MB per layer for ViT-L at 224),
//! so the raw `[S, G, G, C]` per-slice features are never held; a slice is added straight into the token it
//! belongs to, at its canonical position ([`SliceAxis::canonical`]). Every slice must be added exactly once.

use ndarray::{Array3, ArrayView3, Axis};

use super::axes::SliceAxis;
use crate::backbone::PATCH;

/// Streaming accumulator of one axis.
#[derive(Debug)]
pub struct Pooler {
    axis: SliceAxis,
    g: usize,
    acc: Array3<f32>,
    added: Vec<bool>,
}

impl Pooler {
    /// An empty accumulator for a cube of edge `size = 14·G`, `layers` layers of width `dim`.
    pub fn new(axis: SliceAxis, size: usize, layers: usize, dim: usize) -> Self {
        let g = size / PATCH;
        Pooler {
            axis,
            g,
            acc: Array3::zeros((layers, g * g * g, dim)),
            added: vec![false; size],
        }
    }

    /// Adds the tokens `[L, G², C]` of slice `t`.
    pub fn add(&mut self, t: usize, tokens: ArrayView3<f32>) {
        let g = self.g;
        assert_eq!(
            tokens.dim().1,
            g * g,
            "slice tokens must cover the G×G patch grid"
        );
        assert!(
            !self.added[t],
            "slice {t} of the {} axis added twice",
            self.axis.name()
        );
        self.added[t] = true;
        let k = t / PATCH;
        for (mut acc_l, tok_l) in self.acc.outer_iter_mut().zip(tokens.outer_iter()) {
            for i in 0..g {
                for j in 0..g {
                    let (z, y, x) = self.axis.canonical(k, i, j);
                    let mut dst = acc_l.row_mut((z * g + y) * g + x);
                    dst += &tok_l.row(i * g + j);
                }
            }
        }
    }

    /// The pooled, L2-normalised tokens `[L, G³, C]`; panics if a slice is missing (a programming error).
    pub fn finish(mut self) -> Array3<f32> {
        if let Some(t) = self.added.iter().position(|&a| !a) {
            panic!("slice {t} of the {} axis was never added", self.axis.name());
        }
        self.acc.mapv_inplace(|v| v / PATCH as f32);
        l2_rows(&mut self.acc);
        self.acc
    }
}

/// The L2 norm of a row, accumulated in f64.
pub fn l2_norm(row: ndarray::ArrayView1<f32>) -> f64 {
    row.iter()
        .map(|&v| (v as f64) * (v as f64))
        .sum::<f64>()
        .sqrt()
}

/// Divides every token (last axis) by its L2 norm; zero vectors stay zero.
pub fn l2_rows(x: &mut Array3<f32>) {
    for mut layer in x.outer_iter_mut() {
        for mut row in layer.axis_iter_mut(Axis(0)) {
            let norm = l2_norm(row.view());
            if norm > 0.0 {
                let inv = (1.0 / norm) as f32;
                row.mapv_inplace(|v| v * inv);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array3;

    #[test]
    fn pools_means_of_14_slices_at_canonical_positions() {
        // size 28: G = 2, M = 8; 1 layer, C = 2. Slice t contributes [t, 1] at every patch of the coronal axis.
        let size = 28;
        let mut p = Pooler::new(SliceAxis::Coronal, size, 1, 2);
        for t in (0..size).rev() {
            let tok =
                Array3::from_shape_fn(
                    (1, 4, 2),
                    |(_, n, c)| if c == 0 { t as f32 } else { 1.0 + n as f32 },
                );
            p.add(t, tok.view());
        }
        let out = p.finish();
        // coronal: group k is canonical y. Token (z=1, y=0, x=1): k = 0, patch (i=1, j=1) → n = 3.
        // mean over t = 0..14 of t is 6.5; channel 1 is 4. Normalised: [6.5, 4] / |.|
        let norm = (6.5f32 * 6.5 + 16.0).sqrt();
        let (z, y, x, g) = (1, 0, 1, 2);
        let p_idx = (z * g + y) * g + x;
        assert!((out[[0, p_idx, 0]] - 6.5 / norm).abs() < 1e-6);
        assert!((out[[0, p_idx, 1]] - 4.0 / norm).abs() < 1e-6);
        // token (z=0, y=1, x=0): k = 1 (mean of 14..28 = 20.5), n = 0 → channel 1 = 1
        let norm = (20.5f32 * 20.5 + 1.0).sqrt();
        assert!((out[[0, 2, 0]] - 20.5 / norm).abs() < 1e-6);
    }

    #[test]
    #[should_panic(expected = "never added")]
    fn missing_slice_is_caught() {
        let mut p = Pooler::new(SliceAxis::Axial, 14, 1, 1);
        p.add(0, Array3::zeros((1, 1, 1)).view());
        p.finish();
    }

    #[test]
    fn zero_vector_stays_zero() {
        let mut x = Array3::zeros((1, 2, 3));
        x[[0, 1, 0]] = 3.0;
        x[[0, 1, 2]] = 4.0;
        l2_rows(&mut x);
        assert_eq!(x.slice(ndarray::s![0, 0, ..]).to_vec(), vec![0.0; 3]);
        assert!((x[[0, 1, 0]] - 0.6).abs() < 1e-7 && (x[[0, 1, 2]] - 0.8).abs() < 1e-7);
    }
}
