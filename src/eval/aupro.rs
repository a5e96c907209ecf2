//! AUPRO of the 2D protocol (`ALGORITHM.md` §8.2), reproducing MuSc's cflow-derived routine.
//!
//! * Input: per image an anomaly map `[H, W]` f32 (upsampled to the mask's resolution by the caller) and its
//!   ground-truth mask `[H, W]` bool; images may differ in size, a map and its mask may not.
//! * Output: the area under the PRO curve up to FPR 0.3, in `[0, 1]`, or `None` when it is undefined.
//!
//! Definition: over all map values of all images, `min`, `max`, `Δ = (max − min)/200`; the 200 thresholds
//! `t_j = min + j·Δ`, `j = 0..199` (computed in f64 exactly so). At each `t_j` a pixel is predicted
//! anomalous iff `map > t_j`. The ground-truth regions are the 8-connected components of each mask
//! ([`label_regions_8`]). `PRO_j` = mean over all regions of all images of `TP pixels in region / region
//! area`; `FPR_j` = predicted pixels outside the masks / all pixels outside the masks (all images pooled).
//! The thresholds with `FPR_j < 0.3` are kept, their FPRs are min–max rescaled to `[0, 1]` (MuSc's quirk:
//! not a division by 0.3) and PRO is integrated over the rescaled FPR with the trapezoid rule, the points
//! taken in order of decreasing threshold. FPR and PRO both fall as `t` rises, so this is the order of
//! increasing FPR with equal FPRs ordered by increasing PRO (what scikit-learn's `auc` does on MuSc's
//! arrays); the order matters only through the PRO values at the ends of a run of equal FPRs.
//!
//! `None` (never NaN): no ground-truth region in any image, no pixel outside the masks, fewer than two kept
//! thresholds, or all kept FPRs equal (e.g. a constant map, or a map that separates perfectly at every
//! threshold: there is no FPR axis to integrate over).
//!
//! Cost: each pixel is placed once among the sorted thresholds (binary search), and per-region and background
//! histograms of those positions give every `TP` and `FP` count, so `O(pixels · log 200)` rather than 200 passes.

use ndarray::{Array2, ArrayView2};

use crate::{Error, Result};

/// Number of thresholds of the AUPRO curve.
pub const AUPRO_STEPS: usize = 200;
/// FPR limit of the integrated part of the PRO curve.
pub const AUPRO_MAX_FPR: f64 = 0.3;

/// Labels the 8-connected components of `mask` (true = foreground). Returns the label image (0 =
/// background, components numbered 1..=n in the raster order of their first pixel, as `scipy.ndimage.label`
/// does) and the number of components `n`.
pub fn label_regions_8(mask: ArrayView2<bool>) -> (Array2<u32>, usize) {
    let (h, w) = mask.dim();
    let mut labels = Array2::<u32>::zeros((h, w));
    let mut n = 0u32;
    let mut stack: Vec<(usize, usize)> = Vec::new();
    for i in 0..h {
        for j in 0..w {
            if !mask[[i, j]] || labels[[i, j]] != 0 {
                continue;
            }
            n += 1;
            labels[[i, j]] = n;
            stack.push((i, j));
            while let Some((y, x)) = stack.pop() {
                for ny in y.saturating_sub(1)..(y + 2).min(h) {
                    for nx in x.saturating_sub(1)..(x + 2).min(w) {
                        if mask[[ny, nx]] && labels[[ny, nx]] == 0 {
                            labels[[ny, nx]] = n;
                            stack.push((ny, nx));
                        }
                    }
                }
            }
        }
    }
    (labels, n as usize)
}

/// AUPRO as in MuSc (see the module documentation for the exact definition and the `None` cases).
///
/// Errors (`BadArgument`, never a panic): no images, a different number of maps and masks, a map whose shape
/// differs from its mask's, a non-finite map value.
pub fn aupro(maps: &[ArrayView2<f32>], masks: &[ArrayView2<bool>]) -> Result<Option<f64>> {
    let bad = |problem: String| Error::bad_argument("AUPRO", problem);
    if maps.is_empty() {
        return Err(bad("no images".into()));
    }
    if maps.len() != masks.len() {
        return Err(bad(format!(
            "{} maps but {} masks",
            maps.len(),
            masks.len()
        )));
    }
    for (i, (m, k)) in maps.iter().zip(masks).enumerate() {
        if m.dim() != k.dim() {
            return Err(bad(format!(
                "image {i}: map is {:?} but mask is {:?}",
                m.dim(),
                k.dim()
            )));
        }
        if m.iter().any(|v| !v.is_finite()) {
            return Err(bad(format!("image {i}: the map holds a non-finite value")));
        }
    }
    let mut lo = f64::INFINITY;
    let mut hi = f64::NEG_INFINITY;
    for v in maps.iter().flat_map(|m| m.iter()) {
        lo = lo.min(*v as f64);
        hi = hi.max(*v as f64);
    }
    if !lo.is_finite() {
        return Ok(None); // no pixel at all
    }
    let delta = (hi - lo) / AUPRO_STEPS as f64;
    let thresholds: Vec<f64> = (0..AUPRO_STEPS).map(|j| lo + j as f64 * delta).collect();
    // Position of a value among the thresholds: the number of j with t_j < v, i.e. with `v > t_j`.
    let above = |v: f32| thresholds.partition_point(|&t| t < v as f64);

    // Histograms of positions: the background (FP) and one per region (TP).
    let mut background = vec![0u64; AUPRO_STEPS + 1];
    let mut regions: Vec<Vec<u64>> = Vec::new();
    for (map, mask) in maps.iter().zip(masks) {
        let (labels, n) = label_regions_8(*mask);
        let first = regions.len();
        regions.extend((0..n).map(|_| vec![0u64; AUPRO_STEPS + 1]));
        for (&v, &l) in map.iter().zip(labels.iter()) {
            let hist = if l == 0 {
                &mut background
            } else {
                &mut regions[first + l as usize - 1]
            };
            hist[above(v)] += 1;
        }
    }
    let negatives: u64 = background.iter().sum();
    if regions.is_empty() || negatives == 0 {
        return Ok(None);
    }
    // Pixels predicted at threshold j = those whose position exceeds j (suffix sums).
    let exceed = |hist: &[u64]| -> Vec<u64> {
        let mut out = vec![0u64; AUPRO_STEPS];
        let mut acc = hist[AUPRO_STEPS];
        for j in (0..AUPRO_STEPS).rev() {
            out[j] = acc;
            acc += hist[j];
        }
        out
    };
    let fp = exceed(&background);
    let mut pro = vec![0.0f64; AUPRO_STEPS];
    for hist in &regions {
        let area: u64 = hist.iter().sum();
        for (p, tp) in pro.iter_mut().zip(exceed(hist)) {
            *p += tp as f64 / area as f64;
        }
    }
    // Kept points in order of decreasing threshold (increasing FPR).
    let points: Vec<(f64, f64)> = (0..AUPRO_STEPS)
        .rev()
        .map(|j| {
            (
                fp[j] as f64 / negatives as f64,
                pro[j] / regions.len() as f64,
            )
        })
        .filter(|&(f, _)| f < AUPRO_MAX_FPR)
        .collect();
    if points.len() < 2 {
        return Ok(None);
    }
    let f_lo = points.iter().map(|p| p.0).fold(f64::INFINITY, f64::min);
    let f_hi = points.iter().map(|p| p.0).fold(f64::NEG_INFINITY, f64::max);
    if f_hi <= f_lo {
        return Ok(None);
    }
    let area = points
        .windows(2)
        .map(|w| (w[1].0 - w[0].0) / (f_hi - f_lo) * (w[0].1 + w[1].1) / 2.0)
        .sum();
    Ok(Some(area))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{array, Array2};

    #[test]
    fn regions_are_8_connected() {
        let m = array![
            [true, false, false, true],
            [false, true, false, false],
            [false, false, false, true],
            [true, true, false, true],
        ];
        let (labels, n) = label_regions_8(m.view());
        // {(0,0),(1,1)} diagonal → one region; (0,3) alone; {(2,3),(3,3)}; {(3,0),(3,1)}.
        assert_eq!(n, 4);
        assert_eq!(labels[[0, 0]], 1);
        assert_eq!(labels[[1, 1]], 1);
        assert_eq!(labels[[0, 3]], 2);
        assert_eq!(labels[[2, 3]], 3);
        assert_eq!(labels[[3, 3]], 3);
        assert_eq!(labels[[3, 0]], 4);
        assert_eq!(labels[[0, 1]], 0);
    }

    #[test]
    fn perfect_and_degenerate_maps() {
        // Background values spread over [0, 0.5], anomalies in [0.6, 1]: PRO = 1 wherever FPR > 0, so the
        // area is 1.
        let mask = Array2::from_shape_fn((20, 20), |(i, j)| {
            (3..7).contains(&i) && (4..9).contains(&j)
        });
        let map = Array2::from_shape_fn((20, 20), |(i, j)| {
            if mask[[i, j]] {
                0.6 + 0.4 * ((i * 20 + j) % 7) as f32 / 6.0
            } else {
                0.5 * ((i * 20 + j) % 13) as f32 / 12.0
            }
        });
        let a = aupro(&[map.view()], &[mask.view()]).unwrap().unwrap();
        assert!((a - 1.0).abs() < 1e-12, "{a}");
        // A map that ranks the anomalies lowest gets a small AUPRO.
        let inverted = map.mapv(|v| 1.0 - v);
        let b = aupro(&[inverted.view()], &[mask.view()]).unwrap().unwrap();
        assert!(b < 0.05, "{b}");
        // Constant map: every FPR is 0 → None. No region → None.
        let flat = Array2::from_elem((20, 20), 0.3f32);
        assert_eq!(aupro(&[flat.view()], &[mask.view()]).unwrap(), None);
        let empty = Array2::from_elem((20, 20), false);
        assert_eq!(aupro(&[map.view()], &[empty.view()]).unwrap(), None);
        // Errors.
        let small = Array2::from_elem((2, 2), false);
        assert!(aupro(&[map.view()], &[small.view()]).is_err());
        assert!(aupro(&[], &[]).is_err());
        assert!(aupro(&[map.view()], &[]).is_err());
        let mut nan = map.clone();
        nan[[0, 0]] = f32::NAN;
        assert!(aupro(&[nan.view()], &[mask.view()]).is_err());
    }
}
