//! Pixel-level AUROC, AP and F1-max pooled over every pixel of a class (ALGORITHM.md §8.2).
//!
//! Input: per image an anomaly map and its ground-truth mask of the same size. Output: the three metrics
//! with scikit-learn's conventions ([`super::auroc`], [`super::average_precision`], [`super::f1_max`]).
//!
//! Memory: up to [`EXACT_LIMIT`] pixels the metrics are exact (every (score, label) pair kept and sorted,
//! 5 bytes a pixel plus an 8-byte index during the sort). Above it, the scores are binned into a 2²⁰-bin
//! histogram per class over `[lo, hi]` (the range of the maps, known from the token scores), and the
//! metrics are computed over the bin edges: AUROC then differs from the exact value by at most the
//! fraction of (positive, negative) pairs that share a bin, and AP / F1-max are those of scores rounded
//! down to their bin (about 1e-6 of the range). [`PixelMetrics::method`] says which was used.

use super::{auroc, auroc_from_groups, average_precision, f1_max, f1_max_from_groups};

/// Largest number of pixels for which the metrics are exact (2²⁶ ≈ 67 M, about 0.9 GB while sorting).
pub const EXACT_LIMIT: usize = 1 << 26;
/// Histogram bins above [`EXACT_LIMIT`].
pub const BINS: usize = 1 << 20;

/// Pixel-level metrics of one class.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PixelMetrics {
    pub auroc: Option<f64>,
    pub ap: Option<f64>,
    pub f1_max: Option<f64>,
    /// The F1-max threshold (`map ≥ t`).
    pub f1_threshold: Option<f64>,
    pub pixels: usize,
    pub positive_pixels: usize,
    /// `exact` or `histogram (2^20 bins)`.
    pub method: String,
}

/// Collects maps and masks, then computes [`PixelMetrics`].
#[derive(Debug)]
pub struct PixelAccumulator {
    lo: f64,
    width: f64,
    scores: Vec<f32>,
    labels: Vec<bool>,
    hist: Option<(Vec<u64>, Vec<u64>)>,
    pixels: usize,
    positives: usize,
}

impl PixelAccumulator {
    /// An accumulator for maps with values in `[lo, hi]` and `total` pixels in all (decides exact or
    /// histogram up front).
    pub fn new(lo: f64, hi: f64, total: usize) -> Self {
        Self::with_limit(lo, hi, total, EXACT_LIMIT)
    }

    /// Like [`PixelAccumulator::new`] with another exactness limit (tests).
    pub fn with_limit(lo: f64, hi: f64, total: usize, limit: usize) -> Self {
        let span = if hi > lo { hi - lo } else { 1.0 };
        PixelAccumulator {
            lo,
            width: span / BINS as f64,
            scores: Vec::with_capacity(if total <= limit { total } else { 0 }),
            labels: Vec::with_capacity(if total <= limit { total } else { 0 }),
            hist: (total > limit).then(|| (vec![0; BINS], vec![0; BINS])),
            pixels: 0,
            positives: 0,
        }
    }

    /// Adds one image's map values and mask labels (same order and length).
    pub fn add(&mut self, map: impl Iterator<Item = f32>, mask: impl Iterator<Item = bool>) {
        for (s, l) in map.zip(mask) {
            self.pixels += 1;
            self.positives += l as usize;
            match &mut self.hist {
                Some((pos, neg)) => {
                    let b = (((s as f64 - self.lo) / self.width).floor().max(0.0) as usize)
                        .min(BINS - 1);
                    if l {
                        pos[b] += 1;
                    } else {
                        neg[b] += 1;
                    }
                }
                None => {
                    self.scores.push(s);
                    self.labels.push(l);
                }
            }
        }
    }

    /// The metrics.
    pub fn finish(self) -> PixelMetrics {
        match self.hist {
            None => {
                let f1 = f1_max(&self.scores, &self.labels);
                PixelMetrics {
                    auroc: auroc(&self.scores, &self.labels),
                    ap: average_precision(&self.scores, &self.labels),
                    f1_max: f1.map(|b| b.0),
                    f1_threshold: f1.map(|b| b.1),
                    pixels: self.pixels,
                    positive_pixels: self.positives,
                    method: "exact".into(),
                }
            }
            Some((pos, neg)) => {
                let groups: Vec<(f64, u64, u64)> = (0..BINS)
                    .rev()
                    .filter(|&b| pos[b] + neg[b] > 0)
                    .map(|b| (self.lo + b as f64 * self.width, pos[b], neg[b]))
                    .collect();
                let f1 = f1_max_from_groups(&groups);
                PixelMetrics {
                    auroc: auroc_from_groups(&groups),
                    ap: ap_from_groups(&groups),
                    f1_max: f1.map(|b| b.0),
                    f1_threshold: f1.map(|b| b.1),
                    pixels: self.pixels,
                    positive_pixels: self.positives,
                    method: format!("histogram (2^{} bins)", BINS.trailing_zeros()),
                }
            }
        }
    }
}

/// Average precision from descending `(score, positives, negatives)` groups (scikit-learn's definition).
fn ap_from_groups(groups: &[(f64, u64, u64)]) -> Option<f64> {
    let pos: u64 = groups.iter().map(|g| g.1).sum();
    if pos == 0 {
        return None;
    }
    let (mut tp, mut fp, mut ap, mut last) = (0u64, 0u64, 0.0, 0.0);
    for &(_, p, n) in groups {
        tp += p;
        fp += n;
        let recall = tp as f64 / pos as f64;
        ap += (recall - last) * tp as f64 / (tp + fp) as f64;
        last = recall;
    }
    Some(ap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_agrees_with_exact() {
        let (scores, labels) = crate::eval::testdata::labelled_scores(3, 50_000, 0.05, 2.0, 0.8);
        let run = |limit| {
            let mut a = PixelAccumulator::with_limit(0.0, 2.8, scores.len(), limit);
            a.add(
                scores[..20_000].iter().copied(),
                labels[..20_000].iter().copied(),
            );
            a.add(
                scores[20_000..].iter().copied(),
                labels[20_000..].iter().copied(),
            );
            a.finish()
        };
        let (exact, hist) = (run(usize::MAX), run(10));
        assert_eq!(exact.method, "exact");
        assert!(hist.method.starts_with("histogram"));
        assert_eq!(exact.pixels, 50_000);
        assert_eq!(exact.positive_pixels, hist.positive_pixels);
        for (a, b) in [
            (exact.auroc, hist.auroc),
            (exact.ap, hist.ap),
            (exact.f1_max, hist.f1_max),
        ] {
            let (a, b) = (a.unwrap(), b.unwrap());
            assert!((a - b).abs() < 1e-4, "{a} vs {b}");
        }
        assert_eq!(exact.ap, average_precision(&scores, &labels));
    }
}
