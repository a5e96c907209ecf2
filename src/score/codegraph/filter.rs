//! CoDeGraph stage 3e (ALGORITHM.md §6.4, Algorithm 2): dependency ratios and targeted token filtering.
//!
//! Input: the outlier communities (densest first), the graph-view distance tables and which rows are
//! eligible (non-void). Output: the excluded positions of every case; the tables are refined in place so
//! that they always describe the *current* base (the batch minus the exclusions so far).
//!
//! For a token `x` and a set `E` of cases, `S(x; E)` is the mean of the first `k` entries of the
//! layer-averaged sorted distance vector with the columns of `E` removed (k fixed at the full-batch value,
//! Q20). The dependency ratio on community `C` is `ρ_C(x) = S(x; C) / max(S(x; ∅), ε)`. The threshold is
//! the `p_dep` percentile of the ratios of the eligible tokens *outside* `C`, and the tokens of `C`'s cases
//! above it are excluded. Void tokens are never ratios, never references, never excluded.

use rayon::prelude::*;

use super::super::msm::{smallest_finite, Distance};
use crate::knn::{DistTable, PackedView};
use crate::score::stats::percentile_linear;

/// Where each table row comes from.
#[derive(Debug, Clone)]
pub struct RowIndex {
    /// Case of each row.
    pub collection: Vec<u32>,
    /// Grid position of each row.
    pub position: Vec<u32>,
    /// Whether the row is a non-void token (may be a ratio, a reference, an exclusion).
    pub eligible: Vec<bool>,
    /// Whether the row may create graph links (non-void and away from void: [`crate::score::link_sources`]).
    pub link_source: Vec<bool>,
}

/// What Algorithm 2 did for one community.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct CommunityFilter {
    /// Case indices of the community.
    pub members: Vec<usize>,
    /// The dependency-ratio threshold `τ_C`.
    pub threshold: f64,
    /// Tokens excluded for this community.
    pub excluded: usize,
}

/// `S(x; skip)` for one row: layer-average of the sorted, filtered rows, mean of the first `k` ranks.
fn s_value(
    tables: &[DistTable],
    row: usize,
    k: usize,
    skip: Option<&[bool]>,
    distance: Distance,
    scratch: &mut [Vec<f32>],
) -> f64 {
    let n = tables[0].n_collections;
    let mut len = k;
    for (table, buf) in tables.iter().zip(scratch.iter_mut()) {
        smallest_finite(&table.dist[row * n..(row + 1) * n], k, skip, buf);
        len = len.min(buf.len());
    }
    if len == 0 {
        return 0.0;
    }
    let mut total = 0.0f64;
    for buf in scratch.iter() {
        total += buf[..len]
            .iter()
            .map(|&d| distance.apply(d) as f64)
            .sum::<f64>();
    }
    total / (len * tables.len()) as f64
}

/// Parameters of Algorithm 2.
#[derive(Debug, Clone, Copy)]
pub struct FilterParams {
    pub k: usize,
    pub percentile: f64,
    pub epsilon: f64,
    pub distance: Distance,
    /// `true`: refine mode `exact`; `false`: `invalidate`.
    pub recompute: bool,
    /// The search the tables were made with (the refinement searches the same way).
    pub search: crate::knn::Search,
}

/// The dependency ratios `ρ_C(x) = S(x; C) / max(S(x; ∅), ε)` of the table rows `rows`, in that order
/// (`in_c[b]`: case `b` is in the community). Per row: the sharded scorer ([`crate::shard`]) computes
/// the ratios of a block's rows with the same function.
pub fn dependency_ratios(
    tables: &[DistTable],
    rows: &[usize],
    in_c: &[bool],
    params: &FilterParams,
) -> Vec<f64> {
    let n_layers = tables.len();
    rows.par_iter()
        .map_init(
            || vec![Vec::new(); n_layers],
            |scratch, &r| {
                let full = s_value(tables, r, params.k, None, params.distance, scratch);
                let minus = s_value(tables, r, params.k, Some(in_c), params.distance, scratch);
                minus / full.max(params.epsilon)
            },
        )
        .collect()
}

/// Algorithm 2 over the outlier communities, densest first. `excluded[a][p]` is filled in; the tables are
/// refined to the final base.
pub fn targeted_filtering(
    tables: &mut [DistTable],
    views: &[PackedView],
    rows: &RowIndex,
    outliers: &[Vec<usize>],
    params: FilterParams,
    excluded: &mut [Vec<bool>],
) -> Vec<CommunityFilter> {
    let n = tables[0].n_collections;
    let mut report = Vec::new();
    for members in outliers {
        let mut in_c = vec![false; n];
        for &m in members {
            in_c[m] = true;
        }
        let current: Vec<usize> = (0..rows.collection.len())
            .filter(|&r| {
                rows.eligible[r]
                    && !excluded[rows.collection[r] as usize][rows.position[r] as usize]
            })
            .collect();
        let ratios = dependency_ratios(tables, &current, &in_c, &params);
        let outside: Vec<f64> = current
            .iter()
            .zip(&ratios)
            .filter(|(&r, _)| !in_c[rows.collection[r] as usize])
            .map(|(_, &q)| q)
            .collect();
        let Some(threshold) = percentile_linear(&outside, params.percentile) else {
            continue;
        };
        let mut count = 0;
        for (&r, &q) in current.iter().zip(&ratios) {
            let a = rows.collection[r] as usize;
            if in_c[a] && q > threshold {
                excluded[a][rows.position[r] as usize] = true;
                count += 1;
            }
        }
        for (table, view) in tables.iter_mut().zip(views) {
            table.refine(view, excluded, params.recompute, params.search);
        }
        report.push(CommunityFilter {
            members: members.clone(),
            threshold,
            excluded: count,
        });
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(rows: Vec<Vec<f32>>) -> DistTable {
        DistTable::from_rows(rows)
    }

    #[test]
    fn s_value_averages_sorted_layers_and_skips_columns() {
        let t1 = table(vec![vec![f32::INFINITY, 1.0, 3.0, 2.0]]);
        let t2 = table(vec![vec![f32::INFINITY, 4.0, 2.0, 6.0]]);
        let mut scratch = vec![Vec::new(); 2];
        // k = 2: layer 1 → [1, 2], layer 2 → [2, 4]; mean = 9/4.
        let s = s_value(
            &[t1.clone(), t2.clone()],
            0,
            2,
            None,
            Distance::Euclidean,
            &mut scratch,
        );
        assert!((s - 2.25).abs() < 1e-12);
        // skip column 1: layer 1 → [2, 3], layer 2 → [2, 6]; mean = 13/4.
        let skip = [false, true, false, false];
        let s = s_value(
            &[t1, t2],
            0,
            2,
            Some(&skip),
            Distance::Euclidean,
            &mut scratch,
        );
        assert!((s - 3.25).abs() < 1e-12);
    }
}
