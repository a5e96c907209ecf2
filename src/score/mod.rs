//! The batch scorer: MuSc mutual scoring ([`msm`]) and CoDeGraph ([`codegraph`]) over token sets.
//!
//! Input: `N ≥ 3` [`crate::TokenSet`]s of identical shape `[L, M, D]` (views, positions, dimension). Tokens are
//! used exactly as given (no normalisation here). Output: a score per position of every case (void
//! positions score 0 unless `keep_void`), and for CoDeGraph the graph report and the excluded positions.
//!
//! Memory: the distance tables of the graph views are kept (`|views| × rows × N × 8` bytes, rows = active
//! tokens of the batch) because Algorithm 2 needs the distances to *every* other case (removing a
//! community of `c` cases needs ranks up to `k + c`, which can exceed `r_ref`). The GEMM scratch is sized
//! from what remains of `memory_budget`. An estimate above the budget is refused before any work.
//!
//! The similarity-scaling curve ([`scaling`]) is taken from the first-pass tables at no extra distance
//! work; its per-token buffer (`rows × (N−2) × 4` bytes) is counted in the estimate.
//!
//! Search: `--search exact` compares every active token of the other cases; `--search window --radius R`
//! only those within `R` grid steps ([`crate::knn::Search`]), for registered volumes; every stage after the
//! tables (MSM, the graph, the refinement) is the same. With [`score_batch_with`] the tables of a healthy
//! bank ([`crate::bank`]) fill the pairs among its cases, and only the other pairs are computed.

pub(crate) mod batch;
pub use batch::{score_batch, score_batch_with};
pub mod codegraph;
pub mod msm;
pub mod scaling;
pub mod stats;

use serde::{Deserialize, Serialize};

use self::codegraph::communities::{OutlierRule, TukeyFence};
use self::codegraph::GraphReport;
use self::msm::Distance;
use self::scaling::ScalingCurve;
use crate::{Error, Result};

/// Scoring method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// CoDeGraph: graph-based removal of recurring anomalies, then MSM with `alpha-codegraph`.
    Codegraph,
    /// Plain MuSc MSM with `alpha-musc`.
    Musc,
}

/// Refine mode of the final scoring (ALGORITHM.md §6.5, Q22).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RefineMode {
    /// Recompute the nearest token among the remaining ones.
    Exact,
    /// Drop the distances whose nearest token was excluded.
    Invalidate,
}

/// How the nearest token of another case is searched (ALGORITHM.md §5; `--search`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SearchKind {
    /// Every active token of the other case.
    Exact,
    /// Only the tokens within `--radius` grid steps (Chebyshev) of the query's position.
    Window,
}

crate::settings::choice_setting!(Method, ["codegraph", "musc"]);
crate::settings::choice_setting!(SearchKind, ["exact", "window"]);
crate::settings::choice_setting!(RefineMode, ["exact", "invalidate"]);
crate::settings::choice_setting!(Distance, ["euclidean", "squared"]);
crate::settings::choice_setting!(OutlierRule, ["tukey", "top-densest"]);
crate::settings::choice_setting!(TukeyFence, ["others", "all"]);

use crate::settings::checks::{at_least_one, fraction, non_negative, percent};

crate::settings::declare_settings! {
    /// Every parameter of the scoring stage (ALGORITHM.md §11), with the spec's defaults: the flags of
    /// `score` and `score2d` and the keys of their `--config` files (see [`crate::settings`]).
    pub struct ScoreConfig {
        /// Scoring method: codegraph = graph-based removal of recurring anomalies, then MSM with
        /// --alpha-codegraph; musc = plain MuSc MSM with --alpha-musc.
        method: Method = Method::Codegraph;
        /// MSM fraction α of plain MuSc: k = max(1, floor(α·(N−1))) (§11 row 9).
        alpha_musc: f64 = 0.3, check = fraction;
        /// MSM fraction α inside CoDeGraph (§11 row 9).
        alpha_codegraph: f64 = 0.1, check = fraction;
        /// Distance in the mutual similarity vectors (§11 row 8, Q1).
        distance: Distance = Distance::Euclidean;
        /// Nearest-token search: exact = every active token of every other case; window = only the
        /// tokens of other cases within --radius grid steps (Chebyshev, in every axis) of the token's own
        /// position, for volumes registered to one atlas (at 224³ a step is 14 voxels); on volumes, token
        /// files and a bank; score2d refuses it.
        search: SearchKind = SearchKind::Exact;
        /// Window half-width in token-grid steps for --search window (1 = a 3³ window, 2 = 5³); refused
        /// on the command line with --search exact.
        radius: usize = 2, check = at_least_one;
        /// Reference rank ratio ρ: r_ref = floor(ρ·N), clamped to [2, N−1] (§11 row 19).
        reference_ratio: f64 = 0.3, check = fraction;
        /// Exponent β of the weighted endurance ratio ζ·m̄^(−β) (§11 row 21).
        beta: f64 = 0.2, check = non_negative;
        /// Coverage target c*: links are added until this fraction of cases has a neighbour (§11 row 23).
        coverage: f64 = 0.9, check = fraction;
        /// Links added per batch in the coverage-based selection, 1 = exact minimal prefix (§11 row 24).
        link_batch: usize = 100, check = at_least_one;
        /// Percentile of the edge weights used as the CPM resolution γ (§11 row 25).
        resolution_percentile: f64 = 25.0, check = percent;
        /// Rule that flags outlier communities (§11 rows 29–30).
        outlier_rule: OutlierRule = OutlierRule::Tukey;
        /// Which densities the Tukey quartiles of a community come from: others = the other
        /// non-singleton communities (leave-one-out, so a very dense community cannot raise its own
        /// fence: with 4 communities and the spec's rule, k_T ≥ 3 can never flag one); all = every
        /// non-singleton community, the tested one included (ALGORITHM.md §6.4 as written).
        tukey_fence: TukeyFence = TukeyFence::Others;
        /// Tukey multiplier k_T: outlier if density > Q3 + k_T·IQR. 3 is Tukey's "far out" fence, which
        /// the thesis reports as equivalent and more sensitive than its large k_T; ALGORITHM.md says 5
        /// (see the module doc of score::codegraph::communities).
        tukey_k: f64 = 3.0, check = non_negative;
        /// Floor of the Tukey IQR as a fraction of Q3, guarding the degenerate IQR = 0 of graphs made
        /// mostly of equal pairs; 0 = the plain rule.
        tukey_iqr_floor: f64 = 0.5, check = non_negative;
        /// Communities flagged by --outlier-rule top-densest (§11 row 30).
        top_densest: usize = 3, check = at_least_one;
        /// With fewer non-singleton communities than this, no community is flagged.
        min_communities: usize = 4;
        /// Percentile p_dep of the outside-community dependency ratios used as threshold (§11 row 32).
        dependency_percentile: f64 = 95.0, check = percent;
        /// Final base: exact recomputation of the nearest remaining token, or invalidation of the
        /// distances to excluded tokens (§11 row 34, Q22).
        refine_mode: RefineMode = RefineMode::Exact;
        /// Leiden restarts with derived seeds; the best CPM quality is kept (§11 row 27).
        leiden_restarts: usize = 256, check = at_least_one;
        /// Maximum Leiden iterations per restart; stops earlier at convergence (§11 row 27).
        leiden_iterations: usize = 50, check = at_least_one;
        /// Subset division s (§11 row 16): shuffle the batch with --seed, split it into this many
        /// near-equal parts and score each part on its own (k, r_ref, the graph: all per part; faster,
        /// each case sees fewer references). 1 = off.
        divide: usize = 1, check = at_least_one;
        /// Keep void tokens (valid = false) in the search as queries and base; by default they are left
        /// out (score 0), which is about 4× cheaper on brain volumes. They never create graph links.
        keep_void: bool = false;
        /// Views that feed the graph stage, comma-separated 0-based view indices; empty = all. For
        /// `score`, positions in the token files' layer axis (one view per --layers block, in order:
        /// 0,1,2 for blocks 6,9,12); for `score2d`, view = block index · (number of LNAMD degrees) +
        /// degree index, and empty = the r = 1 views (0,3,6,9).
        graph_views: Vec<usize> = Vec::new();
        /// Tokens closer than this many grid steps (6-connectivity) to a void token create no graph
        /// links (surface tokens of the brain match by their outline, which mimics a recurring anomaly);
        /// they still score, serve as references and can be excluded. 0 = every non-void token links,
        /// as in the spec.
        link_margin: usize = 1;
        /// Seed of every random choice (Leiden, subset division; on volumes also the projection).
        seed: u64 = 0;
        /// Worker threads, 0 = one per core: for scoring; for the backbone, ONNX Runtime's intra-op
        /// threads (0 = one per physical core); and, on volumes, how many volumes the crop box, Nyúl and
        /// maps stages work on at once (within --memory-budget; the resampling inside each volume still
        /// uses every core).
        threads: usize = 0;
        /// Memory budget in MiB for distance tables and GEMM scratch; on volumes it also caps how many
        /// volumes the crop box, Nyúl and maps stages hold at once (about 0.5 GiB each at 224³).
        memory_budget: usize = 8192, value_name = "MIB", check = at_least_one;
    }
}

impl ScoreConfig {
    /// The search of the distance tables.
    pub fn knn_search(&self) -> crate::knn::Search {
        match self.search {
            SearchKind::Exact => crate::knn::Search::Exact,
            SearchKind::Window => crate::knn::Search::Window {
                radius: self.radius,
            },
        }
    }

    /// The MSM fraction of the chosen method.
    pub fn alpha(&self) -> f64 {
        match self.method {
            Method::Codegraph => self.alpha_codegraph,
            Method::Musc => self.alpha_musc,
        }
    }
}

/// Wall time of one stage.
#[derive(Debug, Clone, Serialize)]
pub struct Timing {
    pub stage: String,
    pub seconds: f64,
}

/// What [`score_batch`] returns.
#[derive(Debug, Clone)]
pub struct ScoreResult {
    /// `token_scores[a][p]`, `[N][M]`.
    pub token_scores: Vec<Vec<f32>>,
    /// `excluded[a]`: sorted excluded positions of case `a` (empty for MuSc).
    pub excluded: Vec<Vec<u32>>,
    /// The graph stage's report (CoDeGraph only); with subset division, the parts' reports merged into
    /// batch indices (resolution, fence and reference rank are then per part, see `subsets`).
    pub graph: Option<GraphReport>,
    /// The parts of the batch (one part without subset division).
    pub subsets: Vec<Subset>,
    pub timings: Vec<Timing>,
    /// The MSM k used (0 with subset division: each part has its own, see `subsets`).
    pub k: usize,
    /// Tokens taking part in the search (all cases).
    pub active_tokens: usize,
    /// Total positions (all cases).
    pub total_tokens: usize,
    /// Peak estimate of the tables + scratch, bytes.
    pub memory_estimate: usize,
    /// Distance-kernel work: token pairs compared (2·D flops each).
    pub pairs_compared: f64,
    /// Seconds in the distance kernel alone.
    pub kernel_seconds: f64,
    /// Mean similarity growth rate per rank, normal vs CoDeGraph-excluded tokens ([`scaling`]).
    pub scaling: ScalingCurve,
}

/// Distance tables already computed among some of a batch's cases (a healthy bank's): their pairs are
/// read instead of computed ([`score_batch_with`]).
pub struct KnownTables<'a> {
    /// Batch indices of the cases the tables cover, ascending (collection `i` of a stored table is batch
    /// case `members[i]`, so every stored pair keeps its orientation).
    pub members: Vec<usize>,
    /// Where the tables come from (named in errors).
    pub source: std::path::PathBuf,
    /// The stored table of view `v`, over the members only.
    pub load: &'a (dyn Fn(usize) -> Result<crate::knn::DistTable> + Sync),
    /// Each member's active tokens `[L, R, D]` (the rows packed from instead of its token set's, which
    /// may hold nothing: see [`crate::bank`]).
    pub packed: &'a [ndarray::Array3<f32>],
}

impl KnownTables<'_> {
    /// The pairs `(a, b)`, `a < b`, of a batch of `n` cases that the stored tables do not hold.
    pub fn missing_pairs(&self, n: usize) -> Vec<(usize, usize)> {
        let mut member = vec![false; n];
        self.members.iter().for_each(|&m| member[m] = true);
        (0..n)
            .flat_map(|a| (a + 1..n).map(move |b| (a, b)))
            .filter(|&(a, b)| !(member[a] && member[b]))
            .collect()
    }
}

/// One part of a batch scored on its own (subset division).
#[derive(Debug, Clone)]
pub struct Subset {
    /// Batch indices of the part's cases, ascending.
    pub cases: Vec<usize>,
    /// The MSM k of the part.
    pub k: usize,
    /// The part's graph report, in the part's own indices.
    pub graph: Option<GraphReport>,
}

/// Splits `n` cases into `parts` near-equal parts after a seeded shuffle (label-free, ALGORITHM.md §5.5).
pub fn divide_batch(n: usize, parts: usize, seed: u64) -> Vec<Vec<usize>> {
    use rand::seq::SliceRandom;
    use rand::SeedableRng;
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(
        seed ^ 0x5EED_D1D1,
    ));
    let mut out: Vec<Vec<usize>> = (0..parts)
        .map(|i| {
            let (lo, hi) = (i * n / parts, (i + 1) * n / parts);
            order[lo..hi].to_vec()
        })
        .collect();
    out.iter_mut().for_each(|p| p.sort_unstable());
    out
}

/// Checks that every `--graph-views` index names one of the `n_views` views of the token sets.
pub fn check_graph_views(config: &ScoreConfig, n_views: usize) -> Result<()> {
    match config.graph_views.iter().find(|&&g| g >= n_views) {
        Some(g) => Err(Error::bad_argument(
            "--graph-views",
            format!(
                "view {g} does not exist: the token files have {n_views} views (0..{})",
                n_views.saturating_sub(1)
            ),
        )),
        None => Ok(()),
    }
}

/// The window search compares grid positions across cases, so it needs every case on the same grid.
pub fn check_window_grid<'a>(
    sets: impl IntoIterator<Item = &'a crate::TokenSet>,
    search: SearchKind,
) -> Result<()> {
    if search != SearchKind::Window {
        return Ok(());
    }
    let mut sets = sets.into_iter();
    let Some(first) = sets.next() else {
        return Ok(());
    };
    match sets.find(|s| s.grid != first.grid) {
        Some(other) => Err(Error::bad_argument(
            "--search",
            format!(
                "window needs every case on one token grid: {} has {:?}, {} has {:?}",
                first.name, first.grid, other.name, other.grid
            ),
        )),
        None => Ok(()),
    }
}

/// Checks `config` against a batch of `n` cases with `n_views` views each: everything [`score_batch`] would
/// refuse before its first distance, so that callers can refuse it before they write or compute anything.
pub fn check_batch(config: &ScoreConfig, n: usize, n_views: usize) -> Result<()> {
    config.validate()?;
    if n < 3 {
        return Err(Error::BadBatch {
            path: "batch".into(),
            problem: format!(
                "{n} case(s): mutual scoring needs at least 3 (each case is scored against the others)"
            ),
        });
    }
    if n > u32::MAX as usize / 2 {
        return Err(Error::BadBatch {
            path: "batch".into(),
            problem: format!("{n} cases is more than this build supports"),
        });
    }
    check_graph_views(config, n_views)?;
    if config.divide > 1 {
        let parts = divide_batch(n, config.divide, config.seed);
        if let Some(small) = parts.iter().map(Vec::len).min().filter(|&m| m < 3) {
            return Err(Error::bad_argument(
                "--divide",
                format!(
                    "{} parts of {n} cases leave {small} case(s) in a part; every part needs at least 3",
                    config.divide
                ),
            ));
        }
    }
    Ok(())
}

/// The positions that may create CoDeGraph links: the valid (non-void) positions at least `margin` grid
/// steps (6-connectivity: ±1 along one axis) away from every void position, i.e. the valid mask eroded
/// `margin` times. Positions outside the grid do not count as void, so a grid without void positions (a 2D
/// image) keeps every position.
///
/// Why (a deviation from ALGORITHM.md §6.2, where every non-void token links; `--link-margin 0` restores
/// it): a token on the brain's surface holds a piece of the brain's outline, and two volumes whose outline
/// cuts that token the same way match closely while the others do not. That looks exactly like neighbour
/// burnout. On the 224³ demo cohort the 600 smallest endurance keys came mostly from such surface tokens
/// (their mean brain fraction 0.56 against 0.83 overall), and the graph linked healthy volumes instead of
/// the four that share a lesion; with the surface tokens left out of link creation, 465 of those 600 keys
/// came from the four.
pub fn link_sources(valid: &[bool], grid: [usize; 3], margin: usize) -> Vec<bool> {
    let [gz, gy, gx] = grid;
    let mut cur = valid.to_vec();
    for _ in 0..margin {
        let prev = cur.clone();
        for z in 0..gz {
            for y in 0..gy {
                for x in 0..gx {
                    let p = (z * gy + y) * gx + x;
                    if !prev[p] {
                        continue;
                    }
                    let void_near = (z > 0 && !prev[p - gy * gx])
                        || (z + 1 < gz && !prev[p + gy * gx])
                        || (y > 0 && !prev[p - gx])
                        || (y + 1 < gy && !prev[p + gx])
                        || (x > 0 && !prev[p - 1])
                        || (x + 1 < gx && !prev[p + 1]);
                    if void_near {
                        cur[p] = false;
                    }
                }
            }
        }
    }
    cur
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_sources_erode_the_valid_mask_by_the_margin() {
        // 1 × 5 × 5 grid, void left column: margin 1 drops column 1, margin 2 also column 2.
        let valid: Vec<bool> = (0..25).map(|p| p % 5 != 0).collect();
        let one = link_sources(&valid, [1, 5, 5], 1);
        let two = link_sources(&valid, [1, 5, 5], 2);
        for p in 0..25 {
            let x = p % 5;
            assert_eq!(one[p], x >= 2, "margin 1, position {p}");
            assert_eq!(two[p], x >= 3, "margin 2, position {p}");
        }
        assert_eq!(link_sources(&valid, [1, 5, 5], 0), valid);
        // no void at all: the grid's own border is not void
        assert!(link_sources(&[true; 27], [3, 3, 3], 1).iter().all(|&v| v));
        // 3D: the single void corner removes its three face neighbours, not the diagonal ones
        let mut v = vec![true; 27];
        v[0] = false;
        let e = link_sources(&v, [3, 3, 3], 1);
        assert!(!e[1] && !e[3] && !e[9] && e[4] && e[13]);
    }

    #[test]
    fn divide_batch_is_a_seeded_near_equal_partition() {
        let parts = divide_batch(11, 3, 7);
        let sizes: Vec<usize> = parts.iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![3, 4, 4]);
        let mut all: Vec<usize> = parts.concat();
        all.sort_unstable();
        assert_eq!(all, (0..11).collect::<Vec<_>>());
        assert_eq!(parts, divide_batch(11, 3, 7));
        assert_ne!(parts, divide_batch(11, 3, 8));
        assert!(parts.iter().all(|p| p.windows(2).all(|w| w[0] < w[1])));
    }
}
