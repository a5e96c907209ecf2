//! The per-block steps: `distances` (the tiles of one job), then, over a block's own rows, `links`
//! (CoDeGraph's link candidates), `ratios` (one round of Algorithm 2) and `finish` (the final scores and
//! the similarity-scaling sums). Each step reads its block's rows a few cases at a time ([`BlockTables`]),
//! so it holds `cases × rows per case × N × 8 B` per view whatever the batch size, and runs the same
//! functions as the single-process scorer on them (per-row stages, so the values are the same).

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::json;

use super::plan::{BlockArg, Plan, TILE_ROWS};
use super::store::{self, read_record, FileEntry, NpyRows, StepRecord};
use crate::formats::tokens;
use crate::knn::{DistTable, KnnPlan, PackedView, NO_TOKEN};
use crate::progress::Progress;
use crate::score::codegraph::filter::dependency_ratios;
use crate::score::codegraph::links;
use crate::score::scaling::TauBuffer;
use crate::score::{batch, link_sources, msm, Method, RefineMode};
use crate::{Error, Result};

/// Bytes of table rows a step holds at once (per chunk of cases, every view it reads).
const CHUNK_BYTES: usize = 256 << 20;

/// What every step is told: the work folder, its block, threads and whether to draw progress.
#[derive(Debug, Clone)]
pub struct StepConfig {
    pub work: PathBuf,
    pub block: Option<BlockArg>,
    /// Worker threads, 0 = the plan's `threads` setting (0 there = one per core).
    pub threads: usize,
    pub progress: bool,
    pub report: crate::messages::Reporter,
}

impl StepConfig {
    /// The plan, the block checked against it (0-based) and a thread pool.
    pub(super) fn open(&self) -> Result<(Plan, Option<usize>, rayon::ThreadPool)> {
        let plan = Plan::read(&self.work)?;
        if let Some(block) = self.block {
            plan.check_block(block)?;
        }
        let threads = if self.threads > 0 {
            self.threads
        } else {
            plan.settings.threads
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .map_err(|e| Error::internal(format!("cannot start the worker threads: {e}")))?;
        Ok((plan, self.block.map(|b| b.index), pool))
    }
}

/// The record file of a step: `distances/job<b>.json`, `links/block<b>.json`, `rounds/<t>/block<b>.json`,
/// `final/block<b>.json` (1-based `b`).
pub(super) fn record_path(step: &str, block: usize, round: Option<usize>) -> String {
    match (step, round) {
        ("distances", _) => format!("distances/job{}.json", block + 1),
        ("ratios", Some(t)) => format!("rounds/{t}/block{}.json", block + 1),
        ("finish", _) => format!("final/block{}.json", block + 1),
        _ => format!("{step}/block{}.json", block + 1),
    }
}

/// The command that makes a step's record.
pub(super) fn remedy(
    plan: &Plan,
    work: &Path,
    step: &str,
    block: Option<usize>,
    round: Option<usize>,
) -> String {
    let mut cmd = format!("mri-ad shard {step} --work {}", work.display());
    if let Some(b) = block {
        cmd += &format!(" --block {}/{}", b + 1, plan.blocks);
    }
    if let Some(t) = round {
        cmd += &format!(" --round {t}");
    }
    cmd
}

/// One case's active tokens, packed per view (`rows[v]`: `[n_rows × D]`), and their positions.
pub(super) struct CasePack {
    positions: Vec<u32>,
    rows: Vec<Vec<f32>>,
}

/// The active positions of case `a` (its valid ones, or all with keep-void), ascending.
pub(super) fn active_positions(plan: &Plan, a: usize) -> Vec<u32> {
    if plan.settings.keep_void {
        return (0..plan.positions as u32).collect();
    }
    let valid = plan.cases[a].valid_mask(plan.positions);
    (0..plan.positions as u32)
        .filter(|&p| valid[p as usize])
        .collect()
}

/// Reads case `a`'s token file (checked against the plan's SHA-256 first) and packs its active tokens.
fn load_pack(plan: &Plan, a: usize) -> Result<CasePack> {
    let case = &plan.cases[a];
    let digest = crate::formats::hash::sha256_file(&case.path)?;
    if digest != case.sha256 {
        return Err(Error::bad_input(
            &case.path,
            "changed since `mri-ad shard plan` read it (its SHA-256 differs): plan again with --force",
        ));
    }
    let file = tokens::read_token_file(&case.case, &case.path)?;
    let positions = active_positions(plan, a);
    if positions.len() != case.rows
        || file.set.tokens.dim() != (plan.views, plan.positions, plan.dim)
    {
        return Err(Error::bad_input(
            &case.path,
            "its tokens are not the ones the plan recorded: plan again with --force",
        ));
    }
    let rows = (0..plan.views)
        .map(|v| {
            let layer = file.set.tokens.index_axis(ndarray::Axis(0), v);
            let mut out = Vec::with_capacity(positions.len() * plan.dim);
            for &p in &positions {
                out.extend(layer.row(p as usize).iter().copied());
            }
            out
        })
        .collect();
    Ok(CasePack { positions, rows })
}

/// The packs of `cases`, read in parallel.
fn load_packs(
    plan: &Plan,
    cases: impl IntoIterator<Item = usize>,
) -> Result<BTreeMap<usize, CasePack>> {
    use rayon::prelude::*;
    let cases: Vec<usize> = cases.into_iter().collect();
    let packs: Vec<CasePack> = cases
        .par_iter()
        .map(|&a| load_pack(plan, a))
        .collect::<Result<_>>()?;
    Ok(cases.into_iter().zip(packs).collect())
}

/// View `v` of some collections: slot `i` holds `slots[i]`'s rows, or nothing.
fn packed_view(plan: &Plan, slots: &[Option<&CasePack>], v: usize) -> PackedView {
    let mut view = PackedView {
        dim: plan.dim,
        grid: plan.grid,
        rows: Vec::with_capacity(slots.len()),
        positions: Vec::with_capacity(slots.len()),
        norms: Vec::with_capacity(slots.len()),
    };
    for slot in slots {
        match slot {
            Some(pack) => {
                let rows = pack.rows[v].clone();
                view.norms.push(crate::knn::squared_norms(&rows, plan.dim));
                view.rows.push(rows);
                view.positions.push(pack.positions.clone());
            }
            None => {
                view.rows.push(Vec::new());
                view.positions.push(Vec::new());
                view.norms.push(Vec::new());
            }
        }
    }
    view
}

/// The tile files of rows of block `i` against the cases of block `j`, view `v` (1-based in the names).
fn tile_files(i: usize, j: usize, v: usize) -> (String, String) {
    let stem = format!("distances/r{}c{}.v{v}", i + 1, j + 1);
    (format!("{stem}.dist.npy"), format!("{stem}.arg.npy"))
}

/// `mri-ad shard distances --block b/K`: the tiles of job `b` ([`Plan::job_tiles`]), each pair of cases
/// computed once in the orientation of the single-process scorer (lower case index as the query side), and
/// both directions written.
pub fn distances(cfg: &StepConfig) -> Result<()> {
    let (plan, block, pool) = cfg.open()?;
    let b = block.ok_or_else(|| Error::bad_argument("--block", "give the job: --block i/K"))?;
    pool.install(|| distances_in_pool(cfg, &plan, b))
}

fn distances_in_pool(cfg: &StepConfig, plan: &Plan, b: usize) -> Result<()> {
    let started = Instant::now();
    let tiles = plan.job_tiles(b);
    let search = plan.settings.knn_search();
    let knn = KnnPlan {
        tile_rows: TILE_ROWS,
    };
    let pairs_total: u64 = tiles
        .iter()
        .map(|&(i, j)| {
            let (ni, nj) = (
                plan.block_cases(i).len() as u64,
                plan.block_cases(j).len() as u64,
            );
            if i == j {
                ni * ni.saturating_sub(1) / 2
            } else {
                ni * nj
            }
        })
        .sum::<u64>()
        * plan.views as u64;
    let bar = Progress::new(cfg.progress).bar(pairs_total, "distances");
    let own = load_packs(plan, plan.block_cases(b))?;
    let mut record = StepRecord::new(plan, "distances", Some(b), None);
    let (mut compared, mut kernel) = (0u64, 0f64);
    for &(i, j) in &tiles {
        let partner = if i == j {
            None
        } else {
            Some(load_packs(
                plan,
                plan.block_cases(if i == b { j } else { i }),
            )?)
        };
        let packs_of = |blk: usize| -> &BTreeMap<usize, CasePack> {
            if blk == b {
                &own
            } else {
                partner.as_ref().expect("a partner block")
            }
        };
        let (ci, cj) = (plan.block_cases(i), plan.block_cases(j));
        let mut slots: Vec<Option<&CasePack>> = ci.clone().map(|a| packs_of(i).get(&a)).collect();
        if i != j {
            slots.extend(cj.clone().map(|a| packs_of(j).get(&a)));
        }
        let ni = ci.len();
        let pairs: Vec<(usize, usize)> = if i == j {
            (0..ni)
                .flat_map(|x| (x + 1..ni).map(move |y| (x, y)))
                .collect()
        } else {
            (0..ni)
                .flat_map(|x| (ni..ni + cj.len()).map(move |y| (x, y)))
                .collect()
        };
        for v in 0..plan.views {
            let view = packed_view(plan, &slots, v);
            let t = Instant::now();
            let table = DistTable::compute_pairs(&view, knn, search, &pairs, &|| bar.inc(1));
            kernel += t.elapsed().as_secs_f64();
            compared += table.compared;
            let local_i = 0..ni;
            let local_j = if i == j { 0..ni } else { ni..ni + cj.len() };
            record.files.extend(write_part(
                &cfg.work,
                &table,
                local_i.clone(),
                local_j.clone(),
                tile_files(i, j, v),
            )?);
            if i != j {
                record.files.extend(write_part(
                    &cfg.work,
                    &table,
                    local_j,
                    local_i,
                    tile_files(j, i, v),
                )?);
            }
        }
    }
    bar.finish_and_clear();
    record.details = json!({
        "tiles": tiles.iter().map(|&(i, j)| [i + 1, j + 1]).collect::<Vec<_>>(),
        "token_pairs_compared": compared,
        "kernel_seconds": kernel,
        "seconds": started.elapsed().as_secs_f64(),
    });
    record.write(&cfg.work, &record_path("distances", b, None))?;
    cfg.report.say(format!(
        "job {}/{}: {} tiles, {:.3e} token pairs in {:.1} s",
        b + 1,
        plan.blocks,
        tiles.len(),
        compared as f64,
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// Writes the rows of the local collections `rows` against the columns of the local collections `cols`
/// of a tile's table (dist and arg) as two arrays.
fn write_part(
    work: &Path,
    table: &DistTable,
    rows: Range<usize>,
    cols: Range<usize>,
    (dist_rel, arg_rel): (String, String),
) -> Result<[FileEntry; 2]> {
    let n = table.n_collections;
    let (r0, r1) = (table.offsets[rows.start], table.offsets[rows.end]);
    let width = cols.len();
    let mut dist = Vec::with_capacity((r1 - r0) * width);
    let mut arg = Vec::with_capacity((r1 - r0) * width);
    for r in r0..r1 {
        dist.extend_from_slice(&table.dist[r * n + cols.start..r * n + cols.end]);
        arg.extend_from_slice(&table.arg[r * n + cols.start..r * n + cols.end]);
    }
    Ok([
        store::write_array(work, &dist_rel, &[r1 - r0, width], &dist)?,
        store::write_array(work, &arg_rel, &[r1 - r0, width], &arg)?,
    ])
}

/// The distance rows of one block, read a few cases at a time: for each view asked for and each block
/// `j`, the tile file of this block's rows against `j`'s cases, checked against its job's record.
pub(super) struct BlockTables {
    block: usize,
    views: Vec<usize>,
    /// `[view][j]`: (dist, arg).
    readers: Vec<Vec<(NpyRows<f32>, NpyRows<u32>)>>,
}

impl BlockTables {
    pub(super) fn open(work: &Path, plan: &Plan, block: usize, views: &[usize]) -> Result<Self> {
        let rows = plan.rows_of(plan.block_cases(block));
        let mut records = BTreeMap::new();
        for j in 0..plan.blocks {
            let job = plan.tile_job(block, j);
            if let std::collections::btree_map::Entry::Vacant(e) = records.entry(job) {
                let rel = record_path("distances", job, None);
                let record = read_record(
                    work,
                    &rel,
                    plan,
                    "distances",
                    Some(job),
                    None,
                    &remedy(plan, work, "distances", Some(job), None),
                )?;
                e.insert((work.join(rel), record));
            }
        }
        let mut readers = Vec::new();
        for &v in views {
            let mut per_block = Vec::new();
            for j in 0..plan.blocks {
                let (path, record) = &records[&plan.tile_job(block, j)];
                let (d, a) = tile_files(block, j, v);
                let shape = [rows, plan.block_cases(j).len()];
                per_block.push((
                    NpyRows::open(&record.verified(work, path, &d)?, &shape)?,
                    NpyRows::open(&record.verified(work, path, &a)?, &shape)?,
                ));
            }
            readers.push(per_block);
        }
        Ok(BlockTables {
            block,
            views: views.to_vec(),
            readers,
        })
    }

    /// The tables (one per view asked for, in that order) of the cases `cases` of this block: tables over
    /// all N cases whose other cases have no rows.
    pub(super) fn chunk(&mut self, plan: &Plan, cases: Range<usize>) -> Result<Vec<DistTable>> {
        let n = plan.n();
        let mine = plan.block_cases(self.block);
        let r0 = plan.rows_of(mine.start..cases.start);
        let rows = plan.rows_of(cases.clone());
        let mut offsets = vec![0usize; n + 1];
        for a in 0..n {
            offsets[a + 1] = offsets[a] + if cases.contains(&a) { plan.rows(a) } else { 0 };
        }
        let mut tables = Vec::with_capacity(self.views.len());
        for per_block in &mut self.readers {
            let mut table = DistTable {
                n_collections: n,
                offsets: offsets.clone(),
                dist: vec![f32::INFINITY; rows * n],
                arg: vec![NO_TOKEN; rows * n],
                compared: 0,
            };
            let (mut d, mut g) = (Vec::new(), Vec::new());
            for (j, (dist, arg)) in per_block.iter_mut().enumerate() {
                let cols = plan.block_cases(j);
                let w = cols.len();
                d.clear();
                g.clear();
                dist.read_rows(r0..r0 + rows, &mut d)?;
                arg.read_rows(r0..r0 + rows, &mut g)?;
                for r in 0..rows {
                    table.dist[r * n + cols.start..r * n + cols.end]
                        .copy_from_slice(&d[r * w..(r + 1) * w]);
                    table.arg[r * n + cols.start..r * n + cols.end]
                        .copy_from_slice(&g[r * w..(r + 1) * w]);
                }
            }
            tables.push(table);
        }
        Ok(tables)
    }
}

/// The block's cases in chunks whose rows of `views` tables fit [`CHUNK_BYTES`] (at least one case each).
pub(super) fn case_chunks(plan: &Plan, block: usize, views: usize) -> Vec<Range<usize>> {
    let per_row = plan.n() * 8 * views.max(1);
    let mut out = Vec::new();
    let cases = plan.block_cases(block);
    let mut start = cases.start;
    let mut bytes = 0;
    for a in cases.clone() {
        let add = plan.rows(a) * per_row;
        if a > start && bytes + add > CHUNK_BYTES {
            out.push(start..a);
            start = a;
            bytes = 0;
        }
        bytes += add;
    }
    if start < cases.end {
        out.push(start..cases.end);
    }
    out
}

/// The graph views of the plan's settings, and the others, each ascending.
pub(super) fn view_order(plan: &Plan) -> (Vec<usize>, Vec<usize>) {
    let graph = batch::graph_views_of(&plan.settings, plan.views);
    let rest = (0..plan.views).filter(|v| !graph.contains(v)).collect();
    (graph, rest)
}

/// One link candidate with its cases: key, case and position of its row, rank, and per graph view the
/// case at that rank (`neighbours[first..first + L]` of its block's list).
#[derive(Debug, Clone, Copy)]
pub(super) struct LinkCandidate {
    pub key: f64,
    pub case: u32,
    pub position: u32,
    pub rank: u32,
    pub first: u32,
}

/// The order of [`links::candidate_order`]: rows are ordered by (case, position) in the batch.
pub(super) fn link_order(x: &LinkCandidate, y: &LinkCandidate) -> std::cmp::Ordering {
    x.key
        .total_cmp(&y.key)
        .then(x.case.cmp(&y.case))
        .then(x.position.cmp(&y.position))
        .then(x.rank.cmp(&y.rank))
}

/// `mri-ad shard links --block b/K`: the link candidates of the block's rows (CoDeGraph, Algorithm 1's
/// keys), the `keep` smallest kept in order with the count of all.
pub fn links(cfg: &StepConfig, keep: usize) -> Result<()> {
    let (plan, block, pool) = cfg.open()?;
    let b = block.ok_or_else(|| Error::bad_argument("--block", "give the block: --block i/K"))?;
    if plan.settings.method != Method::Codegraph {
        return Err(Error::bad_argument(
            "--work",
            "the plan scores with MuSc, which has no graph: run `mri-ad shard finish` after the distances",
        ));
    }
    pool.install(|| links_in_pool(cfg, &plan, b, keep.max(1)))
}

fn links_in_pool(cfg: &StepConfig, plan: &Plan, b: usize, keep: usize) -> Result<()> {
    let started = Instant::now();
    let (graph_views, _) = view_order(plan);
    let mut tables = BlockTables::open(&cfg.work, plan, b, &graph_views)?;
    let params = batch::graph_params(&plan.settings, plan.n(), plan.k());
    let nl = graph_views.len();
    let mut kept: Vec<LinkCandidate> = Vec::new();
    let mut neighbours: Vec<u32> = Vec::new();
    let mut total = 0u64;
    let chunks = case_chunks(plan, b, nl);
    let bar = Progress::new(cfg.progress).bar(chunks.len() as u64, "link candidates");
    for chunk in chunks {
        let ts = tables.chunk(plan, chunk.clone())?;
        let (mut case_of, mut position_of, mut eligible) = (Vec::new(), Vec::new(), Vec::new());
        for a in chunk.clone() {
            let valid = plan.cases[a].valid_mask(plan.positions);
            let sources = link_sources(&valid, plan.grid, plan.settings.link_margin);
            for p in active_positions(plan, a) {
                case_of.push(a as u32);
                position_of.push(p);
                eligible.push(sources[p as usize]);
            }
        }
        let msv = links::graph_msv(&ts, &eligible, params.r_ref, params.distance);
        let cands = links::candidate_keys(&msv, params.beta, params.epsilon);
        total += cands.len() as u64;
        let r = msv.r_ref;
        for c in cands {
            let row = msv.rows[c.e as usize] as usize;
            kept.push(LinkCandidate {
                key: c.key,
                case: case_of[row],
                position: position_of[row],
                rank: c.rank,
                first: neighbours.len() as u32,
            });
            for l in 0..nl {
                neighbours.push(msv.neighbour[(c.e as usize * nl + l) * r + c.rank as usize]);
            }
        }
        if kept.len() > 2 * keep {
            trim(&mut kept, &mut neighbours, keep, nl);
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    trim(&mut kept, &mut neighbours, keep, nl);
    let truncated = total > kept.len() as u64;
    let mut record = StepRecord::new(plan, "links", Some(b), None);
    let stem = format!("links/block{}", b + 1);
    let col = |f: fn(&LinkCandidate) -> u32| kept.iter().map(f).collect::<Vec<u32>>();
    record.files = vec![
        store::write_array(
            &cfg.work,
            &format!("{stem}.keys.npy"),
            &[kept.len()],
            &kept.iter().map(|c| c.key).collect::<Vec<_>>(),
        )?,
        store::write_array(
            &cfg.work,
            &format!("{stem}.cases.npy"),
            &[kept.len()],
            &col(|c| c.case),
        )?,
        store::write_array(
            &cfg.work,
            &format!("{stem}.positions.npy"),
            &[kept.len()],
            &col(|c| c.position),
        )?,
        store::write_array(
            &cfg.work,
            &format!("{stem}.ranks.npy"),
            &[kept.len()],
            &col(|c| c.rank),
        )?,
        store::write_array(
            &cfg.work,
            &format!("{stem}.neighbours.npy"),
            &[kept.len(), nl],
            &neighbours,
        )?,
    ];
    record.details = json!({
        "candidates": total,
        "kept": kept.len(),
        "truncated": truncated,
        "graph_views": nl,
        "seconds": started.elapsed().as_secs_f64(),
    });
    record.write(&cfg.work, &record_path("links", b, None))?;
    cfg.report.say(format!(
        "block {}/{}: {} link candidates, the {} smallest kept",
        b + 1,
        plan.blocks,
        total,
        kept.len()
    ));
    Ok(())
}

/// Keeps the `keep` smallest candidates, sorted, with their neighbours renumbered.
fn trim(kept: &mut Vec<LinkCandidate>, neighbours: &mut Vec<u32>, keep: usize, nl: usize) {
    use rayon::prelude::*;
    if kept.len() > keep {
        kept.select_nth_unstable_by(keep - 1, link_order);
        kept.truncate(keep);
    }
    kept.par_sort_unstable_by(link_order);
    let mut compact = Vec::with_capacity(kept.len() * nl);
    for c in kept.iter_mut() {
        let f = c.first as usize;
        let first = compact.len() as u32;
        compact.extend_from_slice(&neighbours[f..f + nl]);
        c.first = first;
    }
    *neighbours = compact;
}

/// The exclusions of Algorithm 2's rounds so far, replayed on a chunk's tables as the single-process
/// scorer applies them: after each round that had a threshold, every graph-view table refined against the
/// cumulative exclusions; the other views once against the final ones.
pub(super) struct Replay<'a> {
    plan: &'a Plan,
    /// Per round with a threshold: the tokens it excluded `(case, position)`.
    rounds: Vec<Vec<(u32, u32)>>,
    /// The packs of the cases the refinement reads (the block's and every case with an exclusion).
    packs: BTreeMap<usize, CasePack>,
    /// Cases with an excluded token.
    is_base: Vec<bool>,
}

impl<'a> Replay<'a> {
    fn new(plan: &'a Plan, rounds: Vec<Vec<(u32, u32)>>, packs: BTreeMap<usize, CasePack>) -> Self {
        let mut is_base = vec![false; plan.n()];
        rounds
            .iter()
            .flatten()
            .for_each(|&(a, _)| is_base[a as usize] = true);
        Replay {
            plan,
            rounds,
            packs,
            is_base,
        }
    }

    /// Every case with an excluded token.
    fn bases(rounds: &[Vec<(u32, u32)>]) -> Vec<usize> {
        let mut b: Vec<usize> = rounds.iter().flatten().map(|&(a, _)| a as usize).collect();
        b.sort_unstable();
        b.dedup();
        b
    }

    /// The exclusion masks `[N][M]` after all rounds.
    fn final_mask(&self) -> Vec<Vec<bool>> {
        let mut mask = vec![vec![false; self.plan.positions]; self.plan.n()];
        for &(a, p) in self.rounds.iter().flatten() {
            mask[a as usize][p as usize] = true;
        }
        mask
    }

    fn any_excluded(&self) -> bool {
        self.rounds.iter().any(|r| !r.is_empty())
    }

    /// The views `views` of the chunk's cases and the bases, as collections of the whole batch.
    fn views(&self, chunk: &Range<usize>, views: &[usize]) -> Vec<PackedView> {
        let slots: Vec<Option<&CasePack>> = (0..self.plan.n())
            .map(|a| {
                let wanted = chunk.contains(&a) || self.is_base[a];
                self.packs.get(&a).filter(|_| wanted)
            })
            .collect();
        views
            .iter()
            .map(|&v| packed_view(self.plan, &slots, v))
            .collect()
    }

    fn refine(&self, table: &mut DistTable, view: &PackedView, mask: &[Vec<bool>]) {
        table.refine(
            view,
            mask,
            self.plan.settings.refine_mode == RefineMode::Exact,
            self.plan.settings.knn_search(),
        );
    }

    /// Replays the rounds on the graph-view tables `tables` (views `views`).
    fn refine_rounds(&self, chunk: &Range<usize>, tables: &mut [DistTable], views: &[usize]) {
        if !self.any_excluded() {
            return;
        }
        let packed = self.views(chunk, views);
        let mut mask = vec![vec![false; self.plan.positions]; self.plan.n()];
        for round in &self.rounds {
            for &(a, p) in round {
                mask[a as usize][p as usize] = true;
            }
            for (table, view) in tables.iter_mut().zip(&packed) {
                self.refine(table, view, &mask);
            }
        }
    }

    /// Refines `tables` (views `views`, outside the graph) once against the final exclusions.
    fn refine_final(&self, chunk: &Range<usize>, tables: &mut [DistTable], views: &[usize]) {
        if !self.any_excluded() || tables.is_empty() {
            return;
        }
        let mask = self.final_mask();
        let packed = self.views(chunk, views);
        for (table, view) in tables.iter_mut().zip(&packed) {
            self.refine(table, view, &mask);
        }
    }
}

/// The packs a replay over block `b` needs: none without exclusions, else the block's cases and every
/// case with an exclusion.
fn replay_packs(
    plan: &Plan,
    b: usize,
    rounds: &[Vec<(u32, u32)>],
) -> Result<BTreeMap<usize, CasePack>> {
    let bases = Replay::bases(rounds);
    if bases.is_empty() {
        return Ok(BTreeMap::new());
    }
    let mut cases: Vec<usize> = plan.block_cases(b).collect();
    cases.extend(bases);
    cases.sort_unstable();
    cases.dedup();
    load_packs(plan, cases)
}

/// `mri-ad shard ratios --block b/K --round t`: the dependency ratios of the block's current rows on the
/// `t`-th outlier community, after the exclusions of rounds `1..t` (read from every block's ratio files).
pub fn ratios(cfg: &StepConfig, round: usize) -> Result<()> {
    let (plan, block, pool) = cfg.open()?;
    let b = block.ok_or_else(|| Error::bad_argument("--block", "give the block: --block i/K"))?;
    let graph = super::join::read_graph(&cfg.work, &plan)?;
    if round == 0 || round > graph.outliers.len() {
        return Err(Error::bad_argument(
            "--round",
            format!(
                "{round}: the graph has {} outlier communities, so the rounds are 1..={}",
                graph.outliers.len(),
                graph.outliers.len()
            ),
        ));
    }
    pool.install(|| ratios_in_pool(cfg, &plan, b, round, &graph.outliers[round - 1]))
}

fn ratios_in_pool(
    cfg: &StepConfig,
    plan: &Plan,
    b: usize,
    round: usize,
    members: &[usize],
) -> Result<()> {
    let started = Instant::now();
    let rounds = super::join::round_exclusions(&cfg.work, plan, round - 1)?;
    let packs = replay_packs(plan, b, &rounds)?;
    let replay = Replay::new(plan, rounds, packs);
    let (graph_views, _) = view_order(plan);
    let mut tables = BlockTables::open(&cfg.work, plan, b, &graph_views)?;
    let params = batch::graph_params(&plan.settings, plan.n(), plan.k()).filter;
    let mut in_c = vec![false; plan.n()];
    members.iter().for_each(|&m| in_c[m] = true);
    let excluded = replay.final_mask();
    let (mut outside, mut inside_case, mut inside_position, mut inside_ratio) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for chunk in case_chunks(plan, b, graph_views.len()) {
        let mut ts = tables.chunk(plan, chunk.clone())?;
        replay.refine_rounds(&chunk, &mut ts, &graph_views);
        let mut current = Vec::new();
        let mut owner = Vec::new();
        let mut row = 0;
        for a in chunk.clone() {
            let valid = plan.cases[a].valid_mask(plan.positions);
            for p in active_positions(plan, a) {
                if valid[p as usize] && !excluded[a][p as usize] {
                    current.push(row);
                    owner.push((a, p));
                }
                row += 1;
            }
        }
        let q = dependency_ratios(&ts, &current, &in_c, &params);
        for (&(a, p), &ratio) in owner.iter().zip(&q) {
            if in_c[a] {
                inside_case.push(a as u32);
                inside_position.push(p);
                inside_ratio.push(ratio);
            } else {
                outside.push(ratio);
            }
        }
    }
    let stem = format!("rounds/{round}/block{}", b + 1);
    let mut record = StepRecord::new(plan, "ratios", Some(b), Some(round));
    record.files = vec![
        store::write_array(
            &cfg.work,
            &format!("{stem}.outside.npy"),
            &[outside.len()],
            &outside,
        )?,
        store::write_array(
            &cfg.work,
            &format!("{stem}.inside_cases.npy"),
            &[inside_case.len()],
            &inside_case,
        )?,
        store::write_array(
            &cfg.work,
            &format!("{stem}.inside_positions.npy"),
            &[inside_position.len()],
            &inside_position,
        )?,
        store::write_array(
            &cfg.work,
            &format!("{stem}.inside_ratios.npy"),
            &[inside_ratio.len()],
            &inside_ratio,
        )?,
    ];
    record.details = json!({
        "outside": outside.len(),
        "inside": inside_ratio.len(),
        "members": members,
        "seconds": started.elapsed().as_secs_f64(),
    });
    record.write(&cfg.work, &record_path("ratios", b, Some(round)))?;
    cfg.report.say(format!(
        "block {}/{} round {round}: {} ratios outside the community, {} inside",
        b + 1,
        plan.blocks,
        outside.len(),
        inside_ratio.len()
    ));
    Ok(())
}

/// `mri-ad shard finish --block b/K`: the final scores of the block's tokens (every view refined against
/// the exclusions of all rounds, as the single-process scorer does) and each case's similarity-scaling
/// sums.
pub fn finish(cfg: &StepConfig) -> Result<()> {
    let (plan, block, pool) = cfg.open()?;
    let b = block.ok_or_else(|| Error::bad_argument("--block", "give the block: --block i/K"))?;
    pool.install(|| finish_in_pool(cfg, &plan, b))
}

fn finish_in_pool(cfg: &StepConfig, plan: &Plan, b: usize) -> Result<()> {
    let started = Instant::now();
    let rounds = match plan.settings.method {
        Method::Codegraph => {
            let graph = super::join::read_graph(&cfg.work, plan)?;
            super::join::round_exclusions(&cfg.work, plan, graph.outliers.len())?
        }
        Method::Musc => Vec::new(),
    };
    let packs = replay_packs(plan, b, &rounds)?;
    let replay = Replay::new(plan, rounds, packs);
    let excluded = replay.final_mask();
    let (graph_views, rest) = view_order(plan);
    let order: Vec<usize> = graph_views.iter().chain(&rest).copied().collect();
    let mut tables = BlockTables::open(&cfg.work, plan, b, &order)?;
    let (n, m) = (plan.n(), plan.positions);
    let k = plan.k();
    let distance = plan.settings.distance;
    let cases = plan.block_cases(b);
    let mut scores = vec![0f32; cases.len() * m];
    let width = n.saturating_sub(2);
    let mut curves = Vec::with_capacity(cases.len());
    let rule = scaling_rule(plan);
    let chunks = case_chunks(plan, b, order.len());
    let bar = Progress::new(cfg.progress).bar(chunks.len() as u64, "final scores");
    for chunk in chunks {
        let mut ts = tables.chunk(plan, chunk.clone())?;
        let rows = ts[0].n_rows();
        let mut taus = TauBuffer::new(rows, n);
        for t in &ts {
            taus.add_table(t, distance);
        }
        let (graph_ts, rest_ts) = ts.split_at_mut(graph_views.len());
        replay.refine_rounds(&chunk, graph_ts, &graph_views);
        replay.refine_final(&chunk, rest_ts, &rest);
        let mut row_sum = vec![0f64; rows];
        for t in &ts {
            for (acc, s) in row_sum.iter_mut().zip(msm::score_rows(t, k, distance)) {
                *acc += s as f64;
            }
        }
        let mut row = 0;
        for a in chunk.clone() {
            let start = row;
            let positions = active_positions(plan, a);
            let valid = plan.cases[a].valid_mask(m);
            let local = a - cases.start;
            for &p in &positions {
                scores[local * m + p as usize] = (row_sum[row] / plan.views as f64) as f32;
                row += 1;
            }
            let pos = &positions;
            curves.push(taus.case_curve(
                start..row,
                &|r| valid[pos[r - start] as usize],
                &|r| excluded[a][pos[r - start] as usize],
                &rule,
            ));
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let stem = format!("final/block{}", b + 1);
    let flat = |f: fn(&crate::score::scaling::ScalingCurve) -> &Vec<f64>| {
        curves
            .iter()
            .flat_map(|c| f(c).iter().copied())
            .collect::<Vec<f64>>()
    };
    let flat_u = |f: fn(&crate::score::scaling::ScalingCurve) -> &Vec<u64>| {
        curves
            .iter()
            .flat_map(|c| f(c).iter().copied())
            .collect::<Vec<u64>>()
    };
    let shape = [cases.len(), width];
    let mut record = StepRecord::new(plan, "finish", Some(b), None);
    record.files = vec![
        store::write_array(
            &cfg.work,
            &format!("{stem}.scores.npy"),
            &[cases.len(), m],
            &scores,
        )?,
        store::write_array(
            &cfg.work,
            &format!("{stem}.sum_normal.npy"),
            &shape,
            &flat(|c| &c.sum_normal),
        )?,
        store::write_array(
            &cfg.work,
            &format!("{stem}.count_normal.npy"),
            &shape,
            &flat_u(|c| &c.count_normal),
        )?,
        store::write_array(
            &cfg.work,
            &format!("{stem}.sum_flagged.npy"),
            &shape,
            &flat(|c| &c.sum_flagged),
        )?,
        store::write_array(
            &cfg.work,
            &format!("{stem}.count_flagged.npy"),
            &shape,
            &flat_u(|c| &c.count_flagged),
        )?,
    ];
    record.details = json!({ "seconds": started.elapsed().as_secs_f64() });
    record.write(&cfg.work, &record_path("finish", b, None))?;
    cfg.report.say(format!(
        "block {}/{}: final scores of {} cases",
        b + 1,
        plan.blocks,
        cases.len()
    ));
    Ok(())
}

/// The scaling curve's `flagged_rule`, as the single-process scorer names it.
pub(super) fn scaling_rule(plan: &Plan) -> String {
    match plan.settings.method {
        Method::Codegraph => "codegraph-excluded".into(),
        Method::Musc => "none (MuSc excludes nothing)".into(),
    }
}
