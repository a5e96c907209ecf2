//! The batch scorer's driver: one pass over the views of a batch (the CoDeGraph graph stage on its graph
//! views first, then the other views), or one per part with `--divide`, merged back into batch order.
//! The memory and the traps are those of the parent module's doc.

use indicatif::ProgressBar;

use super::codegraph::communities::OutlierParams;
use super::codegraph::filter::{FilterParams, RowIndex};
use super::codegraph::leiden::Leiden;
use super::codegraph::{self, GraphParams, GraphReport};
use super::scaling::{ScalingCurve, TauBuffer};
use super::{
    check_batch, divide_batch, link_sources, msm, KnownTables, Method, RefineMode, ScoreConfig,
    ScoreResult, Subset, Timing,
};
use crate::knn::{DistTable, KnnPlan, PackedView};
use crate::progress::Progress;
use crate::{Error, Result, TokenSet};

/// Scores a batch. See the module doc for shapes and memory.
pub fn score_batch(
    sets: &[TokenSet],
    config: &ScoreConfig,
    progress: &Progress,
) -> Result<ScoreResult> {
    score_batch_with(sets, config, progress, None)
}

/// [`score_batch`], with the distances among the `known` cases taken from their stored tables instead of
/// being computed (a healthy bank's, [`crate::bank`]); every other pair is computed. The result is the
/// same as `score_batch` on the same batch: each pair's minima do not depend on the other cases.
pub fn score_batch_with(
    sets: &[TokenSet],
    config: &ScoreConfig,
    progress: &Progress,
    known: Option<&KnownTables>,
) -> Result<ScoreResult> {
    let n = sets.len();
    check_batch(config, n, sets.first().map_or(0, TokenSet::n_views))?;
    super::check_window_grid(sets, config.search)?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(config.threads)
        .build()
        .map_err(|e| Error::internal(format!("cannot start the worker threads: {e}")))?;
    if config.divide <= 1 {
        return pool.install(|| score_batch_inner(sets, config, progress, known));
    }
    if known.is_some() {
        return Err(Error::bad_argument(
            "--divide",
            "subset division scores parts of the batch on their own, which a stored bank's tables do not \
             describe: drop --divide with --bank",
        ));
    }
    let parts = divide_batch(n, config.divide, config.seed);
    let mut results = Vec::with_capacity(parts.len());
    for part in &parts {
        let subset: Vec<TokenSet> = part.iter().map(|&a| sets[a].clone()).collect();
        results.push(pool.install(|| score_batch_inner(&subset, config, progress, None))?);
    }
    Ok(merge_parts(n, parts, results))
}

/// Puts the results of the parts back into batch order.
fn merge_parts(n: usize, parts: Vec<Vec<usize>>, results: Vec<ScoreResult>) -> ScoreResult {
    let mut token_scores = vec![Vec::new(); n];
    let mut excluded = vec![Vec::new(); n];
    let mut timings = Vec::new();
    let mut subsets = Vec::new();
    let mut graph: Option<GraphReport> = None;
    let (mut active, mut total, mut memory, mut pairs, mut kernel) = (0, 0, 0, 0.0, 0.0);
    let mut scaling: Option<ScalingCurve> = None;
    for (pi, (part, r)) in parts.into_iter().zip(results).enumerate() {
        match &mut scaling {
            Some(c) => c.merge(&r.scaling),
            None => scaling = Some(r.scaling.clone()),
        }
        for (local, &a) in part.iter().enumerate() {
            token_scores[a] = r.token_scores[local].clone();
            excluded[a] = r.excluded[local].clone();
        }
        timings.extend(r.timings.into_iter().map(|t| Timing {
            stage: format!("part {pi}: {}", t.stage),
            seconds: t.seconds,
        }));
        if let Some(g) = &r.graph {
            let merged = graph.get_or_insert_with(|| GraphReport {
                r_ref: g.r_ref,
                resolution: None,
                links_selected: 0,
                link_candidates: 0,
                coverage: 0.0,
                edges: Vec::new(),
                communities: Vec::new(),
                density_fence: None,
                filtering: Vec::new(),
            });
            let global = |i: usize| part[i];
            merged.links_selected += g.links_selected;
            merged.link_candidates += g.link_candidates;
            merged.coverage += g.coverage * part.len() as f64 / n as f64;
            merged
                .edges
                .extend(g.edges.iter().map(|&(i, j, w)| (global(i), global(j), w)));
            merged.communities.extend(g.communities.iter().map(|c| {
                let mut c = c.clone();
                c.members = c.members.iter().map(|&m| global(m)).collect();
                c
            }));
            merged.filtering.extend(g.filtering.iter().map(|f| {
                let mut f = f.clone();
                f.members = f.members.iter().map(|&m| global(m)).collect();
                f
            }));
        }
        active += r.active_tokens;
        total += r.total_tokens;
        memory = memory.max(r.memory_estimate);
        pairs += r.pairs_compared;
        kernel += r.kernel_seconds;
        subsets.push(Subset {
            cases: part,
            k: r.k,
            graph: r.graph,
        });
    }
    if let Some(g) = &mut graph {
        g.edges.sort_by_key(|&(i, j, _)| (i.min(j), i.max(j)));
        g.edges = g
            .edges
            .iter()
            .map(|&(i, j, w)| (i.min(j), i.max(j), w))
            .collect();
        g.communities.sort_by_key(|c| c.members[0]);
    }
    ScoreResult {
        token_scores,
        excluded,
        graph,
        subsets,
        timings,
        k: 0,
        active_tokens: active,
        total_tokens: total,
        memory_estimate: memory,
        pairs_compared: pairs,
        kernel_seconds: kernel,
        scaling: scaling.expect("at least one part"),
    }
}

/// The state of one pass over the views of a batch: each view's distance table is computed, its
/// similarity-scaling growth rates and MSM scores are added, and the kernel's work is counted.
struct Pass<'a> {
    sets: &'a [TokenSet],
    /// Stored tables of some of the cases, used instead of computing their pairs.
    known: Option<&'a KnownTables<'a>>,
    config: &'a ScoreConfig,
    plan: KnnPlan,
    /// The MSM `k`.
    k: usize,
    bar: ProgressBar,
    taus: TauBuffer,
    tau_seconds: f64,
    /// Per active token (rows in view order), the sum of its MSM scores over the views so far.
    row_sum: Vec<f64>,
    timings: Vec<Timing>,
    kernel_seconds: f64,
    pairs_compared: f64,
}

impl Pass<'_> {
    fn active(&self, a: usize, p: usize) -> bool {
        self.config.keep_void || self.sets[a].valid[p]
    }

    /// The packed tokens and the distance table of view `v`.
    fn compute_view(&mut self, v: usize) -> Result<(PackedView, DistTable)> {
        let t = std::time::Instant::now();
        let view = match self.known {
            None => PackedView::pack(self.sets, v, |a, p| self.active(a, p)),
            Some(known) => {
                let mut member = vec![None; self.sets.len()];
                for (s, &a) in known.members.iter().enumerate() {
                    member[a] = Some(s);
                }
                PackedView::pack_with(
                    self.sets,
                    v,
                    |a, p| self.active(a, p),
                    |a| member[a].map(|s| known.packed[s].index_axis(ndarray::Axis(0), v)),
                )
                .map_err(|problem| Error::BadBatch {
                    path: known.source.clone(),
                    problem: format!("view {v}: {problem}"),
                })?
            }
        };
        let bar = &self.bar;
        let search = self.config.knn_search();
        let table = match self.known {
            None => DistTable::compute(&view, self.plan, search, &|| bar.inc(1)),
            Some(known) => {
                let stored = (known.load)(v)?;
                let mut table = DistTable::compute_pairs(
                    &view,
                    self.plan,
                    search,
                    &known.missing_pairs(self.sets.len()),
                    &|| bar.inc(1),
                );
                table
                    .fill_from(&stored, &known.members)
                    .map_err(|problem| Error::BadBatch {
                        path: known.source.clone(),
                        problem: format!("view {v}: {problem}"),
                    })?;
                table
            }
        };
        let secs = t.elapsed().as_secs_f64();
        self.kernel_seconds += secs;
        self.pairs_compared += table.compared as f64;
        self.timings.push(Timing {
            stage: format!("distances view {v}"),
            seconds: secs,
        });
        Ok((view, table))
    }

    /// Adds a table's growth rates to the similarity-scaling curve.
    fn add_taus(&mut self, table: &DistTable) {
        let t = std::time::Instant::now();
        self.taus.add_table(table, self.config.distance);
        self.tau_seconds += t.elapsed().as_secs_f64();
    }

    /// Adds view `v`'s MSM scores (from its final table) to every token's sum.
    fn add_scores(&mut self, table: &DistTable, v: usize) {
        let t = std::time::Instant::now();
        for (acc, s) in
            self.row_sum
                .iter_mut()
                .zip(msm::score_rows(table, self.k, self.config.distance))
        {
            *acc += s as f64;
        }
        self.timings.push(Timing {
            stage: format!("msm view {v}"),
            seconds: t.elapsed().as_secs_f64(),
        });
    }

    /// The CoDeGraph stage on the graph views: their tables (kept for Algorithm 2), the graph, the
    /// excluded tokens (marked in `excluded`), then the graph views' MSM scores on the refined tables.
    /// Returns the graph report and the first graph view's packed layout.
    fn graph_stage(
        &mut self,
        graph_views: &[usize],
        excluded: &mut [Vec<bool>],
    ) -> Result<(GraphReport, PackedView)> {
        let mut views = Vec::new();
        let mut tables = Vec::new();
        for &v in graph_views {
            let (view, table) = self.compute_view(v)?;
            self.add_taus(&table);
            views.push(view);
            tables.push(table);
        }
        let rows = row_index(&views[0], self.sets, self.config.link_margin);
        let params = graph_params(self.config, self.sets.len(), self.k);
        let detector = Leiden {
            seed: self.config.seed,
            restarts: self.config.leiden_restarts,
            max_iterations: self.config.leiden_iterations,
        };
        let (report, gt) = codegraph::run(&mut tables, &views, &rows, &params, &detector, excluded);
        for (stage, seconds) in [
            ("graph: links", gt.links),
            ("graph: communities", gt.communities),
            ("graph: filtering", gt.filtering),
        ] {
            self.timings.push(Timing {
                stage: stage.into(),
                seconds,
            });
        }
        for (table, &v) in tables.iter().zip(graph_views) {
            self.add_scores(table, v);
        }
        drop(tables);
        Ok((
            report,
            views.into_iter().next().expect("at least one graph view"),
        ))
    }
}

/// The graph-stage parameters of `config` for a batch of `n` cases and MSM `k`.
pub(crate) fn graph_params(config: &ScoreConfig, n: usize, k: usize) -> GraphParams {
    GraphParams {
        r_ref: ((config.reference_ratio * n as f64).floor() as usize).clamp(2, n - 1),
        beta: config.beta,
        epsilon: 1e-12,
        coverage: config.coverage,
        link_batch: config.link_batch,
        resolution_percentile: config.resolution_percentile,
        outliers: OutlierParams {
            rule: config.outlier_rule,
            tukey_fence: config.tukey_fence,
            tukey_k: config.tukey_k,
            tukey_iqr_floor: config.tukey_iqr_floor,
            top_densest: config.top_densest,
            min_communities: config.min_communities,
        },
        filter: FilterParams {
            k,
            percentile: config.dependency_percentile,
            epsilon: 1e-12,
            distance: config.distance,
            recompute: config.refine_mode == RefineMode::Exact,
            search: config.knn_search(),
        },
        distance: config.distance,
    }
}

/// The views whose tables feed the graph stage (none with MuSc), sorted.
pub(crate) fn graph_views_of(config: &ScoreConfig, n_views: usize) -> Vec<usize> {
    match config.method {
        Method::Musc => Vec::new(),
        Method::Codegraph if config.graph_views.is_empty() => (0..n_views).collect(),
        Method::Codegraph => {
            let mut g = config.graph_views.clone();
            g.sort_unstable();
            g.dedup();
            g
        }
    }
}

/// The memory the kept tables and views need (refused above `--memory-budget`) and the tile plan for the
/// rest: kept tables + one working table + packed tokens of kept views + one working view + scratch.
fn memory_plan(
    config: &ScoreConfig,
    n: usize,
    dim: usize,
    active_counts: &[usize],
    graph_views: usize,
) -> Result<(KnnPlan, usize)> {
    let rows_total: usize = active_counts.iter().sum();
    let max_rows = *active_counts.iter().max().unwrap_or(&0);
    let threads = rayon::current_num_threads();
    let table_bytes = rows_total * n * 8;
    let view_bytes = rows_total * (dim + 2) * 4;
    // The τ buffer of the scaling curve: with CoDeGraph it lives in the working-table slot during the graph
    // stage and in a dropped graph table afterwards; MuSc has no such slot to spare.
    let tau_bytes = TauBuffer::bytes(rows_total, n);
    let fixed = (graph_views + 1) * (table_bytes + view_bytes)
        + if graph_views == 0 { tau_bytes } else { 0 };
    let budget = config.memory_budget * 1024 * 1024;
    if fixed >= budget {
        return Err(Error::Resource(format!(
            "scoring {n} cases with {rows_total} active tokens in one process needs about {} MiB for the \
             distance tables, more than --memory-budget {} MiB: raise --memory-budget, or split the batch \
             into blocks scored by separate jobs, whose memory does not grow with the batch (`mri-ad shard \
             plan --tokens DIR --work WORK --blocks K`, or workflow/Snakefile; README \"Sharded scoring\")",
            fixed / (1024 * 1024) + 1,
            config.memory_budget
        )));
    }
    let plan = KnnPlan::for_budget(budget - fixed, max_rows, threads);
    Ok((plan, fixed + threads * plan.scratch_bytes(max_rows)))
}

fn score_batch_inner(
    sets: &[TokenSet],
    config: &ScoreConfig,
    progress: &Progress,
    known: Option<&KnownTables>,
) -> Result<ScoreResult> {
    let n = sets.len();
    // `score_batch` has run `check_batch` (the graph views among them) on the whole batch.
    let (n_views, m, dim) = sets[0].tokens.dim();
    let active_counts: Vec<usize> = (0..n)
        .map(|a| {
            (0..m)
                .filter(|&p| config.keep_void || sets[a].valid[p])
                .count()
        })
        .collect();
    let rows_total: usize = active_counts.iter().sum();
    let graph_views = graph_views_of(config, n_views);
    let (plan, memory_estimate) = memory_plan(config, n, dim, &active_counts, graph_views.len())?;
    let k = msm::top_k(config.alpha(), n);
    let pair_count = match known {
        None => n * (n - 1) / 2,
        Some(known) => known.missing_pairs(n).len(),
    } as u64;
    let mut pass = Pass {
        sets,
        known,
        config,
        plan,
        k,
        bar: progress.bar(pair_count * n_views as u64, "distances"),
        taus: TauBuffer::new(rows_total, n),
        tau_seconds: 0.0,
        row_sum: vec![0f64; rows_total],
        timings: Vec::new(),
        kernel_seconds: 0.0,
        pairs_compared: 0.0,
    };
    let mut excluded: Vec<Vec<bool>> = vec![vec![false; m]; n];
    let (graph_report, layout) = pass.score_views(&graph_views, &mut excluded)?;
    let (scaling, timing) = scaling_curve(
        pass.taus,
        pass.tau_seconds,
        &layout,
        sets,
        config,
        &excluded,
    );
    pass.timings.push(timing);
    let token_scores = mean_token_scores(&layout, &pass.row_sum, (n, m), n_views);
    Ok(ScoreResult {
        token_scores,
        excluded: excluded_positions(&excluded),
        subsets: vec![Subset {
            cases: (0..n).collect(),
            k,
            graph: graph_report.clone(),
        }],
        graph: graph_report,
        timings: pass.timings,
        k,
        active_tokens: rows_total,
        total_tokens: n * m,
        memory_estimate,
        pairs_compared: pass.pairs_compared,
        kernel_seconds: pass.kernel_seconds,
        scaling,
    })
}

/// Per case, the positions excluded by the graph stage.
fn excluded_positions(excluded: &[Vec<bool>]) -> Vec<Vec<u32>> {
    excluded
        .iter()
        .map(|e| (0..e.len() as u32).filter(|&p| e[p as usize]).collect())
        .collect()
}

impl Pass<'_> {
    /// Every view: with CoDeGraph the graph stage on `graph_views` first (marking `excluded`), then the
    /// other views, refined when tokens were excluded. Returns the graph report and the packed layout of
    /// the first view scored (the rows' order).
    fn score_views(
        &mut self,
        graph_views: &[usize],
        excluded: &mut [Vec<bool>],
    ) -> Result<(Option<GraphReport>, PackedView)> {
        let config = self.config;
        let n_views = self.sets[0].tokens.dim().0;
        let mut graph_report = None;
        let mut layout: Option<PackedView> = None;
        if config.method == Method::Codegraph {
            let (report, first) = self.graph_stage(graph_views, excluded)?;
            graph_report = Some(report);
            layout = Some(first);
        }
        let recompute = config.refine_mode == RefineMode::Exact;
        let any_excluded = excluded.iter().any(|e| e.iter().any(|&x| x));
        for v in (0..n_views).filter(|v| !graph_views.contains(v)) {
            let (view, mut table) = self.compute_view(v)?;
            self.add_taus(&table);
            if any_excluded {
                table.refine(&view, excluded, recompute, config.knn_search());
            }
            self.add_scores(&table, v);
            layout.get_or_insert(view);
        }
        self.bar.finish_and_clear();
        let layout = layout.expect("at least one view was scored");
        Ok((graph_report, layout))
    }
}

/// The similarity-scaling curve (normal tokens against the `excluded` ones) from the pass's growth rates
/// `taus`, and the timing of its stage: `tau_seconds` (adding the tables' growth rates) plus this.
fn scaling_curve(
    taus: TauBuffer,
    tau_seconds: f64,
    layout: &PackedView,
    sets: &[TokenSet],
    config: &ScoreConfig,
    excluded: &[Vec<bool>],
) -> (ScalingCurve, Timing) {
    let t = std::time::Instant::now();
    let rows = row_index(layout, sets, config.link_margin);
    let case_rows: Vec<usize> = layout.positions.iter().map(Vec::len).collect();
    let scaling = taus.finish(
        &case_rows,
        |r| rows.eligible[r],
        |r| excluded[rows.collection[r] as usize][rows.position[r] as usize],
        match config.method {
            Method::Codegraph => "codegraph-excluded",
            Method::Musc => "none (MuSc excludes nothing)",
        },
    );
    let timing = Timing {
        stage: "similarity scaling curve".into(),
        seconds: tau_seconds + t.elapsed().as_secs_f64(),
    };
    (scaling, timing)
}

/// Every token's score `[n][m]`: its summed MSM scores (`row_sum`, rows in `layout`'s order) averaged
/// over the `n_views` views; 0 for inactive tokens.
fn mean_token_scores(
    layout: &PackedView,
    row_sum: &[f64],
    (n, m): (usize, usize),
    n_views: usize,
) -> Vec<Vec<f32>> {
    let mut token_scores = vec![vec![0f32; m]; n];
    let mut row = 0;
    for (a, scores) in token_scores.iter_mut().enumerate() {
        for &p in &layout.positions[a] {
            scores[p as usize] = (row_sum[row] / n_views as f64) as f32;
            row += 1;
        }
    }
    token_scores
}

fn row_index(view: &PackedView, sets: &[TokenSet], link_margin: usize) -> RowIndex {
    let mut collection = Vec::new();
    let mut position = Vec::new();
    let mut eligible = Vec::new();
    let mut link_source = Vec::new();
    for (a, positions) in view.positions.iter().enumerate() {
        let sources = link_sources(&sets[a].valid, sets[a].grid, link_margin);
        for &p in positions {
            collection.push(a as u32);
            position.push(p);
            eligible.push(sets[a].valid[p as usize]);
            link_source.push(sources[p as usize]);
        }
    }
    RowIndex {
        collection,
        position,
        eligible,
        link_source,
    }
}
