//! LNAMD of the 2D path (`ALGORITHM.md` §4.1): map-level layer norm, zero-padded `r×r` box mean, L2 per token.
//!
//! * Input: the patch tokens of **one image and one layer**, `[M, C]` f32, positions in row-major raster order
//!   `p = i·W + j` on the grid `(H, W)` with `H·W = M`; the aggregation degree `r` (odd, ≥ 1).
//! * Output: `[M, C]` f32 in the same order; every row has unit L2 norm, except rows whose box mean is exactly
//!   zero, which stay zero (there is no direction to normalise; this happens only for degenerate maps, e.g. a
//!   constant map, whose layer norm is all zeros).
//!
//! Steps: (1) one mean `μ` and one biased variance `σ²` over all `M·C` values (accumulated in f64),
//! `X̂ = (X − μ)/√(σ² + 1e−5)`, no affine; (2) per channel, the sum of `X̂` over the `r×r` neighbourhood with
//! zero padding outside the grid, divided by `r²` (always `r²`, also at the border); (3) L2 per token.
//!
//! Traps: the layer norm is per image *and* per layer (never per token, never over the batch); the divisor at
//! the border is `r²`, not the number of in-grid cells. After step (3) a per-token divisor cancels, so the
//! divisor is only visible in [`box_mean`] (exposed and tested for that reason); the zero padding, however,
//! is visible in the final output (edge replication would give other directions). The grid is `(H, W)` =
//! (rows, columns): transposing it changes the neighbourhoods whenever `H ≠ W`.
//!
//! Cost: the box sum is separable (a row pass, then a column pass, each `r` contiguous `C`-vector additions per
//! position), so `O(M·C·r)`; with `M = 1369`, `C = 1024`, `r = 5`, `tests/image2d_parity.rs` measured
//! 11–70 ms per call on a shared 2-core machine under a load of about 8 (the box mean alone 4–17 ms).

use ndarray::{Array2, ArrayView2};

use super::fusion::LN_EPS;
use crate::{Error, Result};

/// Map-level layer norm without affine: `(X − μ)/√(σ² + 1e−5)` with one mean and one biased variance over all
/// `M·C` values of `tokens` (`[M, C]`, one image and layer). Statistics are computed in f64. An empty map is
/// returned unchanged (empty).
pub fn layer_norm_map(tokens: ArrayView2<f32>) -> Array2<f32> {
    let n = tokens.len();
    if n == 0 {
        return tokens.to_owned();
    }
    let mean = tokens.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
    let var = tokens
        .iter()
        .map(|&v| (v as f64 - mean).powi(2))
        .sum::<f64>()
        / n as f64;
    let inv = 1.0 / (var + LN_EPS).sqrt();
    tokens.mapv(|v| ((v as f64 - mean) * inv) as f32)
}

/// Checks the grid and the degree shared by [`box_mean`] and [`lnamd`].
fn check(m: usize, grid: (usize, usize), r: usize) -> Result<()> {
    if r == 0 || r.is_multiple_of(2) {
        return Err(Error::bad_argument(
            "LNAMD degree r",
            format!("r must be odd and at least 1, got {r}"),
        ));
    }
    if grid.0.checked_mul(grid.1) != Some(m) {
        return Err(Error::bad_argument(
            "LNAMD grid",
            format!(
                "grid {}×{} does not hold the {m} tokens of the map",
                grid.0, grid.1
            ),
        ));
    }
    Ok(())
}

/// Per-channel `r×r` box mean with zero padding and divisor `r²` (step 2 of §4.1), on `x` `[M, C]` in
/// row-major order on `grid = (H, W)`. No normalisation before or after. Errors: `r` even or 0, `H·W ≠ M`.
///
/// Sums are accumulated in f64 (at most `r` terms per pass) and rounded to f32 once, after the division.
pub fn box_mean(x: ArrayView2<f32>, grid: (usize, usize), r: usize) -> Result<Array2<f32>> {
    let (m, c) = x.dim();
    check(m, grid, r)?;
    if r == 1 {
        // One term with divisor 1: the identity, exactly.
        return Ok(x.to_owned());
    }
    let (h, w) = grid;
    let half = r / 2;
    let x = x.as_standard_layout();
    // A standard-layout array is always one contiguous slice.
    let xs = x.as_slice().expect("standard layout is contiguous");
    // Row pass: sum over the columns j−half..=j+half that lie inside the grid (zero padding elsewhere).
    let mut rows = vec![0.0f64; m * c];
    for i in 0..h {
        for j in 0..w {
            let acc = &mut rows[(i * w + j) * c..(i * w + j + 1) * c];
            for jj in j.saturating_sub(half)..(j + half + 1).min(w) {
                let src = &xs[(i * w + jj) * c..(i * w + jj + 1) * c];
                for (a, &v) in acc.iter_mut().zip(src) {
                    *a += v as f64;
                }
            }
        }
    }
    // Column pass on the row sums, then the fixed divisor r².
    let div = 1.0 / (r * r) as f64;
    let mut out = Array2::<f32>::zeros((m, c));
    let mut acc = vec![0.0f64; c];
    for i in 0..h {
        for j in 0..w {
            acc.iter_mut().for_each(|a| *a = 0.0);
            for ii in i.saturating_sub(half)..(i + half + 1).min(h) {
                let src = &rows[(ii * w + j) * c..(ii * w + j + 1) * c];
                for (a, &v) in acc.iter_mut().zip(src) {
                    *a += v;
                }
            }
            for (o, &a) in out.row_mut(i * w + j).iter_mut().zip(&acc) {
                *o = (a * div) as f32;
            }
        }
    }
    Ok(out)
}

/// LNAMD of one image and layer (§4.1): [`layer_norm_map`], then [`box_mean`] of degree `r` on `grid = (H, W)`,
/// then L2 normalisation of every token (a token whose box mean is exactly zero stays zero). `tokens` is
/// `[M, C]`, row-major on the grid; the output has the same shape and order. Errors (never panics): `r` even
/// or 0, `H·W ≠ M`.
pub fn lnamd(tokens: ArrayView2<f32>, grid: (usize, usize), r: usize) -> Result<Array2<f32>> {
    check(tokens.nrows(), grid, r)?;
    let normed = layer_norm_map(tokens);
    let mut out = box_mean(normed.view(), grid, r)?;
    for mut row in out.rows_mut() {
        let norm = super::pooling::l2_norm(row.view());
        if norm > 0.0 {
            row.mapv_inplace(|v| (v as f64 / norm) as f32);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    #[test]
    fn box_mean_on_a_3x3_grid_by_hand() {
        // One channel holding 1..9 on a 3×3 grid, a second channel all ones.
        let x = Array2::from_shape_fn((9, 2), |(p, c)| if c == 0 { p as f32 + 1.0 } else { 1.0 });
        let b = box_mean(x.view(), (3, 3), 3).unwrap();
        // Centre: all nine cells, (1+…+9)/9 = 5. Corner (0,0): cells 1,2,4,5 → 12/9 (divisor r², not 4).
        assert!((b[[4, 0]] - 5.0).abs() < 1e-6);
        assert!((b[[0, 0]] - 12.0 / 9.0).abs() < 1e-6);
        // Edge (0,1): cells 1,2,3,4,5,6 → 21/9; ones channel: 6/9 at an edge, 4/9 at a corner.
        assert!((b[[1, 0]] - 21.0 / 9.0).abs() < 1e-6);
        assert!((b[[1, 1]] - 6.0 / 9.0).abs() < 1e-6);
        assert!((b[[8, 1]] - 4.0 / 9.0).abs() < 1e-6);
        // r = 1 is the identity.
        assert_eq!(box_mean(x.view(), (3, 3), 1).unwrap(), x);
        // r = 5 on a 3×3 grid: every cell sees the whole grid, /25.
        let b5 = box_mean(x.view(), (3, 3), 5).unwrap();
        assert!(b5.column(0).iter().all(|&v| (v - 45.0 / 25.0).abs() < 1e-6));
    }

    #[test]
    fn lnamd_normalises_and_rejects_bad_arguments() {
        let x = Array2::from_shape_fn((12, 5), |(p, c)| ((p * 7 + c * 3) % 11) as f32 - 2.0);
        let ln = layer_norm_map(x.view());
        let mean = ln.iter().map(|&v| v as f64).sum::<f64>() / 60.0;
        let var = ln.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / 60.0;
        assert!(
            mean.abs() < 1e-6 && (var - 1.0).abs() < 1e-4,
            "{mean} {var}"
        );
        let z = lnamd(x.view(), (3, 4), 3).unwrap();
        for row in z.rows() {
            let n: f32 = row.iter().map(|v| v * v).sum::<f32>().sqrt();
            assert!((n - 1.0).abs() < 1e-5);
        }
        // A constant map has a zero layer norm: every token stays zero instead of NaN.
        let flat = Array2::from_elem((4, 3), 2.5f32);
        assert!(lnamd(flat.view(), (2, 2), 1)
            .unwrap()
            .iter()
            .all(|&v| v == 0.0));
        assert!(lnamd(x.view(), (3, 4), 2).is_err());
        assert!(lnamd(x.view(), (3, 4), 0).is_err());
        assert!(lnamd(x.view(), (4, 4), 1).is_err());
        assert!(box_mean(x.view(), (2, 5), 3).is_err());
    }
}
