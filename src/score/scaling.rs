//! The similarity-scaling diagnostic (ALGORITHM.md §10, thesis §2.2.2, Fig. 2.3): the mean log growth rate
//! `τ_i = ln(m_{i+1}/m_i)` of the sorted mutual similarity vector against the rank `i`.
//!
//! Input: the first-pass distance tables of every view (one row per active token, one column per case,
//! `+inf` in the own column), added one view at a time to a [`TauBuffer`]; then, once the exclusions are
//! known, which rows are "flagged". Output: a [`ScalingCurve`] with, per rank `i = 1..=N−2`, the sum and the
//! count of the layer-averaged `τ_i` over the normal and over the flagged tokens.
//!
//! Definitions (what `scripts/oracles/ref_scaling.py` recomputes with numpy):
//! * the MSV of a row is its finite entries, sorted ascending, with the configured distance applied
//!   (`--distance squared` doubles every τ);
//! * `τ_i` of a row in one view is `ln(m_{i+1}/m_i)`; it is undefined when `m_i = 0` or `m_{i+1}` does not
//!   exist (a case without active tokens leaves its column `+inf`);
//! * the row's value at rank `i` is the mean over the views of `τ_i`, undefined if any view's is;
//! * only non-void tokens count; *flagged* = the positions CoDeGraph excluded (the recurring anomalies it
//!   found, whose MSV shows the neighbour-burnout spike); *normal* = every other non-void token. MuSc flags
//!   nothing, so its curve has only normal tokens.
//!
//! Traps: the τ are taken from the tables *before* CoDeGraph refines them (after the refinement the
//! excluded tokens' near-duplicates are gone and the spike with them). The buffer holds `rows × (N−2)` f32
//! (half of one distance table); the scorer accounts for it in its memory estimate.

use rayon::prelude::*;
use serde_json::{json, Value};

use super::msm::Distance;
use crate::knn::DistTable;

/// Per-row sums over the views of `τ_i` (NaN once undefined in any view).
#[derive(Debug, Clone)]
pub struct TauBuffer {
    /// Ranks per row, `N − 2` (0 when `N < 3`).
    width: usize,
    sum: Vec<f32>,
    views: usize,
}

impl TauBuffer {
    /// A buffer for `rows` table rows of a batch of `n` cases.
    pub fn new(rows: usize, n: usize) -> Self {
        let width = n.saturating_sub(2);
        TauBuffer {
            width,
            sum: vec![0.0; rows * width],
            views: 0,
        }
    }

    /// Bytes the buffer holds.
    pub fn bytes(rows: usize, n: usize) -> usize {
        rows * n.saturating_sub(2) * 4
    }

    /// Adds one view's τ of every row.
    pub fn add_table(&mut self, table: &DistTable, distance: Distance) {
        let n = table.n_collections;
        let width = self.width;
        if width == 0 {
            self.views += 1;
            return;
        }
        assert_eq!(table.n_rows() * width, self.sum.len(), "one row per token");
        self.sum
            .par_chunks_mut(width)
            .zip(table.dist.par_chunks(n))
            .for_each_init(Vec::new, |msv: &mut Vec<u32>, (acc, row)| {
                row_tau(row, distance, msv, acc);
            });
        self.views += 1;
    }

    /// The curve: rows for which `eligible` is false are skipped, `flagged` splits the rest. The rows are
    /// those of consecutive cases (`case_rows[c]` rows for case `c`): each case's curve is summed on its
    /// own and the cases' curves are added in case order, so a block of whole cases gives the same
    /// per-case curves ([`TauBuffer::case_curve`]) and the sharded scorer the same sums.
    pub fn finish(
        self,
        case_rows: &[usize],
        eligible: impl Fn(usize) -> bool,
        flagged: impl Fn(usize) -> bool,
        rule: &str,
    ) -> ScalingCurve {
        let mut curve = ScalingCurve::empty(self.width, self.views, rule);
        let mut start = 0;
        for &rows in case_rows {
            curve.merge(&self.case_curve(start..start + rows, &eligible, &flagged, rule));
            start += rows;
        }
        curve
    }

    /// The curve of the rows `rows` (one case's).
    pub fn case_curve(
        &self,
        rows: std::ops::Range<usize>,
        eligible: &impl Fn(usize) -> bool,
        flagged: &impl Fn(usize) -> bool,
        rule: &str,
    ) -> ScalingCurve {
        let w = self.width;
        let mut curve = ScalingCurve::empty(w, self.views, rule);
        if w == 0 || self.views == 0 {
            return curve;
        }
        for r in rows {
            if !eligible(r) {
                continue;
            }
            let row = &self.sum[r * w..(r + 1) * w];
            let (sum, count) = if flagged(r) {
                (&mut curve.sum_flagged, &mut curve.count_flagged)
            } else {
                (&mut curve.sum_normal, &mut curve.count_normal)
            };
            for (i, &v) in row.iter().enumerate() {
                if v.is_finite() {
                    sum[i] += v as f64 / self.views as f64;
                    count[i] += 1;
                }
            }
        }
        curve
    }
}

/// Adds `τ_i` of one table row (`+inf` = no entry) to `acc`; undefined ranks make `acc` NaN. In f32,
/// the precision of the stored distances (it runs over every token of every view: f64 logarithms made it
/// a stage as long as a bank query's distances).
fn row_tau(row: &[f32], distance: Distance, msv: &mut Vec<u32>, acc: &mut [f32]) {
    // Distances are ≥ 0, whose IEEE bits sort as unsigned integers in the same order (and faster).
    msv.clear();
    msv.extend(
        row.iter()
            .filter(|v| v.is_finite())
            .map(|&d| distance.apply(d).to_bits()),
    );
    msv.sort_unstable();
    for (i, a) in acc.iter_mut().enumerate() {
        let tau = match (msv.get(i), msv.get(i + 1)) {
            (Some(&lo), Some(&hi)) if lo != 0 => (f32::from_bits(hi) / f32::from_bits(lo)).ln(),
            _ => f32::NAN,
        };
        *a += tau;
    }
}

/// Mean growth rate per rank for normal and flagged tokens (index `i − 1` holds rank `i`).
#[derive(Debug, Clone, PartialEq)]
pub struct ScalingCurve {
    pub sum_normal: Vec<f64>,
    pub count_normal: Vec<u64>,
    pub sum_flagged: Vec<f64>,
    pub count_flagged: Vec<u64>,
    /// Views averaged per token.
    pub views: usize,
    /// Which tokens are "flagged" (`codegraph-excluded`, or `none` for MuSc).
    pub flagged_rule: String,
}

/// Least-squares summary of the normal curve in log–log space.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScalingFit {
    /// `α̂` of `E[τ_i] = 1/(α i)`: the slope fixed at −1, `ln α̂ = −mean(ln τ̄_i + ln i)`.
    pub alpha: f64,
    /// Free ordinary-least-squares slope of `ln τ̄_i` on `ln i`.
    pub slope: f64,
    /// Its coefficient of determination (NaN-free; 1 when the points lie on the line).
    pub r2: f64,
    /// Ranks used.
    pub points: usize,
}

impl ScalingCurve {
    /// A curve of `width` ranks with nothing added.
    pub fn empty(width: usize, views: usize, rule: &str) -> Self {
        ScalingCurve {
            sum_normal: vec![0.0; width],
            count_normal: vec![0; width],
            sum_flagged: vec![0.0; width],
            count_flagged: vec![0; width],
            views,
            flagged_rule: rule.to_string(),
        }
    }

    /// Number of ranks (`N − 2`).
    pub fn len(&self) -> usize {
        self.sum_normal.len()
    }

    /// True when there is no rank (a batch of fewer than 3 cases).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn means(sum: &[f64], count: &[u64]) -> Vec<Option<f64>> {
        sum.iter()
            .zip(count)
            .map(|(&s, &c)| (c > 0).then(|| s / c as f64))
            .collect()
    }

    /// Mean τ_i of the normal tokens (None where no token has rank i).
    pub fn mean_normal(&self) -> Vec<Option<f64>> {
        Self::means(&self.sum_normal, &self.count_normal)
    }

    /// Mean τ_i of the flagged tokens.
    pub fn mean_flagged(&self) -> Vec<Option<f64>> {
        Self::means(&self.sum_flagged, &self.count_flagged)
    }

    /// Adds another part's curve (subset division: parts may differ by one rank).
    pub fn merge(&mut self, other: &ScalingCurve) {
        let w = self.len().max(other.len());
        for v in [&mut self.sum_normal, &mut self.sum_flagged] {
            v.resize(w, 0.0);
        }
        for v in [&mut self.count_normal, &mut self.count_flagged] {
            v.resize(w, 0);
        }
        for i in 0..other.len() {
            self.sum_normal[i] += other.sum_normal[i];
            self.count_normal[i] += other.count_normal[i];
            self.sum_flagged[i] += other.sum_flagged[i];
            self.count_flagged[i] += other.count_flagged[i];
        }
    }

    /// Ranks used by [`ScalingCurve::fit`]: the first half, `1..=max(2, ⌈(N−2)/2⌉)`. The power law
    /// describes the small distances (thesis §4.2, "a scale threshold within the power-law region"); the
    /// last ranks of a small batch reach the most dissimilar cases and bend upwards.
    pub fn fit_ranks(&self) -> usize {
        self.len().div_ceil(2).max(2).min(self.len())
    }

    /// The log–log fit of the normal curve over [`ScalingCurve::fit_ranks`] (None with fewer than 2 usable
    /// ranks).
    pub fn fit(&self) -> Option<ScalingFit> {
        let pts: Vec<(f64, f64)> = self
            .mean_normal()
            .iter()
            .take(self.fit_ranks())
            .enumerate()
            .filter_map(|(i, m)| {
                m.filter(|&v| v > 0.0)
                    .map(|v| (((i + 1) as f64).ln(), v.ln()))
            })
            .collect();
        if pts.len() < 2 {
            return None;
        }
        let n = pts.len() as f64;
        let (mx, my) = (
            pts.iter().map(|p| p.0).sum::<f64>() / n,
            pts.iter().map(|p| p.1).sum::<f64>() / n,
        );
        let sxx: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
        let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
        let syy: f64 = pts.iter().map(|p| (p.1 - my).powi(2)).sum();
        let slope = sxy / sxx;
        let r2 = if syy > 0.0 {
            (sxy * sxy / (sxx * syy)).min(1.0)
        } else {
            1.0
        };
        Some(ScalingFit {
            alpha: (-(mx + my)).exp(),
            slope,
            r2,
            points: pts.len(),
        })
    }

    /// The `similarity_scaling` entry of summary.json.
    pub fn to_json(&self) -> Value {
        let fit = self.fit();
        json!({
            "definition": "tau_i = ln(m_{i+1}/m_i) of the sorted MSV (first-pass tables), averaged over the views per token, then over the tokens; ranks i = 1..N-2",
            "views": self.views,
            "flagged": self.flagged_rule,
            "ranks": (1..=self.len()).collect::<Vec<_>>(),
            "mean_tau_normal": self.mean_normal(),
            "count_normal": self.count_normal,
            "mean_tau_flagged": self.mean_flagged(),
            "count_flagged": self.count_flagged,
            "fit_normal": fit.map(|f| json!({"alpha": f.alpha, "slope": f.slope, "r2": f.r2, "ranks_used": f.points, "fit_range": [1, self.fit_ranks()]})),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(rows: Vec<Vec<f32>>) -> DistTable {
        DistTable::from_rows(rows)
    }

    #[test]
    fn tau_is_the_log_ratio_of_sorted_finite_distances_averaged_over_views() {
        let inf = f32::INFINITY;
        // 5 cases → 3 ranks. Row 0: MSV 1, 2, 4, 8 → τ = ln 2 at every rank.
        // Row 1: a zero distance → rank 1 undefined; rank 2 = ln 1.5, rank 3 = ln 2.
        // Row 2: only 2 finite entries → rank 1 = ln 3, ranks 2 and 3 undefined.
        let t0 = table(vec![
            vec![inf, 4.0, 1.0, 8.0, 2.0],
            vec![0.0, inf, 2.0, 3.0, 6.0],
            vec![1.0, 3.0, inf, inf, inf],
        ]);
        let mut buf = TauBuffer::new(3, 5);
        buf.add_table(&t0, Distance::Euclidean);
        // Second view: row 0 MSV 1, 3, 9, 27 → ln 3; the row's mean is (ln 2 + ln 3)/2.
        let t1 = table(vec![
            vec![inf, 1.0, 3.0, 9.0, 27.0],
            vec![1.0, inf, 1.0, 1.0, 1.0],
            vec![1.0, 1.0, inf, 1.0, 1.0],
        ]);
        buf.add_table(&t1, Distance::Euclidean);
        let curve = buf.finish(&[3], |_| true, |r| r == 1, "test");
        let l = (2f64.ln() + 3f64.ln()) / 2.0;
        let mn = curve.mean_normal();
        assert!(
            (mn[0].unwrap() - (l + 3f64.ln() / 2.0) / 2.0).abs() < 1e-6,
            "{mn:?}"
        );
        assert!((mn[1].unwrap() - l).abs() < 1e-6);
        assert_eq!(curve.count_normal, vec![2, 1, 1]);
        let mf = curve.mean_flagged();
        assert_eq!(mf[0], None);
        assert!((mf[1].unwrap() - 1.5f64.ln() / 2.0).abs() < 1e-6);
        assert!((mf[2].unwrap() - 2f64.ln() / 2.0).abs() < 1e-6);
        // Squared distances double every τ.
        let mut sq = TauBuffer::new(3, 5);
        sq.add_table(&t0, Distance::Squared);
        let s = sq.finish(&[3], |r| r == 0, |_| false, "test");
        assert!((s.mean_normal()[0].unwrap() - 2.0 * 2f64.ln()).abs() < 1e-6);
        assert_eq!(s.count_normal, vec![1, 1, 1]);
    }

    #[test]
    fn fit_recovers_a_power_law_and_merge_adds_counts() {
        let alpha = 2.5;
        let w = 30;
        let mut c = ScalingCurve::empty(w, 1, "none");
        for i in 0..w {
            c.sum_normal[i] = 10.0 / (alpha * (i + 1) as f64);
            c.count_normal[i] = 10;
        }
        // A bent tail (the last half) does not move the fit.
        c.sum_normal[w - 1] = 1e3;
        let f = c.fit().unwrap();
        assert_eq!((f.points, c.fit_ranks()), (15, 15));
        assert!((f.alpha - alpha).abs() < 1e-9, "{f:?}");
        assert!((f.slope + 1.0).abs() < 1e-9);
        assert!((f.r2 - 1.0).abs() < 1e-9);
        let mut d = ScalingCurve::empty(w - 1, 1, "none");
        d.sum_flagged[0] = 1.0;
        d.count_flagged[0] = 2;
        c.merge(&d);
        assert_eq!(c.len(), w);
        assert_eq!(c.mean_flagged()[0], Some(0.5));
        assert_eq!(ScalingCurve::empty(0, 1, "none").fit(), None);
        let v = c.to_json();
        assert_eq!(v["ranks"].as_array().unwrap().len(), w);
        assert!(v["mean_tau_flagged"][1].is_null());
    }
}
