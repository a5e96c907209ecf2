//! The shard plan (`plan.json`): the batch (every token file by path and SHA-256, its active rows), the
//! scoring settings and the number of blocks K, fixed once by `mri-ad shard plan` and read by every later
//! step. Its `run_id` (a digest of the inputs, the settings and K) is recorded in every file a step writes,
//! so files of another plan are refused.
//!
//! The blocks are contiguous ranges of cases in case-id order: block `b` (0-based here, `b + 1` on the
//! command line and in file names) holds cases `⌊b·N/K⌋ .. ⌊(b+1)·N/K⌋`. The distances of the pair of
//! blocks `{i, j}` (a *tile*) are computed once, by one job ([`Plan::tile_job`]), which writes both
//! directions; the off-diagonal tiles are spread so that every job computes about `(K + 1) / 2` of them.

use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::formats::tokens;
use crate::score::{msm, ScoreConfig};
use crate::{Error, Result};

/// File name of the plan in the work folder.
pub const PLAN: &str = "plan.json";
/// `format` of every file the sharded scorer writes.
pub const FORMAT: &str = "mri-ad-shard";
/// Version of the work-folder contract.
pub const VERSION: u32 = 1;
/// Rows per GEMM tile of the exact search in every job (the single-process scorer's tile when its
/// `--memory-budget` is not tight; see the module doc of [`crate::shard`]).
pub const TILE_ROWS: usize = 256;

/// One case of the plan.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PlanCase {
    pub case: String,
    /// The sidecar's `group` (None: none recorded).
    pub group: Option<String>,
    /// The provider the sidecar records (for the summary's count).
    pub provider: Option<String>,
    /// Absolute path of the token file.
    pub path: PathBuf,
    pub sha256: String,
    /// Active tokens (table rows): the valid ones, or every position with `keep-void`.
    pub rows: usize,
    /// The valid mask, one bit per position (position `p` is bit `p % 8` of byte `p / 8`), as hex.
    pub valid: String,
}

/// `valid` as [`PlanCase::valid`] writes it.
pub fn valid_hex(valid: &[bool]) -> String {
    valid
        .chunks(8)
        .map(|byte| {
            let v = byte
                .iter()
                .enumerate()
                .fold(0u8, |acc, (i, &b)| acc | ((b as u8) << i));
            format!("{v:02x}")
        })
        .collect()
}

impl PlanCase {
    /// The valid mask of `positions` positions.
    pub fn valid_mask(&self, positions: usize) -> Vec<bool> {
        (0..positions)
            .map(|p| {
                let byte =
                    u8::from_str_radix(&self.valid[2 * (p / 8)..2 * (p / 8) + 2], 16).unwrap_or(0);
                byte >> (p % 8) & 1 == 1
            })
            .collect()
    }
}

/// The plan of a sharded run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Plan {
    pub format: String,
    pub version: u32,
    pub run_id: String,
    /// K.
    pub blocks: usize,
    /// The token folders (absolute), in order: the batch is their cases, each folder's sorted by id.
    pub tokens: Vec<PathBuf>,
    pub settings: ScoreConfig,
    pub views: usize,
    pub positions: usize,
    pub grid: [usize; 3],
    pub dim: usize,
    pub cases: Vec<PlanCase>,
}

/// `--block i/K` parsed: block `index` (0-based) of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockArg {
    pub index: usize,
    pub count: usize,
}

impl std::str::FromStr for BlockArg {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let bad = || format!("`{s}` is not i/K with 1 ≤ i ≤ K (e.g. 2/7: the second of 7 blocks)");
        let (i, k) = s.split_once('/').ok_or_else(bad)?;
        let (i, k): (usize, usize) = (
            i.trim().parse().map_err(|_| bad())?,
            k.trim().parse().map_err(|_| bad())?,
        );
        if i == 0 || i > k {
            return Err(bad());
        }
        Ok(BlockArg {
            index: i - 1,
            count: k,
        })
    }
}

impl std::fmt::Display for BlockArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index + 1, self.count)
    }
}

impl Plan {
    /// Number of cases N.
    pub fn n(&self) -> usize {
        self.cases.len()
    }

    /// The cases of block `b`.
    pub fn block_cases(&self, b: usize) -> Range<usize> {
        let (n, k) = (self.n(), self.blocks);
        b * n / k..(b + 1) * n / k
    }

    /// The job (0-based block) that computes the tile of blocks `{i, j}`: the diagonal tile by its block;
    /// an off-diagonal one by `i` when `j` follows `i` by less than half the cycle, else by `j` (at exactly
    /// half, by the smaller).
    pub fn tile_job(&self, i: usize, j: usize) -> usize {
        let (i, j) = (i.min(j), i.max(j));
        let d = j - i;
        if d == 0 || 2 * d <= self.blocks {
            i
        } else {
            j
        }
    }

    /// The tiles `(i, j)`, `i ≤ j`, that job `b` computes.
    pub fn job_tiles(&self, b: usize) -> Vec<(usize, usize)> {
        let k = self.blocks;
        (0..k)
            .flat_map(|i| (i..k).map(move |j| (i, j)))
            .filter(|&(i, j)| self.tile_job(i, j) == b)
            .collect()
    }

    /// Table rows of case `a`.
    pub fn rows(&self, a: usize) -> usize {
        self.cases[a].rows
    }

    /// Table rows of the cases `cases`.
    pub fn rows_of(&self, cases: Range<usize>) -> usize {
        cases.map(|a| self.rows(a)).sum()
    }

    /// The MSM `k` of the batch.
    pub fn k(&self) -> usize {
        msm::top_k(self.settings.alpha(), self.n())
    }

    /// Checks `--block i/K` against the plan.
    pub fn check_block(&self, block: BlockArg) -> Result<()> {
        if block.count != self.blocks {
            return Err(Error::bad_argument(
                "--block",
                format!(
                    "{block}: the plan splits the batch into {} blocks; give i/{}",
                    self.blocks, self.blocks
                ),
            ));
        }
        Ok(())
    }

    /// Reads and checks `work/plan.json`.
    pub fn read(work: &Path) -> Result<Plan> {
        let path = work.join(PLAN);
        if !path.exists() {
            return Err(Error::bad_input(
                &path,
                "no shard plan here: run `mri-ad shard plan --tokens DIR --work WORK --blocks K` first",
            ));
        }
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let plan: Plan = serde_json::from_str(&text)
            .map_err(|e| Error::bad_input(&path, format!("not a shard plan: {e}")))?;
        if plan.format != FORMAT || plan.version != VERSION {
            return Err(Error::bad_input(
                &path,
                format!(
                    "format {} version {}, this build reads {FORMAT} version {VERSION}",
                    plan.format, plan.version
                ),
            ));
        }
        Ok(plan)
    }
}

/// What `mri-ad shard plan` needs.
#[derive(Debug, Clone)]
pub struct PlanConfig {
    /// The token folders; the batch is their cases in this order (each folder's sorted by id).
    pub tokens: Vec<PathBuf>,
    pub work: PathBuf,
    pub blocks: usize,
    pub score: ScoreConfig,
    /// Replace a plan of other inputs or settings (and every file of its steps).
    pub force: bool,
    pub report: crate::messages::Reporter,
}

/// The folders of the steps' files in a work folder.
pub const STEP_FOLDERS: [&str; 5] = ["distances", "links", "graph", "rounds", "final"];

/// `mri-ad shard plan`: reads every token file once (one at a time), checks the batch and writes
/// `plan.json`. The same plan again is kept (the steps' files stay valid); another plan needs `force`,
/// which also removes the old steps' files.
pub fn make_plan(cfg: &PlanConfig) -> Result<Plan> {
    let score = &cfg.score;
    if score.divide > 1 {
        return Err(Error::bad_argument(
            "--divide",
            "subset division scores parts of the batch on their own; the sharded scorer splits the work, \
             not the batch: drop --divide",
        ));
    }
    let mut found = Vec::new();
    for dir in &cfg.tokens {
        for (case, path) in tokens::discover(dir)? {
            if let Some((_, first)) = found.iter().find(|(c, _): &&(String, PathBuf)| *c == case) {
                return Err(Error::BadBatch {
                    path: path.clone(),
                    problem: format!(
                        "case {case} is also {}: every case once (--tokens folders must not share cases)",
                        first.display()
                    ),
                });
            }
            found.push((case, path));
        }
    }
    let paths: Vec<&Path> = found.iter().map(|(_, p)| p.as_path()).collect();
    let digests = crate::run::folder::hash_files(&paths)?;
    let mut cases = Vec::with_capacity(found.len());
    let mut first: Option<tokens::TokenFile> = None;
    for ((case, path), sha256) in found.iter().zip(digests) {
        let file = tokens::read_token_file(case, path)?;
        if let Some(reference) = &first {
            tokens::check_same_shape(reference, &file)?;
        }
        let rows = if score.keep_void {
            file.set.n_positions()
        } else {
            file.set.n_valid()
        };
        cases.push(PlanCase {
            case: case.clone(),
            group: file.group().map(str::to_string),
            provider: tokens::sidecar_provider(file.sidecar.as_ref()).map(str::to_string),
            path: crate::formats::absolute(path),
            sha256,
            rows,
            valid: valid_hex(&file.set.valid),
        });
        if first.is_none() {
            first = Some(file);
        }
    }
    let first = first.expect("discover found at least one file");
    let n = cases.len();
    if n < 3 {
        return Err(Error::BadBatch {
            path: cfg.tokens[0].clone(),
            problem: format!(
                "{n} token file(s): mutual scoring needs at least 3 cases (each is scored against the others)"
            ),
        });
    }
    crate::score::check_batch(score, n, first.set.n_views())?;
    if cfg.blocks == 0 || cfg.blocks > n {
        return Err(Error::bad_argument(
            "--blocks",
            format!("{}: give 1 to {n} (the batch has {n} cases)", cfg.blocks),
        ));
    }
    let mut plan = Plan {
        format: FORMAT.into(),
        version: VERSION,
        run_id: String::new(),
        blocks: cfg.blocks,
        tokens: cfg
            .tokens
            .iter()
            .map(|d| crate::formats::absolute(d))
            .collect(),
        settings: score.clone(),
        views: first.set.n_views(),
        positions: first.set.n_positions(),
        grid: first.set.grid,
        dim: first.set.dim(),
        cases,
    };
    plan.run_id = run_id(&plan)?;
    write_plan(cfg, &plan)?;
    Ok(plan)
}

/// The digest that names a plan: the request `score --tokens` would record for the same batch (every
/// token file by SHA-256 and the settings, without the operational ones) and K.
fn run_id(plan: &Plan) -> Result<String> {
    let request = run_request(plan)?;
    let text = serde_json::to_string(
        &json!({"request": request, "blocks": plan.blocks, "version": VERSION}),
    )
    .map_err(Error::internal)?;
    Ok(crate::formats::hash::sha256_bytes(text.as_bytes()))
}

/// The run folder request of the batch, the one `score --tokens` records (so `shard join` and
/// `score --tokens` recognise each other's run folders).
pub fn run_request(plan: &Plan) -> Result<serde_json::Value> {
    Ok(crate::run::folder::run_request(
        json!(plan
            .cases
            .iter()
            .map(|c| json!({"case": c.case, "tokens_sha256": c.sha256}))
            .collect::<Vec<_>>()),
        &crate::run::outputs::run_settings(&plan.settings, &toml::Table::new())?,
    ))
}

fn write_plan(cfg: &PlanConfig, plan: &Plan) -> Result<()> {
    let path = cfg.work.join(PLAN);
    if path.exists() {
        match Plan::read(&cfg.work) {
            Ok(old) if old.run_id == plan.run_id => {
                cfg.report.say(format!(
                    "the plan in {} is unchanged (run {}); its steps' files stay valid",
                    cfg.work.display(),
                    &plan.run_id[..12]
                ));
                return crate::formats::atomic::write_json(&path, plan);
            }
            _ if !cfg.force => {
                return Err(Error::BadOutput {
                    path: path.clone(),
                    problem: "holds the plan of other token files, settings or --blocks: give another \
                              --work folder, or --force to replace it (the files of its steps are removed)"
                        .into(),
                });
            }
            _ => {
                for step in STEP_FOLDERS {
                    let dir = cfg.work.join(step);
                    if dir.exists() {
                        crate::run::folder::remove_entry(&dir)?;
                    }
                }
            }
        }
    } else if cfg.work.exists() {
        let mut entries = std::fs::read_dir(&cfg.work).map_err(|e| Error::io(&cfg.work, e))?;
        if entries.next().is_some() {
            return Err(Error::BadOutput {
                path: cfg.work.clone(),
                problem:
                    "is not empty and holds no shard plan: give an empty or new folder as --work"
                        .into(),
            });
        }
    }
    std::fs::create_dir_all(&cfg.work).map_err(|e| Error::io(&cfg.work, e))?;
    crate::formats::atomic::write_json(&path, plan)?;
    cfg.report.say(format!(
        "planned {} cases in {} blocks (run {}): {}",
        plan.n(),
        plan.blocks,
        &plan.run_id[..12],
        path.display()
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(n: usize, k: usize) -> Plan {
        Plan {
            format: FORMAT.into(),
            version: VERSION,
            run_id: String::new(),
            blocks: k,
            tokens: Vec::new(),
            settings: ScoreConfig::default(),
            views: 1,
            positions: 1,
            grid: [1, 1, 1],
            dim: 1,
            cases: (0..n)
                .map(|a| PlanCase {
                    case: format!("c{a}"),
                    group: None,
                    provider: None,
                    path: PathBuf::new(),
                    sha256: String::new(),
                    rows: 1,
                    valid: valid_hex(&[true]),
                })
                .collect(),
        }
    }

    #[test]
    fn every_tile_has_one_job_and_the_jobs_share_them_evenly() {
        for k in 1..=9 {
            let p = plan(20, k);
            let mut seen = std::collections::BTreeSet::new();
            let mut counts = Vec::new();
            for b in 0..k {
                let tiles = p.job_tiles(b);
                counts.push(tiles.len());
                for t in tiles {
                    assert!(seen.insert(t), "tile {t:?} twice (K = {k})");
                }
            }
            assert_eq!(seen.len(), k * (k + 1) / 2, "K = {k}");
            let (lo, hi) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
            assert!(hi - lo <= 1, "K = {k}: {counts:?}");
        }
    }

    #[test]
    fn blocks_are_contiguous_and_cover_the_batch() {
        let p = plan(11, 3);
        let ranges: Vec<_> = (0..3).map(|b| p.block_cases(b)).collect();
        assert_eq!(ranges, vec![0..3, 3..7, 7..11]);
    }

    #[test]
    fn the_valid_mask_round_trips() {
        let valid: Vec<bool> = (0..19).map(|p| p % 3 != 0).collect();
        let case = PlanCase {
            valid: valid_hex(&valid),
            ..plan(1, 1).cases[0].clone()
        };
        assert_eq!(case.valid_mask(19), valid);
    }

    #[test]
    fn block_argument_is_one_based() {
        assert_eq!(
            "2/7".parse::<BlockArg>(),
            Ok(BlockArg { index: 1, count: 7 })
        );
        for bad in ["0/3", "4/3", "1", "a/b", "1/0"] {
            assert!(bad.parse::<BlockArg>().is_err(), "{bad}");
        }
    }
}
