//! Steps 9–11 of `ALGORITHM.md` §3.2: concatenation of the three axes and the post-fusion normalisation.
//!
//! Input: per axis (axial, coronal, sagittal) the projected tokens `[L, M, d']`, all in canonical raster
//! order. Output: `[L, M, 3d']`, per layer `X_l[p] = [u_axial(p); u_coronal(p); u_sagittal(p)]`, then
//! (Q13 default, the MuSc `r = 1` path of §4.1) a volume-level layer norm without affine — one mean and one
//! biased variance over all `M·3d'` numbers of that layer, `X̂ = (X − μ)/√(σ² + 1e−5)` — then L2 per token.
//!
//! Traps: the layer norm is per volume and per layer, never per token and never across layers; the axis
//! order inside a token is fixed (axial first); statistics are accumulated in f64.

use ndarray::{s, Array3};

use super::pooling::l2_rows;

/// Epsilon of the volume-level layer norm.
pub const LN_EPS: f64 = 1e-5;

/// Concatenates the three axes' tokens along the feature axis: `[L, M, d']` ×3 → `[L, M, 3d']`.
pub fn concat_axes(axes: &[Array3<f32>; 3]) -> Array3<f32> {
    let (l, m, d) = axes[0].dim();
    assert!(
        axes.iter().all(|a| a.dim() == (l, m, d)),
        "the three axes must have equal shapes"
    );
    let mut out = Array3::zeros((l, m, 3 * d));
    for (a, src) in axes.iter().enumerate() {
        out.slice_mut(s![.., .., a * d..(a + 1) * d]).assign(src);
    }
    out
}

/// Volume-level layer norm (no affine, eps 1e-5) per layer, then L2 per token, in place.
pub fn normalise(x: &mut Array3<f32>) {
    for mut layer in x.outer_iter_mut() {
        let n = layer.len() as f64;
        let mean = layer.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = layer
            .iter()
            .map(|&v| (v as f64 - mean).powi(2))
            .sum::<f64>()
            / n;
        let inv = 1.0 / (var + LN_EPS).sqrt();
        layer.mapv_inplace(|v| ((v as f64 - mean) * inv) as f32);
    }
    l2_rows(x);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concat_order_and_normalisation() {
        let mk =
            |v: f32| Array3::from_shape_fn((2, 3, 2), |(l, m, c)| v + (l * 10 + m * 2 + c) as f32);
        let axes = [mk(0.0), mk(100.0), mk(200.0)];
        let mut x = concat_axes(&axes);
        assert_eq!(x.dim(), (2, 3, 6));
        assert_eq!(x[[1, 2, 0]], axes[0][[1, 2, 0]]);
        assert_eq!(x[[1, 2, 3]], axes[1][[1, 2, 1]]);
        assert_eq!(x[[1, 2, 5]], axes[2][[1, 2, 1]]);
        // reference: whole-layer standardisation, then unit rows
        let layer0: Vec<f64> = x.slice(s![0, .., ..]).iter().map(|&v| v as f64).collect();
        let mean = layer0.iter().sum::<f64>() / 18.0;
        let var = layer0.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 18.0;
        let expect_row1: Vec<f64> = (0..6)
            .map(|c| (x[[0, 1, c]] as f64 - mean) / (var + 1e-5).sqrt())
            .collect();
        let norm = expect_row1.iter().map(|v| v * v).sum::<f64>().sqrt();
        normalise(&mut x);
        for c in 0..6 {
            assert!((x[[0, 1, c]] as f64 - expect_row1[c] / norm).abs() < 1e-6);
        }
        for l in 0..2 {
            for m in 0..3 {
                let n: f32 = x.slice(s![l, m, ..]).iter().map(|v| v * v).sum();
                assert!((n - 1.0).abs() < 1e-5);
            }
        }
    }
}
