//! A deterministic stand-in for the backbone, for tests that need no ONNX Runtime.
//!
//! Input `[B, 3, H, W]`, output `[L, B, N, C]` like any [`Embedder`]. Each patch token is a fixed random
//! nonlinear function (seeded) of order-free statistics of its own 14×14×3 pixels: the channel means, the
//! mean square, the minimum, the maximum and the mean absolute deviation. So the features depend only on the
//! patch's content and not on its position or pixel order: transposing an image transposes its token grid
//! and nothing else, which lets tests check axis handling exactly. Each layer has its own weights. The
//! global embedding (`cls`) is the mean of the last layer's patch tokens.

use ndarray::{s, Array2, Array4, ArrayView4, Axis};
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};

use super::{Embedder, PATCH};
use crate::{Error, Result};

const N_STATS: usize = 8;

/// A deterministic, patch-local fake backbone.
#[derive(Debug, Clone)]
pub struct FakeEmbedder {
    layers: Vec<usize>,
    dim: usize,
    /// Per layer `[C, N_STATS + 1]` (last column: bias).
    weights: Vec<Array2<f32>>,
    /// Number of images embedded so far (tests use it to count inference work).
    pub images_embedded: usize,
    /// Number of `embed` calls so far.
    pub calls: usize,
}

impl FakeEmbedder {
    /// A fake backbone with the given blocks and feature width, fully determined by `seed`.
    pub fn new(layers: &[usize], dim: usize, seed: u64) -> Self {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed);
        let normal = Normal::new(0.0f32, 1.0).expect("valid normal");
        let weights = layers
            .iter()
            .map(|_| Array2::from_shape_fn((dim, N_STATS + 1), |_| normal.sample(&mut rng)))
            .collect();
        FakeEmbedder {
            layers: layers.to_vec(),
            dim,
            weights,
            images_embedded: 0,
            calls: 0,
        }
    }
}

impl Embedder for FakeEmbedder {
    fn layers(&self) -> &[usize] {
        &self.layers
    }
    fn dim(&self) -> usize {
        self.dim
    }
    fn provider(&self) -> &str {
        "fake"
    }
    fn embed(&mut self, px: ArrayView4<f32>) -> Result<Array4<f32>> {
        let (b, c, h, w) = px.dim();
        if c != 3 || h % PATCH != 0 || w % PATCH != 0 || h == 0 || w == 0 {
            return Err(Error::bad_argument(
                "fake backbone",
                format!("input must be [B, 3, H, W] with H, W multiples of {PATCH}, got [{b}, {c}, {h}, {w}]"),
            ));
        }
        let (gh, gw) = (h / PATCH, w / PATCH);
        let mut out = Array4::<f32>::zeros((self.layers.len(), b, gh * gw, self.dim));
        let mut stats = [0f32; N_STATS + 1];
        for bi in 0..b {
            for i in 0..gh {
                for j in 0..gw {
                    let patch = px.slice(s![
                        bi,
                        ..,
                        i * PATCH..(i + 1) * PATCH,
                        j * PATCH..(j + 1) * PATCH
                    ]);
                    let n = (PATCH * PATCH * 3) as f32;
                    let mean = patch.sum() / n;
                    for (ch, st) in stats.iter_mut().take(3).enumerate() {
                        *st = patch.slice(s![ch, .., ..]).mean().unwrap_or(0.0);
                    }
                    stats[3] = patch.iter().map(|v| v * v).sum::<f32>() / n;
                    stats[4] = patch.iter().cloned().fold(f32::INFINITY, f32::min);
                    stats[5] = patch.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                    stats[6] = patch.iter().map(|v| (v - mean).abs()).sum::<f32>() / n;
                    stats[7] = mean * mean;
                    stats[8] = 1.0;
                    let p = i * gw + j;
                    for (l, wl) in self.weights.iter().enumerate() {
                        for k in 0..self.dim {
                            let z: f32 =
                                wl.row(k).iter().zip(stats.iter()).map(|(a, x)| a * x).sum();
                            out[[l, bi, p, k]] = (z * (l + 1) as f32 * 0.5).tanh() + 0.1 * z;
                        }
                    }
                }
            }
        }
        self.images_embedded += b;
        self.calls += 1;
        Ok(out)
    }
    fn embed_with_cls(&mut self, px: ArrayView4<f32>) -> Result<(Array4<f32>, Array2<f32>)> {
        let out = self.embed(px)?;
        let last = out.index_axis(Axis(0), out.dim().0 - 1);
        let cls = last.mean_axis(Axis(1)).expect("at least one patch");
        Ok((out, cls))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backbone::grey_to_pixel_values;
    use ndarray::Array3;

    #[test]
    fn deterministic_patch_local_and_transpose_equivariant() {
        let grey = Array3::from_shape_fn((1, 28, 42), |(_, y, x)| {
            ((y * 7 + x * 3) % 11) as f32 / 10.0
        });
        let mut a = FakeEmbedder::new(&[2, 4], 5, 7);
        let mut b = FakeEmbedder::new(&[2, 4], 5, 7);
        let fa = a.embed(grey_to_pixel_values(grey.view()).view()).unwrap();
        let fb = b.embed(grey_to_pixel_values(grey.view()).view()).unwrap();
        assert_eq!(fa, fb);
        assert_eq!(fa.dim(), (2, 1, 6, 5));
        // layers differ
        assert_ne!(fa.slice(s![0, .., .., ..]), fa.slice(s![1, .., .., ..]));
        // transposing the image transposes the token grid: patch (i, j) of the original is (j, i) of the
        // transpose (grid 2x3 vs 3x2)
        let t = grey
            .clone()
            .permuted_axes([0, 2, 1])
            .as_standard_layout()
            .to_owned();
        let ft = a.embed(grey_to_pixel_values(t.view()).view()).unwrap();
        for i in 0..2 {
            for j in 0..3 {
                for k in 0..5 {
                    let (x, y) = (fa[[1, 0, i * 3 + j, k]], ft[[1, 0, j * 2 + i, k]]);
                    assert!((x - y).abs() < 1e-5, "{x} vs {y}");
                }
            }
        }
        assert_eq!(a.images_embedded, 2);
        assert!(a.embed(Array4::zeros((1, 3, 15, 14)).view()).is_err());
    }
}
