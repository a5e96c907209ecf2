//! CoDeGraph (ALGORITHM.md §6): find the cases that share a recurring anomaly and remove exactly those
//! tokens from the reference set before the final mutual scoring.
//!
//! Stages, each in its own module: [`links`] (endurance ratios, Algorithm 1) → case graph → [`leiden`]
//! (Leiden-CPM) → [`communities`] (resolution, densities, outlier rule) → [`filter`] (Algorithm 2).
//! Input: the distance tables of the graph views (refined in place). Output: the excluded positions and a
//! [`GraphReport`] that becomes `graph.json`.

pub mod communities;
pub mod filter;
pub mod leiden;
pub mod links;

use serde::Serialize;

use self::communities::{Community, OutlierParams};
use self::filter::{CommunityFilter, FilterParams, RowIndex};
use self::leiden::{CommunityDetector, Graph};
use super::msm::Distance;
use crate::knn::{DistTable, PackedView};

/// Parameters of the graph stages.
#[derive(Debug, Clone, Copy)]
pub struct GraphParams {
    pub r_ref: usize,
    pub beta: f64,
    pub epsilon: f64,
    pub coverage: f64,
    pub link_batch: usize,
    pub resolution_percentile: f64,
    pub outliers: OutlierParams,
    pub filter: FilterParams,
    pub distance: Distance,
}

/// Everything the graph stage decided, for `graph.json`.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct GraphReport {
    /// Reference rank r_ref.
    pub r_ref: usize,
    /// CPM resolution γ (None when the graph has no edge).
    pub resolution: Option<f64>,
    pub links_selected: usize,
    pub link_candidates: usize,
    pub coverage: f64,
    /// `(i, j, weight)` with `i < j`, indices into the cases.
    pub edges: Vec<(usize, usize, f64)>,
    pub communities: Vec<Community>,
    /// Tukey fence on the densities, when the rule applied.
    pub density_fence: Option<f64>,
    /// Algorithm 2, per outlier community in processing order.
    pub filtering: Vec<CommunityFilter>,
}

/// Seconds spent in each graph stage.
#[derive(Debug, Clone, Default)]
pub struct GraphTimings {
    pub links: f64,
    pub communities: f64,
    pub filtering: f64,
}

/// Runs the graph stages; fills `excluded` and refines `tables` to the final base.
pub fn run(
    tables: &mut [DistTable],
    views: &[PackedView],
    rows: &RowIndex,
    params: &GraphParams,
    detector: &dyn CommunityDetector,
    excluded: &mut [Vec<bool>],
) -> (GraphReport, GraphTimings) {
    let n = tables[0].n_collections;
    let mut timings = GraphTimings::default();
    let t = std::time::Instant::now();
    let msv = links::graph_msv(tables, &rows.link_source, params.r_ref, params.distance);
    let mut cands = links::candidate_keys(&msv, params.beta, params.epsilon);
    let selection = links::select_links(
        &mut cands,
        &msv,
        &rows.collection,
        n,
        params.coverage,
        params.link_batch,
    );
    drop(cands);
    drop(msv);
    let edges = selected_edges(&selection);
    timings.links = t.elapsed().as_secs_f64();

    let t = std::time::Instant::now();
    let (resolution, mut comms, fence) = find_communities(n, &edges, params, detector);
    timings.communities = t.elapsed().as_secs_f64();

    let t = std::time::Instant::now();
    let outlier_members = outlier_order(&comms);
    let filtering = filter::targeted_filtering(
        tables,
        views,
        rows,
        &outlier_members,
        params.filter,
        excluded,
    );
    timings.filtering = t.elapsed().as_secs_f64();
    comms.iter_mut().for_each(|c| c.members.sort_unstable());
    (
        GraphReport {
            r_ref: params.r_ref,
            resolution,
            links_selected: selection.n_selected,
            link_candidates: selection.n_candidates,
            coverage: selection.coverage,
            edges,
            communities: comms,
            density_fence: fence,
            filtering,
        },
        timings,
    )
}

/// The edges `(i, j, weight)`, `i < j`, of the selected links' weight matrix.
pub fn selected_edges(selection: &links::LinkSelection) -> Vec<(usize, usize, f64)> {
    let n = selection.n_collections;
    let mut edges = Vec::new();
    for i in 0..n {
        for j in i + 1..n {
            let w = selection.weights[i * n + j];
            if w > 0 {
                edges.push((i, j, w as f64));
            }
        }
    }
    edges
}

/// Stages 3a–3d on the case graph of `n` cases: the CPM resolution (None without an edge, then every case
/// is its own community), the communities and the outlier rule's fence.
pub fn find_communities(
    n: usize,
    edges: &[(usize, usize, f64)],
    params: &GraphParams,
    detector: &dyn CommunityDetector,
) -> (Option<f64>, Vec<Community>, Option<f64>) {
    let graph = Graph::from_edges(n, edges);
    let resolution = communities::resolution(&graph, params.resolution_percentile);
    let (comms, fence) = match resolution {
        Some(gamma) => {
            let mut comms = communities::detect(&graph, detector, gamma);
            let fence = communities::flag_outliers(&mut comms, &params.outliers);
            (comms, fence)
        }
        None => (
            (0..n)
                .map(|u| Community {
                    members: vec![u],
                    internal_weight: 0.0,
                    density: None,
                    fence: None,
                    outlier: false,
                })
                .collect(),
            None,
        ),
    };
    (resolution, comms, fence)
}

/// The members of the outlier communities in the order Algorithm 2 processes them: densest first, ties by
/// smallest member.
pub fn outlier_order(comms: &[Community]) -> Vec<Vec<usize>> {
    let mut outliers: Vec<&Community> = comms.iter().filter(|c| c.outlier).collect();
    outliers.sort_by(|x, y| {
        y.density
            .unwrap_or(0.0)
            .total_cmp(&x.density.unwrap_or(0.0))
            .then(x.members[0].cmp(&y.members[0]))
    });
    outliers.iter().map(|c| c.members.clone()).collect()
}
