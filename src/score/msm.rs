//! MSM, the mutual scoring mechanism of MuSc (ALGORITHM.md §5): a token's score is the mean of its `k`
//! smallest distances to the other collections, `k = max(1, floor(α·(N−1)))`, averaged over views.
//!
//! Input: a [`DistTable`] per view (one row per active token, one column per collection). Output: one score
//! per active row. Traps: the own-collection column is `+inf` and never counts; entries removed by
//! CoDeGraph's refinement are `+inf` too, and `k` stays the full-batch value (ALGORITHM.md Q20): when fewer
//! than `k` finite distances remain, the mean is over those that remain.

use rayon::prelude::*;

use crate::knn::DistTable;

/// Which distance enters the mutual similarity vector (ALGORITHM.md Q1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Distance {
    /// Plain Euclidean (MuSc; the default).
    Euclidean,
    /// Squared Euclidean (the thesis's Eq. 3.9 wording).
    Squared,
}

impl Distance {
    /// Maps a stored Euclidean distance to the value used in the MSV.
    #[inline]
    pub fn apply(self, d: f32) -> f32 {
        match self {
            Distance::Euclidean => d,
            Distance::Squared => d * d,
        }
    }
}

/// `k = max(1, floor(α·(N−1)))`.
pub fn top_k(alpha: f64, n_collections: usize) -> usize {
    ((alpha * (n_collections.saturating_sub(1)) as f64).floor() as usize).max(1)
}

/// The `k` smallest finite values of `row` whose column is not in `skip`, ascending, written to `out`.
pub fn smallest_finite(row: &[f32], k: usize, skip: Option<&[bool]>, out: &mut Vec<f32>) {
    out.clear();
    out.extend(
        row.iter()
            .enumerate()
            .filter(|&(b, v)| v.is_finite() && !skip.is_some_and(|s| s[b]))
            .map(|(_, &v)| v),
    );
    if out.len() > k {
        out.select_nth_unstable_by(k - 1, f32::total_cmp);
        out.truncate(k);
    }
    out.sort_unstable_by(f32::total_cmp);
}

/// Mean of the `k` smallest finite distances of one row (0 when none is finite).
pub fn topk_mean(row: &[f32], k: usize, distance: Distance, scratch: &mut Vec<f32>) -> f32 {
    smallest_finite(row, k, None, scratch);
    if scratch.is_empty() {
        return 0.0;
    }
    let sum: f64 = scratch.iter().map(|&d| distance.apply(d) as f64).sum();
    (sum / scratch.len() as f64) as f32
}

/// MSM scores of every row of a table.
pub fn score_rows(table: &DistTable, k: usize, distance: Distance) -> Vec<f32> {
    table
        .dist
        .par_chunks(table.n_collections)
        .map_init(Vec::new, |scratch, row| {
            topk_mean(row, k, distance, scratch)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn k_follows_the_spec() {
        assert_eq!(top_k(0.1, 150), 14);
        assert_eq!(top_k(0.3, 150), 44);
        assert_eq!(top_k(0.1, 5), 1); // clamped
        assert_eq!(top_k(0.3, 21), 6);
    }

    #[test]
    fn topk_mean_skips_infinite_and_respects_k() {
        let mut s = Vec::new();
        let row = [3.0, f32::INFINITY, 1.0, 2.0, 10.0];
        assert_eq!(topk_mean(&row, 2, Distance::Euclidean, &mut s), 1.5);
        assert_eq!(topk_mean(&row, 2, Distance::Squared, &mut s), 2.5);
        assert_eq!(topk_mean(&row, 9, Distance::Euclidean, &mut s), 4.0);
        assert_eq!(
            topk_mean(&[f32::INFINITY; 3], 2, Distance::Euclidean, &mut s),
            0.0
        );
        smallest_finite(&row, 3, Some(&[false, false, true, false, false]), &mut s);
        assert_eq!(s, vec![2.0, 3.0, 10.0]);
    }
}
