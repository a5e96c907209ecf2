//! Small statistics helpers with numpy's conventions (so the Python reference checks agree).

/// Percentile with linear interpolation between order statistics (numpy's default `method="linear"`).
/// `q` in [0, 100]. Returns `None` for an empty input.
pub fn percentile_linear(values: &[f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_unstable_by(f64::total_cmp);
    let pos = (q / 100.0).clamp(0.0, 1.0) * (v.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let frac = pos - lo as f64;
    Some(v[lo] + (v[hi] - v[lo]) * frac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_numpy_linear() {
        // numpy.percentile([1, 2, 3, 4], 25) == 1.75; ([1, 5, 2, 8, 7], 95) == 7.8
        assert_eq!(percentile_linear(&[4.0, 1.0, 3.0, 2.0], 25.0), Some(1.75));
        assert!((percentile_linear(&[1.0, 5.0, 2.0, 8.0, 7.0], 95.0).unwrap() - 7.8).abs() < 1e-12);
        assert_eq!(percentile_linear(&[3.0], 50.0), Some(3.0));
        assert_eq!(percentile_linear(&[], 50.0), None);
    }
}
