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

mod batch;
pub use batch::score_batch;
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

/// Every parameter of the scoring stage (ALGORITHM.md §11), with the spec's defaults. Field names are the
/// flag names and the `--config` TOML keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct ScoreConfig {
    pub method: Method,
    /// MSM fraction α for `musc` (§11 row 9).
    pub alpha_musc: f64,
    /// MSM fraction α inside CoDeGraph (§11 row 9).
    pub alpha_codegraph: f64,
    /// Distance in the MSV (§11 row 8, Q1).
    pub distance: Distance,
    /// Reference rank ratio: r_ref = floor(ratio·N), clamped to [2, N−1] (§11 row 19).
    pub reference_ratio: f64,
    /// Weight exponent β of the weighted endurance ratio (§11 row 21).
    pub beta: f64,
    /// Coverage target c* of the link selection (§11 row 23).
    pub coverage: f64,
    /// Links added per batch in Algorithm 1 (§11 row 24).
    pub link_batch: usize,
    /// Percentile of the edge weights used as the CPM resolution γ (§11 row 25).
    pub resolution_percentile: f64,
    /// Outlier-community rule (§11 rows 29–30).
    pub outlier_rule: OutlierRule,
    /// Which communities the Tukey quartiles are taken over: the others (leave-one-out, default) or all.
    pub tukey_fence: TukeyFence,
    /// Tukey multiplier k_T (§11 row 29; 3 here, not the spec's 5: see the module doc of
    /// `codegraph::communities`).
    pub tukey_k: f64,
    /// Floor of the Tukey IQR as a fraction of Q3 (guards the degenerate IQR = 0; 0 = plain rule).
    pub tukey_iqr_floor: f64,
    /// Number of communities flagged by the `top-densest` rule (§11 row 30).
    pub top_densest: usize,
    /// Fewer non-singleton communities than this: flag none.
    pub min_communities: usize,
    /// Dependency-ratio percentile p_dep (§11 row 32).
    pub dependency_percentile: f64,
    /// Final base (§11 row 34).
    pub refine_mode: RefineMode,
    /// Leiden restarts (best quality kept) (§11 row 27).
    pub leiden_restarts: usize,
    /// Maximum Leiden iterations per restart; stops earlier at convergence (§11 row 27).
    pub leiden_iterations: usize,
    /// Subset division s (§11 row 16): the batch is shuffled with the seed and split into s near-equal
    /// parts, each scored on its own (k, r_ref, the graph: everything is per part). 1 = off.
    pub divide: usize,
    /// Keep void tokens in the distance search as queries and as base (else they score 0).
    pub keep_void: bool,
    /// Views (layer indices into the token files) that feed the graph stage; empty = all.
    pub graph_views: Vec<usize>,
    /// Tokens fewer than this many grid steps (6-connectivity) from a void token create no graph links
    /// (they still score, serve as references and can be excluded). 0 = every non-void token links (the
    /// spec's rule). See [`link_sources`].
    pub link_margin: usize,
    /// Seed of every random choice (Leiden).
    pub seed: u64,
    /// Worker threads; 0 = one per core.
    pub threads: usize,
    /// Memory budget in MiB for distance tables and scratch.
    pub memory_budget: usize,
}

impl Default for ScoreConfig {
    fn default() -> Self {
        ScoreConfig {
            method: Method::Codegraph,
            alpha_musc: 0.3,
            alpha_codegraph: 0.1,
            distance: Distance::Euclidean,
            reference_ratio: 0.3,
            beta: 0.2,
            coverage: 0.9,
            link_batch: 100,
            resolution_percentile: 25.0,
            outlier_rule: OutlierRule::Tukey,
            tukey_fence: TukeyFence::Others,
            tukey_k: 3.0,
            tukey_iqr_floor: 0.5,
            top_densest: 3,
            min_communities: 4,
            dependency_percentile: 95.0,
            refine_mode: RefineMode::Exact,
            leiden_restarts: 256,
            leiden_iterations: 50,
            divide: 1,
            keep_void: false,
            graph_views: Vec::new(),
            link_margin: 1,
            seed: 0,
            threads: 0,
            memory_budget: 8192,
        }
    }
}

impl ScoreConfig {
    /// Checks every value's range; the error names the flag.
    pub fn validate(&self) -> Result<()> {
        let unit = |flag: &str, v: f64, lo_open: bool| -> Result<()> {
            let ok = v.is_finite() && v <= 1.0 && if lo_open { v > 0.0 } else { v >= 0.0 };
            if ok {
                Ok(())
            } else {
                Err(Error::bad_argument(
                    flag,
                    format!("{v} is outside {}0, 1]", if lo_open { "(" } else { "[" }),
                ))
            }
        };
        unit("--alpha-musc", self.alpha_musc, true)?;
        unit("--alpha-codegraph", self.alpha_codegraph, true)?;
        unit("--reference-ratio", self.reference_ratio, true)?;
        unit("--coverage", self.coverage, true)?;
        let pct = |flag: &str, v: f64| -> Result<()> {
            if (0.0..=100.0).contains(&v) {
                Ok(())
            } else {
                Err(Error::bad_argument(
                    flag,
                    format!("{v} is outside [0, 100]"),
                ))
            }
        };
        pct("--resolution-percentile", self.resolution_percentile)?;
        pct("--dependency-percentile", self.dependency_percentile)?;
        if !(self.beta.is_finite() && self.beta >= 0.0) {
            return Err(Error::bad_argument(
                "--beta",
                format!("{} must be ≥ 0", self.beta),
            ));
        }
        for (flag, v) in [
            ("--tukey-k", self.tukey_k),
            ("--tukey-iqr-floor", self.tukey_iqr_floor),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(Error::bad_argument(flag, format!("{v} must be ≥ 0")));
            }
        }
        for (flag, v) in [
            ("--link-batch", self.link_batch),
            ("--top-densest", self.top_densest),
            ("--leiden-restarts", self.leiden_restarts),
            ("--leiden-iterations", self.leiden_iterations),
            ("--divide", self.divide),
            ("--memory-budget", self.memory_budget),
        ] {
            if v == 0 {
                return Err(Error::bad_argument(flag, "must be at least 1"));
            }
        }
        Ok(())
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
