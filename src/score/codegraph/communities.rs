//! CoDeGraph stage 3a–3d (ALGORITHM.md §6.4): the CPM resolution, Leiden communities, their densities and
//! the outlier rule.
//!
//! Input: the case graph from Algorithm 1. Output: the communities, each with its density and whether it
//! is an outlier. Traps: singletons have no density and are never outliers (one case cannot be a
//! *recurring* anomaly); with fewer than `min_communities` non-singleton communities the quartiles mean
//! nothing and no community is flagged.
//!
//! Two deviations from ALGORITHM.md §6.4 3d, both measured in docs/experiments/2026-11-30-demo-cohort.md and docs/score2d.md:
//! * the fence of a community comes from the quartiles of the *other* communities (`--tukey-fence
//!   others`), because with the spec's rule a community raises its own fence (with exactly 4 communities
//!   and k_T ≥ 3 nothing can be flagged at all);
//! * k_T = 3 by default, not 5. The thesis uses a large k_T but says that lower values "such as 1.5 or 3
//!   can be used in practice for broader sensitivity" and that they gave nearly identical results
//!   (T:315, T:432). On the sparse graphs of small batches (30–40 cases, 100–300 links) k_T = 5 missed a
//!   recurring group that was the densest community by far in 1 of 4 projection draws of the 3D demo and
//!   in 6 of 10 draws of the 2D recurring-defect set; k_T = 3 flagged 4 of 4 and 8 of 10, and flagged no
//!   normal community that 5 did not, on every graph measured (held-out draws included). This was chosen
//!   after seeing 5 fail, so it is a judgment, not a fit: `--tukey-k 5` restores the spec.

use serde::{Deserialize, Serialize};

use super::leiden::{CommunityDetector, Graph};
use crate::score::stats::percentile_linear;

/// `γ` = the given percentile (linear interpolation) of the positive edge weights; `None` without edges.
pub fn resolution(graph: &Graph, percentile: f64) -> Option<f64> {
    let weights: Vec<f64> = graph.edges().iter().map(|e| e.2).collect();
    percentile_linear(&weights, percentile)
}

/// One community of the case graph.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Community {
    /// Case indices, ascending.
    pub members: Vec<usize>,
    /// Total weight of the edges inside.
    pub internal_weight: f64,
    /// `W_c / C(n_c, 2)` for `n_c ≥ 2`, `None` for singletons.
    pub density: Option<f64>,
    /// The Tukey fence this community's density was compared with (`None`: not tested).
    pub fence: Option<f64>,
    pub outlier: bool,
}

/// Groups a membership vector into communities with their densities (ordered by smallest member).
pub fn communities(graph: &Graph, membership: &[usize]) -> Vec<Community> {
    let n_comm = membership.iter().max().map_or(0, |&m| m + 1);
    let mut members = vec![Vec::new(); n_comm];
    for (u, &c) in membership.iter().enumerate() {
        members[c].push(u);
    }
    let mut out: Vec<Community> = members
        .into_iter()
        .filter(|m| !m.is_empty())
        .map(|members| {
            let mut w = 0.0;
            for (i, &u) in members.iter().enumerate() {
                for &v in &members[i + 1..] {
                    w += graph.weight(u, v);
                }
            }
            let n = members.len() as f64;
            let density = (members.len() >= 2).then(|| w / (n * (n - 1.0) / 2.0));
            Community {
                members,
                internal_weight: w,
                density,
                fence: None,
                outlier: false,
            }
        })
        .collect();
    out.sort_by_key(|c| c.members[0]);
    out
}

/// How outlier communities are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OutlierRule {
    /// `D(c) > Q3 + k_T · IQR` over the non-singleton densities (the default, k_T = `tukey-k`).
    Tukey,
    /// The `top-densest` densest non-singleton communities (the thesis's ablation).
    TopDensest,
}

/// Which densities the Tukey quartiles of a community are taken over.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TukeyFence {
    /// The other non-singleton communities (leave-one-out; the default, a deviation from §6.4 3d).
    Others,
    /// All non-singleton communities, the tested one included (ALGORITHM.md §6.4 3d as written).
    All,
}

/// Parameters of the outlier rule.
#[derive(Debug, Clone, Copy)]
pub struct OutlierParams {
    pub rule: OutlierRule,
    pub tukey_fence: TukeyFence,
    pub tukey_k: f64,
    /// The IQR is floored at `tukey_iqr_floor · Q3` (0 = the plain rule).
    pub tukey_iqr_floor: f64,
    pub top_densest: usize,
    pub min_communities: usize,
}

/// Flags the outlier communities in place and returns the density fence (Tukey), if any: with
/// [`TukeyFence::Others`] the one the densest community was compared with.
///
/// The spec's Tukey rule (`D > Q3 + k_T·IQR`) degenerates when most communities have the same density
/// (typically pairs joined by one link per layer): then IQR = 0 and *any* community denser than the
/// upper quartile is flagged, e.g. a pair that happened to get one more link. The IQR is therefore floored
/// at `tukey_iqr_floor · Q3` (default 0.5: an outlier must be at least `1 + 0.5·k_T` times as dense as the
/// upper quartile); `tukey_iqr_floor = 0` restores the plain rule.
///
/// With few communities the spec's quartiles include the candidate itself, and it raises its own fence:
/// with exactly 4 non-singleton communities (the least `min_communities` allows), Q3 lies a quarter of the
/// way from the third density to the largest, and for `k_T ≥ 3` no density, however large, can exceed
/// `Q3 + k_T·IQR` (seen on the demo cohort: a community of the 8 recurring cases at density 66.7 against
/// 3.7, 2 and 2, fence 106.5). [`TukeyFence::Others`] (the default) therefore compares each community with
/// the quartiles of the *other* communities; with many communities the two rules barely differ.
pub fn flag_outliers(comms: &mut [Community], params: &OutlierParams) -> Option<f64> {
    let dens: Vec<(usize, f64)> = comms
        .iter()
        .enumerate()
        .filter_map(|(i, c)| c.density.map(|d| (i, d)))
        .collect();
    if dens.len() < params.min_communities.max(1) {
        return None;
    }
    match params.rule {
        OutlierRule::Tukey => {
            let fence_of = |values: &[f64]| -> Option<f64> {
                let q1 = percentile_linear(values, 25.0)?;
                let q3 = percentile_linear(values, 75.0)?;
                let iqr = (q3 - q1).max(params.tukey_iqr_floor * q3);
                Some(q3 + params.tukey_k * iqr)
            };
            let all: Vec<f64> = dens.iter().map(|d| d.1).collect();
            for (pos, &(i, d)) in dens.iter().enumerate() {
                let fence = match params.tukey_fence {
                    TukeyFence::All => fence_of(&all)?,
                    TukeyFence::Others => {
                        let others: Vec<f64> = dens
                            .iter()
                            .enumerate()
                            .filter(|(q, _)| *q != pos)
                            .map(|(_, x)| x.1)
                            .collect();
                        fence_of(&others)?
                    }
                };
                comms[i].fence = Some(fence);
                comms[i].outlier = d > fence;
            }
            let densest = dens
                .iter()
                .max_by(|x, y| x.1.total_cmp(&y.1).then(y.0.cmp(&x.0)))
                .map(|x| x.0)?;
            comms[densest].fence
        }
        OutlierRule::TopDensest => {
            let mut sorted = dens.clone();
            sorted.sort_by(|x, y| y.1.total_cmp(&x.1).then(x.0.cmp(&y.0)));
            for &(i, _) in sorted.iter().take(params.top_densest) {
                comms[i].outlier = true;
            }
            None
        }
    }
}

/// Runs community detection and returns the communities with their densities.
pub fn detect(graph: &Graph, detector: &dyn CommunityDetector, resolution: f64) -> Vec<Community> {
    let membership = detector.detect(graph, resolution);
    communities(graph, &membership)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn density_and_tukey() {
        // Communities: {0,1,2} dense (weights 10), {3,4}, {5,6}, {7,8}, {9,10} light, {11} singleton.
        let mut edges = vec![(0, 1, 10.0), (1, 2, 10.0), (0, 2, 10.0)];
        edges.extend([(3, 4, 1.0), (5, 6, 2.0), (7, 8, 1.0), (9, 10, 2.0)]);
        let g = Graph::from_edges(12, &edges);
        let membership = [0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5];
        let mut comms = communities(&g, &membership);
        assert_eq!(comms[0].density, Some(10.0));
        assert_eq!(comms[5].density, None);
        let params = OutlierParams {
            rule: OutlierRule::Tukey,
            tukey_fence: TukeyFence::All,
            tukey_k: 1.5,
            tukey_iqr_floor: 0.0,
            top_densest: 3,
            min_communities: 4,
        };
        let fence = flag_outliers(&mut comms, &params).unwrap();
        // densities [10, 1, 2, 1, 2]: Q1 = 1, Q3 = 2, fence = 3.5
        assert!((fence - 3.5).abs() < 1e-12);
        let flagged: Vec<bool> = comms.iter().map(|c| c.outlier).collect();
        assert_eq!(flagged, vec![true, false, false, false, false, false]);
        let few = OutlierParams {
            min_communities: 6,
            ..params
        };
        let mut comms2 = communities(&g, &membership);
        assert_eq!(flag_outliers(&mut comms2, &few), None);
        assert!(comms2.iter().all(|c| !c.outlier));
        // Floored IQR: densities [10, 1, 2, 1, 2] with floor 0.5 → IQR = max(1, 1) → same fence; with
        // floor 2 → IQR = 4, fence = 2 + 1.5·4 = 8 (10 still flagged); floor 3 → fence 11 (nothing).
        for (floor, fence_want, flagged_want) in [(2.0, 8.0, true), (3.0, 11.0, false)] {
            let p = OutlierParams {
                tukey_iqr_floor: floor,
                ..params
            };
            let mut c3 = communities(&g, &membership);
            assert!((flag_outliers(&mut c3, &p).unwrap() - fence_want).abs() < 1e-12);
            assert_eq!(c3[0].outlier, flagged_want);
        }
        // weights sorted [1, 1, 2, 2, 10, 10, 10]: position 1.5 → 1.5
        assert_eq!(resolution(&g, 25.0), Some(1.5));
    }

    #[test]
    fn with_four_communities_only_the_leave_one_out_fence_can_flag() {
        // Densities [66, 4, 2, 2] (the demo's pattern): over all four, Q3 = 4 + 0.25·62 = 19.5 and Q1 = 2,
        // so with k_T = 5 the fence is 19.5 + 5·17.5 = 107: nothing is flagged, as for any density when
        // k_T ≥ 3. Against the others [4, 2, 2]: Q1 = 2, Q3 = 3, IQR = max(1, 1.5) = 1.5, fence 10.5.
        let edges = [(0, 1, 66.0), (2, 3, 4.0), (4, 5, 2.0), (6, 7, 2.0)];
        let g = Graph::from_edges(8, &edges);
        let membership = [0, 0, 1, 1, 2, 2, 3, 3];
        let mut params = OutlierParams {
            rule: OutlierRule::Tukey,
            tukey_fence: TukeyFence::All,
            tukey_k: 5.0,
            tukey_iqr_floor: 0.5,
            top_densest: 3,
            min_communities: 4,
        };
        let mut all = communities(&g, &membership);
        assert!((flag_outliers(&mut all, &params).unwrap() - 107.0).abs() < 1e-9);
        assert!(all.iter().all(|c| !c.outlier));
        params.tukey_fence = TukeyFence::Others;
        let mut others = communities(&g, &membership);
        assert!((flag_outliers(&mut others, &params).unwrap() - 10.5).abs() < 1e-9);
        let flagged: Vec<bool> = others.iter().map(|c| c.outlier).collect();
        assert_eq!(flagged, [true, false, false, false]);
        // The light ones are tested against fences that include the dense one, and stay unflagged.
        assert!(others[1].fence.unwrap() > 4.0);
    }
}
