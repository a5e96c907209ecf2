//! RsCIN image-score refinement (`ALGORITHM.md` §7.1 step 4), 2D only.
//!
//! * Input: the `N` raw image scores (max of each upsampled map), the `N` global embeddings `E` `[N, D]`
//!   (CLS tokens; whether they are unit-norm is the caller's choice, nothing is normalised here), and the
//!   window sizes `κ` (`[1, 2, 3]` for MVTec AD, `[1, 8, 9]` for VisA).
//! * Output: the `N` refined scores, in input order.
//!
//! Steps: (1) `ŝ` = min–max normalised raw scores; when all raw scores are equal, `ŝ` is all 0 (MuSc's
//! division would give NaN) and so is the result; (2) `W = E·Eᵀ`, raw dot products in f64; (3) for every `κ` and
//! every row `a`, keep the `κ` largest entries of row `a` (the diagonal included when it is among them), zero
//! the others, divide the kept ones by their sum: `P_κ`; `S_κ = P_κ·ŝ`; (4) the result is the mean of `S_κ`
//! over the windows.
//!
//! Tie rule: entries are ranked by value, descending, and equal values by column index, ascending (a stable
//! descending sort), so among equal entries the lower indices are kept.
//!
//! Traps: the row sum of the kept entries can be 0 or negative with raw dot products (embeddings that are not
//! all in one half-space); a zero sum is refused as an error, a negative one is used as it is (as MuSc does).
//! With unit-norm embeddings `κ = 1` keeps only the diagonal and returns `ŝ` itself. RsCIN changes image
//! scores only, never maps.

use std::cmp::Ordering;

use ndarray::ArrayView2;

use crate::{Error, Result};

/// RsCIN of §7.1 step 4: `mean_κ P_κ·ŝ` (see the module documentation for the tie rule and the traps).
///
/// Errors (`BadArgument`, never a panic): `raw.len() ≠ N` (rows of `embeddings`), `N = 0`, empty `windows`,
/// `κ = 0` or `κ > N`, a non-finite raw score or embedding value, a row whose kept entries sum to 0.
pub fn rscin(raw: &[f64], embeddings: ArrayView2<f32>, windows: &[usize]) -> Result<Vec<f64>> {
    let n = embeddings.nrows();
    let bad = |problem: String| Error::bad_argument("RsCIN", problem);
    if raw.len() != n {
        return Err(bad(format!("{} raw scores but {n} embeddings", raw.len())));
    }
    if n == 0 {
        return Err(bad("no images".into()));
    }
    if windows.is_empty() {
        return Err(bad("no window size κ given".into()));
    }
    if let Some(&k) = windows.iter().find(|&&k| k == 0 || k > n) {
        return Err(bad(format!("window size κ = {k} is outside 1..={n}")));
    }
    if raw.iter().any(|v| !v.is_finite()) || embeddings.iter().any(|v| !v.is_finite()) {
        return Err(bad("a raw score or an embedding value is not finite".into()));
    }

    let lo = raw.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = raw.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let s_hat: Vec<f64> = if hi > lo {
        raw.iter().map(|&v| (v - lo) / (hi - lo)).collect()
    } else {
        vec![0.0; n]
    };

    let e: Vec<Vec<f64>> = embeddings
        .rows()
        .into_iter()
        .map(|r| r.iter().map(|&v| v as f64).collect())
        .collect();
    let mut out = vec![0.0f64; n];
    let mut order: Vec<usize> = Vec::with_capacity(n);
    for a in 0..n {
        let w: Vec<f64> = (0..n)
            .map(|b| e[a].iter().zip(&e[b]).map(|(x, y)| x * y).sum())
            .collect();
        order.clear();
        order.extend(0..n);
        // Stable sort, descending by value: ties (0.0 and −0.0 included) keep ascending column order.
        order.sort_by(|&x, &y| w[y].partial_cmp(&w[x]).unwrap_or(Ordering::Equal));
        for &k in windows {
            let kept = &order[..k];
            let sum: f64 = kept.iter().map(|&b| w[b]).sum();
            if sum == 0.0 || !sum.is_finite() {
                return Err(bad(format!(
                    "row {a}: the {k} largest similarities sum to {sum}, cannot normalise"
                )));
            }
            out[a] += kept.iter().map(|&b| w[b] * s_hat[b]).sum::<f64>() / sum;
        }
        out[a] /= windows.len() as f64;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array2;

    #[test]
    fn hand_computed_windows_and_ties() {
        // Unit vectors at angles: image 0 and 1 close, 2 far. W (cosines): row 0 = [1, c01, c02].
        let e = Array2::from_shape_vec((3, 2), vec![1.0f32, 0.0, 0.6, 0.8, 0.0, 1.0]).unwrap();
        let raw = [1.0, 3.0, 5.0]; // ŝ = [0, 0.5, 1]
                                   // κ = 1 with unit vectors: the diagonal only, ŝ itself.
        let s1 = rscin(&raw, e.view(), &[1]).unwrap();
        assert_eq!(s1, vec![0.0, 0.5, 1.0]);
        // κ = 2, row 0: W = [1, 0.6, 0]; keep {0, 1}: (1·0 + 0.6·0.5)/1.6.
        let s2 = rscin(&raw, e.view(), &[2]).unwrap();
        assert!((s2[0] - 0.3 / 1.6).abs() < 1e-7); // 0.6 and 0.8 are f32
                                                   // row 2: W = [0, 0.8, 1]; keep {2, 1}: (1·1 + 0.8·0.5)/1.8.
        assert!((s2[2] - 1.4 / 1.8).abs() < 1e-7);
        // The mean over windows.
        let s12 = rscin(&raw, e.view(), &[1, 2]).unwrap();
        assert!((s12[0] - (0.0 + 0.3 / 1.6) / 2.0).abs() < 1e-7);
        // Tie: row 0 of [[1,0],[1,0],[1,0]]-like rows (all equal) keeps the lower index first.
        let t = Array2::from_shape_vec((3, 1), vec![1.0f32, 1.0, 1.0]).unwrap();
        let st = rscin(&[0.0, 2.0, 1.0], t.view(), &[1]).unwrap();
        // Every row keeps column 0 (ŝ = 0): all 0. With κ = 2 columns 0 and 1: ŝ mean = 0.5.
        assert_eq!(st, vec![0.0, 0.0, 0.0]);
        assert_eq!(
            rscin(&[0.0, 2.0, 1.0], t.view(), &[2]).unwrap(),
            vec![0.5; 3]
        );
        // All raw scores equal: ŝ = 0, result 0.
        assert_eq!(rscin(&[4.0; 3], e.view(), &[2]).unwrap(), vec![0.0; 3]);
    }

    #[test]
    fn bad_arguments_are_errors() {
        let e = Array2::from_shape_vec((2, 2), vec![1.0f32, 0.0, 0.0, 1.0]).unwrap();
        assert!(rscin(&[0.0, 1.0], e.view(), &[]).is_err());
        assert!(rscin(&[0.0, 1.0], e.view(), &[0]).is_err());
        assert!(rscin(&[0.0, 1.0], e.view(), &[3]).is_err());
        assert!(rscin(&[0.0], e.view(), &[1]).is_err());
        assert!(rscin(&[0.0, f64::NAN], e.view(), &[1]).is_err());
        // Orthogonal rows with κ = 2 keep {a, other}: fine; a zero embedding gives a zero row sum.
        let z = Array2::from_shape_vec((2, 2), vec![0.0f32, 0.0, 0.0, 1.0]).unwrap();
        assert!(rscin(&[0.0, 1.0], z.view(), &[1]).is_err());
        let empty = Array2::<f32>::zeros((0, 2));
        assert!(rscin(&[], empty.view(), &[1]).is_err());
    }
}
