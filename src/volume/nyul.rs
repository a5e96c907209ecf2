//! Nyúl–Udupa histogram standardisation (ALGORITHM.md §3.2 step 1, §11 row 51), TorchIO's convention.
//!
//! **Training** (on the healthy set; no labels): for each volume, the intensity percentiles
//! [`PERCENTILES`] inside its brain mask are mapped linearly so that the 1st → 0 and the 99th → 100; the
//! standard landmarks are the mean of these mapped landmarks over the volumes.
//!
//! **Applying**: a piecewise-linear map of the volume's own landmarks onto the standard ones, extrapolated
//! linearly beyond the end segments; applied to every voxel (the backbone scaling then zeroes the
//! background). Landmarks that tie with the previous one (plateaus in integer data) are skipped, so each
//! segment has a positive width; fewer than two distinct landmarks is an error.
//!
//! **Input.** `S³` cubes `[z][y][x]` with their masks. **Output.** Standardised cubes (same shape, f32).
//!
//! **Traps.** Percentiles use numpy's default ("linear") definition, computed in f64. The model is saved as
//! JSON in the run folder ([`NyulModel::save`]) and can be reused for another batch ([`NyulModel::load`]).

use std::path::Path;

use ndarray::Array3;

use crate::{Error, Result};

/// Landmark percentiles (TorchIO's defaults).
pub const PERCENTILES: [f64; 13] = [
    1.0, 10.0, 20.0, 25.0, 30.0, 40.0, 50.0, 60.0, 70.0, 75.0, 80.0, 90.0, 99.0,
];
/// The standard scale: the first landmark maps to `SCALE.0`, the last to `SCALE.1`.
pub const SCALE: (f64, f64) = (0.0, 100.0);

/// Percentile `q` (0–100) of sorted values, numpy's linear definition.
pub fn percentile_sorted(sorted: &[f64], q: f64) -> f64 {
    let n = sorted.len();
    let h = (n - 1) as f64 * q / 100.0;
    let lo = h.floor() as usize;
    let hi = (lo + 1).min(n - 1);
    let t = h - lo as f64;
    sorted[lo] + t * (sorted[hi] - sorted[lo])
}

/// The landmarks (intensities at [`PERCENTILES`]) of `cube` inside `mask`; `what` names the volume in errors.
pub fn landmarks(cube: &Array3<f32>, mask: &Array3<bool>, what: &Path) -> Result<[f64; 13]> {
    let mut v: Vec<f64> = cube
        .iter()
        .zip(mask.iter())
        .filter(|(_, &m)| m)
        .map(|(&x, _)| x as f64)
        .collect();
    if v.len() < 2 {
        return Err(Error::bad_input(
            what,
            format!(
                "the brain mask has {} voxel(s) after resizing; Nyúl standardisation needs at least 2",
                v.len()
            ),
        ));
    }
    v.sort_by(f64::total_cmp);
    let l = PERCENTILES.map(|q| percentile_sorted(&v, q));
    if l[12] <= l[0] {
        return Err(Error::bad_input(
            what,
            format!(
                "the brain intensities are constant ({}): Nyúl standardisation needs contrast (1st and 99th \
                 percentiles must differ)",
                l[0]
            ),
        ));
    }
    Ok(l)
}

/// A fitted standardisation: the standard landmarks on the [`SCALE`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NyulModel {
    /// The percentiles the landmarks sit at.
    pub percentiles: Vec<f64>,
    /// The standard landmarks (same length).
    pub standard: Vec<f64>,
    /// Number of volumes it was fitted on.
    pub fitted_on: usize,
}

impl NyulModel {
    /// Fits the standard landmarks from the landmarks of each training volume.
    pub fn fit(per_volume: &[[f64; 13]]) -> Result<Self> {
        if per_volume.is_empty() {
            return Err(Error::bad_argument(
                "--healthy",
                "Nyúl standardisation needs at least one healthy volume to learn its landmarks",
            ));
        }
        let mut standard = vec![0.0; 13];
        for l in per_volume {
            let span = l[12] - l[0];
            for (s, v) in standard.iter_mut().zip(l) {
                *s += SCALE.0 + (v - l[0]) / span * (SCALE.1 - SCALE.0);
            }
        }
        for s in &mut standard {
            *s /= per_volume.len() as f64;
        }
        Ok(NyulModel {
            percentiles: PERCENTILES.to_vec(),
            standard,
            fitted_on: per_volume.len(),
        })
    }

    /// Maps one intensity given the volume's own landmarks (see [`Self::apply`]).
    fn segments(&self, own: &[f64; 13]) -> Vec<(f64, f64)> {
        let mut pairs: Vec<(f64, f64)> = Vec::with_capacity(13);
        for (&o, &s) in own.iter().zip(&self.standard) {
            if pairs.last().is_none_or(|&(po, _)| o > po) {
                pairs.push((o, s));
            }
        }
        pairs
    }

    /// Standardises `cube` (every voxel) using its own landmarks `own` (from [`landmarks`]).
    pub fn apply(&self, cube: &Array3<f32>, own: &[f64; 13]) -> Array3<f32> {
        let pairs = self.segments(own);
        debug_assert!(pairs.len() >= 2, "landmarks() guarantees l[12] > l[0]");
        let last = pairs.len() - 2;
        cube.mapv(|v| {
            let v = v as f64;
            // The segment holding v: the last one whose start is <= v, within 0..=last.
            let seg = pairs[1..=last].iter().take_while(|&&(o, _)| o <= v).count();
            let ((o0, s0), (o1, s1)) = (pairs[seg], pairs[seg + 1]);
            (s0 + (v - o0) * (s1 - s0) / (o1 - o0)) as f32
        })
    }

    /// Saves the model as JSON (atomically).
    pub fn save(&self, path: &Path) -> Result<()> {
        crate::formats::atomic::write_json(path, self)
    }

    /// Loads a model saved by [`Self::save`], checking it is usable.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| {
            let why = match e.kind() {
                std::io::ErrorKind::NotFound => "no such file".to_string(),
                _ => format!("cannot be read: {e}"),
            };
            Error::bad_argument("--nyul", format!("{}: {why}", path.display()))
        })?;
        let m: NyulModel = serde_json::from_slice(&bytes)
            .map_err(|e| {
                Error::bad_input(
                    path,
                    format!(
                        "not a Nyúl landmarks file (--nyul takes the nyul.json of a score run or the file of \
                         extract --save-nyul): {e}"
                    ),
                )
            })?;
        if m.percentiles != PERCENTILES.to_vec()
            || m.standard.len() != 13
            || m.standard.iter().any(|v| !v.is_finite())
            || m.standard.windows(2).any(|w| w[1] < w[0])
        {
            return Err(Error::bad_input(
                path,
                "Nyúl landmarks must be 13 finite non-decreasing values at the percentiles 1, 10, 20, 25, 30, \
                 40, 50, 60, 70, 75, 80, 90, 99",
            ));
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_like_numpy() {
        let v: Vec<f64> = (0..11).map(|x| x as f64 * 2.0).collect();
        assert_eq!(percentile_sorted(&v, 0.0), 0.0);
        assert_eq!(percentile_sorted(&v, 100.0), 20.0);
        assert!((percentile_sorted(&v, 25.0) - 5.0).abs() < 1e-12);
        assert!((percentile_sorted(&v, 1.0) - 0.2).abs() < 1e-12);
    }

    #[test]
    fn fit_and_apply_maps_landmarks_onto_standard() {
        let p = Path::new("v");
        let a = Array3::from_shape_fn((4, 5, 6), |(z, y, x)| (x + 6 * y + 30 * z) as f32 + 1.0);
        let b = a.mapv(|v| 3.0 * v + 50.0);
        let m = Array3::from_elem((4, 5, 6), true);
        let (la, lb) = (landmarks(&a, &m, p).unwrap(), landmarks(&b, &m, p).unwrap());
        let model = NyulModel::fit(&[la, lb]).unwrap();
        assert_eq!(model.standard[0], 0.0);
        assert_eq!(model.standard[12], 100.0);
        // An affine rescaling of a volume is standardised to the same result.
        let (sa, sb) = (model.apply(&a, &la), model.apply(&b, &lb));
        for (x, y) in sa.iter().zip(sb.iter()) {
            assert!((x - y).abs() < 1e-3, "{x} {y}");
        }
        // Landmarks land on the standard ones; beyond the ends it extrapolates.
        let at = model.apply(&Array3::from_elem((1, 1, 1), la[6] as f32), &la);
        assert!((at[[0, 0, 0]] as f64 - model.standard[6]).abs() < 1e-3);
        let below = model.apply(&Array3::from_elem((1, 1, 1), (la[0] - 10.0) as f32), &la);
        assert!(below[[0, 0, 0]] < 0.0);
        // Constant volumes are refused.
        let c = Array3::from_elem((2, 2, 2), 5.0f32);
        let e = landmarks(&c, &Array3::from_elem((2, 2, 2), true), p).unwrap_err();
        assert!(e.to_string().contains("constant"));
        // Save and load.
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("nyul.json");
        model.save(&f).unwrap();
        // serde_json parses floats to within one ulp (no `float_roundtrip` feature).
        let loaded = NyulModel::load(&f).unwrap();
        for (x, y) in loaded.standard.iter().zip(&model.standard) {
            assert!((x - y).abs() <= 1e-12 * y.abs().max(1.0));
        }
        std::fs::write(&f, "{}").unwrap();
        assert_eq!(NyulModel::load(&f).unwrap_err().exit_code(), 2);
    }
}
