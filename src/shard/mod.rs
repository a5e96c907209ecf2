//! Sharded scoring: one batch of token files scored in blocks of cases by separate jobs (`mri-ad shard
//! <step>`), each holding a few of its own cases' rows at a time, with the same outputs as one
//! `mri-ad score --tokens` over the whole batch, bit for bit.
//!
//! The steps, in order (K blocks; `workflow/Snakefile` runs them):
//!
//! | step | runs | reads | writes |
//! |---|---|---|---|
//! | `plan --tokens DIR --blocks K` | once | every token file (SHA-256, valid mask) | `plan.json` |
//! | `distances --block b/K` | per job | token files of the job's tiles | `distances/r<i>c<j>.v<v>.{dist,arg}.npy`, `distances/job<b>.json` |
//! | `links --block b/K` (CoDeGraph) | per block | the block's distance rows | `links/block<b>.*.npy`, `.json` |
//! | `graph` (CoDeGraph) | once | every block's link candidates | `graph/graph.json` |
//! | `ratios --block b/K --round t` (CoDeGraph, t = 1..R) | per block and round | distance rows, rounds < t | `rounds/<t>/block<b>.*.npy`, `.json` |
//! | `finish --block b/K` | per block | distance rows, every round | `final/block<b>.*.npy`, `.json` |
//! | `join --out RUN` | once | the plan, graph, rounds, finals | the run folder of `score --tokens` |
//!
//! What passes between them (the contract, see README "Sharded scoring"): the tile `r<i>c<j>` of view `v`
//! holds, for every active token of block `i` (its cases in order, positions ascending), the distance to the
//! nearest active token of each case of block `j` (f32, `+inf` for the token's own case) and that token's
//! grid position (u32, `u32::MAX` for none): the rows of the single-process distance table restricted to
//! those cases. Link candidates are `(key f64, case, position, rank, neighbour per graph view)`, each block's
//! `--link-candidates` smallest in Algorithm 1's order. A round's ratios are the dependency ratios of the
//! block's current eligible tokens: those outside the round's community as one f64 array (the threshold is
//! their percentile over every block), those inside with their case and position. The final files hold the
//! block's token scores `[cases, M]` and its cases' similarity-scaling sums. Every step lists its files in a
//! JSON record with their sizes and SHA-256 and the plan's `run_id`; readers refuse anything else ([`store`]).
//!
//! Why the outputs are the same: every per-token stage (MSM, the scaling τ, the MSV and link keys,
//! dependency ratios, the refinement of entries whose nearest token was excluded) is a function of the
//! token's own table row, and each pair of cases is computed by the same kernel in the same orientation
//! (lower case index as the query side) as in one process. The global steps see the same values in the
//! same order: the candidates sort by (key, case, position, rank), which is the single process's (key, row,
//! rank); percentiles sort their input; per-case scaling sums are added in case order.
//!
//! Traps:
//! * The exact search's GEMM tiles are [`plan::TILE_ROWS`] rows in every job. The single-process scorer
//!   uses the same unless `--memory-budget` is so tight that its tiles shrink; a different tile shape may
//!   pick another of two near-equidistant tokens (the stored distance is recomputed exactly either way).
//! * Algorithm 2 is sequential over the outlier communities: round `t` needs every block's ratios of the
//!   rounds before it, so the rounds are separate jobs, and each replays the earlier rounds' refinements
//!   on its rows (cheap next to the distances).
//! * A block keeps only its smallest link candidates; `graph` stops (exit 2) if the selection needs more.

pub mod join;
pub mod plan;
pub mod steps;
pub mod store;

pub use join::{graph, join, JoinConfig};
pub use plan::{make_plan, BlockArg, Plan, PlanConfig};
pub use steps::{distances, finish, links, ratios, StepConfig};
