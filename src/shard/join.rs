//! The global steps, each run once on what the blocks wrote: `graph` (Algorithm 1's link selection over
//! every block's candidates, the case graph, Leiden, the outlier communities), the thresholds of
//! Algorithm 2's rounds (recomputed wherever needed from every block's ratio files: they are small), and
//! `join` (the run folder `score --tokens` writes).

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::plan::{self, Plan};
use super::steps::{link_order, record_path, remedy, scaling_rule, LinkCandidate, StepConfig};
use super::store::{self, read_record, StepRecord};
use crate::score::codegraph::filter::CommunityFilter;
use crate::score::codegraph::leiden::Leiden;
use crate::score::codegraph::{self, links, GraphReport};
use crate::score::scaling::ScalingCurve;
use crate::score::stats::percentile_linear;
use crate::score::{batch, Method, ScoreResult, Subset};
use crate::{Error, Result};

/// What the graph step decided: the report (without Algorithm 2's part) and the outlier communities in
/// processing order (round `t` is `outliers[t − 1]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GraphStep {
    pub report: GraphReport,
    pub outliers: Vec<Vec<usize>>,
}

const GRAPH_RECORD: &str = "graph/graph.json";

/// Reads the graph step's record.
pub fn read_graph(work: &Path, plan: &Plan) -> Result<GraphStep> {
    if plan.settings.method != Method::Codegraph {
        return Err(Error::bad_argument(
            "--work",
            "the plan scores with MuSc, which has no graph and no rounds: run `mri-ad shard finish`",
        ));
    }
    let record = read_record(
        work,
        GRAPH_RECORD,
        plan,
        "graph",
        None,
        None,
        &remedy(plan, work, "graph", None, None),
    )?;
    serde_json::from_value(record.details)
        .map_err(|e| Error::bad_input(work.join(GRAPH_RECORD), format!("not a graph record: {e}")))
}

/// `mri-ad shard graph`: Algorithm 1 over the candidates of every block, the graph, its communities and
/// the outliers. The blocks keep only their smallest candidates; when the selection reaches past what a
/// block kept, the step stops and names the block to run again with more.
pub fn graph(cfg: &StepConfig) -> Result<()> {
    let (plan, _, pool) = cfg.open()?;
    if plan.settings.method != Method::Codegraph {
        return Err(Error::bad_argument(
            "--work",
            "the plan scores with MuSc, which has no graph: run `mri-ad shard finish` after the distances",
        ));
    }
    pool.install(|| graph_in_pool(cfg, &plan))
}

fn graph_in_pool(cfg: &StepConfig, plan: &Plan) -> Result<()> {
    use rayon::prelude::*;
    let started = Instant::now();
    let n = plan.n();
    let mut merged: Vec<LinkCandidate> = Vec::new();
    let mut neighbours: Vec<u32> = Vec::new();
    let mut total = 0u64;
    let mut nl = 0;
    // Per block that kept fewer than all its candidates: its largest kept one and its record.
    let mut limits: Vec<(LinkCandidate, PathBuf, usize)> = Vec::new();
    for b in 0..plan.blocks {
        let rel = record_path("links", b, None);
        let record = read_record(
            &cfg.work,
            &rel,
            plan,
            "links",
            Some(b),
            None,
            &remedy(plan, &cfg.work, "links", Some(b), None),
        )?;
        let path = cfg.work.join(&rel);
        let kept = record.details["kept"].as_u64().unwrap_or(0) as usize;
        nl = record.details["graph_views"].as_u64().unwrap_or(0) as usize;
        let stem = format!("links/block{}", b + 1);
        let file = |name: &str| record.verified(&cfg.work, &path, &format!("{stem}.{name}.npy"));
        let keys: Vec<f64> = store::read_array(&file("keys")?, &[kept])?;
        let cases: Vec<u32> = store::read_array(&file("cases")?, &[kept])?;
        let positions: Vec<u32> = store::read_array(&file("positions")?, &[kept])?;
        let ranks: Vec<u32> = store::read_array(&file("ranks")?, &[kept])?;
        let nb: Vec<u32> = store::read_array(&file("neighbours")?, &[kept, nl])?;
        if let Some(bad) = cases.iter().chain(&nb).find(|&&c| c as usize >= n) {
            return Err(Error::bad_input(
                &path,
                format!("names case {bad}, the batch has {n}"),
            ));
        }
        let base = neighbours.len() as u32;
        let block: Vec<LinkCandidate> = (0..kept)
            .map(|i| LinkCandidate {
                key: keys[i],
                case: cases[i],
                position: positions[i],
                rank: ranks[i],
                first: base + (i * nl) as u32,
            })
            .collect();
        neighbours.extend(nb);
        total += record.details["candidates"].as_u64().unwrap_or(0);
        if record.details["truncated"].as_bool().unwrap_or(false) {
            if let Some(last) = block.last() {
                limits.push((*last, path.clone(), kept));
            }
        }
        merged.extend(block);
    }
    merged.par_sort_unstable_by(link_order);
    // The merged list is the batch's sorted candidate list up to the first candidate after the smallest
    // of the truncated blocks' last kept ones.
    let safe = limits
        .iter()
        .map(|(last, _, _)| merged.partition_point(|c| link_order(c, last).is_le()))
        .min()
        .unwrap_or(merged.len());
    let params = batch::graph_params(&plan.settings, n, plan.k());
    let selection = links::select_links_by(
        &mut merged,
        &link_order,
        n,
        params.coverage,
        params.link_batch,
        |c, connect| {
            for l in 0..nl {
                connect(c.case as usize, neighbours[c.first as usize + l] as usize);
            }
        },
    );
    if selection.n_selected > safe {
        let (_, path, kept) = limits
            .iter()
            .min_by(|x, y| link_order(&x.0, &y.0))
            .expect("a truncated block");
        return Err(Error::Resource(format!(
            "{}: the block kept its {kept} smallest link candidates and the link selection reached past \
             them ({} selected of the batch's merged list): run its `mri-ad shard links` again with \
             --link-candidates {} (and every block whose record says truncated)",
            path.display(),
            selection.n_selected,
            kept * 4
        )));
    }
    let edges = codegraph::selected_edges(&selection);
    let detector = Leiden {
        seed: plan.settings.seed,
        restarts: plan.settings.leiden_restarts,
        max_iterations: plan.settings.leiden_iterations,
    };
    let (resolution, mut communities, fence) =
        codegraph::find_communities(n, &edges, &params, &detector);
    let outliers = codegraph::outlier_order(&communities);
    communities
        .iter_mut()
        .for_each(|c| c.members.sort_unstable());
    let step = GraphStep {
        report: GraphReport {
            r_ref: params.r_ref,
            resolution,
            links_selected: selection.n_selected,
            link_candidates: total as usize,
            coverage: selection.coverage,
            edges,
            communities,
            density_fence: fence,
            filtering: Vec::new(),
        },
        outliers,
    };
    let mut record = StepRecord::new(plan, "graph", None, None);
    record.details = serde_json::to_value(&step).map_err(Error::internal)?;
    std::fs::create_dir_all(cfg.work.join("graph"))
        .map_err(|e| Error::io(cfg.work.join("graph"), e))?;
    record.write(&cfg.work, GRAPH_RECORD)?;
    cfg.report.say(format!(
        "graph: {} links selected of {total} candidates, {} outlier communities ({} rounds of `mri-ad \
         shard ratios` follow) in {:.1} s",
        selection.n_selected,
        step.outliers.len(),
        step.outliers.len(),
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// One round of Algorithm 2 decided: the threshold (None: no ratio outside the community, the round is
/// skipped as in the single-process scorer) and the tokens it excludes.
struct Outcome {
    threshold: Option<f64>,
    excluded: Vec<(u32, u32)>,
}

/// Round `round`'s outcome from every block's ratio files.
fn round_outcome(work: &Path, plan: &Plan, round: usize) -> Result<Outcome> {
    let mut outside = Vec::new();
    let mut inside = Vec::new();
    for b in 0..plan.blocks {
        let rel = record_path("ratios", b, Some(round));
        let record = read_record(
            work,
            &rel,
            plan,
            "ratios",
            Some(b),
            Some(round),
            &remedy(plan, work, "ratios", Some(b), Some(round)),
        )?;
        let path = work.join(&rel);
        let stem = format!("rounds/{round}/block{}", b + 1);
        let count = |key: &str| record.details[key].as_u64().unwrap_or(0) as usize;
        let (n_out, n_in) = (count("outside"), count("inside"));
        let file = |name: &str| record.verified(work, &path, &format!("{stem}.{name}.npy"));
        outside.extend(store::read_array::<f64>(&file("outside")?, &[n_out])?);
        let cases: Vec<u32> = store::read_array(&file("inside_cases")?, &[n_in])?;
        let positions: Vec<u32> = store::read_array(&file("inside_positions")?, &[n_in])?;
        let ratios: Vec<f64> = store::read_array(&file("inside_ratios")?, &[n_in])?;
        for ((a, p), q) in cases.into_iter().zip(positions).zip(ratios) {
            if a as usize >= plan.n() || p as usize >= plan.positions {
                return Err(Error::bad_input(
                    &path,
                    format!("names token ({a}, {p}) outside the batch"),
                ));
            }
            inside.push((a, p, q));
        }
    }
    let threshold = percentile_linear(&outside, plan.settings.dependency_percentile);
    let excluded = match threshold {
        Some(t) => inside
            .iter()
            .filter(|x| x.2 > t)
            .map(|x| (x.0, x.1))
            .collect(),
        None => Vec::new(),
    };
    Ok(Outcome {
        threshold,
        excluded,
    })
}

/// The tokens excluded by each of rounds `1..=upto` that had a threshold, in round order.
pub fn round_exclusions(work: &Path, plan: &Plan, upto: usize) -> Result<Vec<Vec<(u32, u32)>>> {
    let mut out = Vec::new();
    for t in 1..=upto {
        let o = round_outcome(work, plan, t)?;
        if o.threshold.is_some() {
            out.push(o.excluded);
        }
    }
    Ok(out)
}

/// What `mri-ad shard join` needs.
#[derive(Debug, Clone)]
pub struct JoinConfig {
    pub work: PathBuf,
    pub out: PathBuf,
    pub force: bool,
    pub plots: bool,
    pub report: crate::messages::Reporter,
}

/// `mri-ad shard join`: the run folder of `score --tokens` on the plan's token folder from every block's
/// final files (and, with CoDeGraph, the graph and the rounds).
pub fn join(cfg: &JoinConfig) -> Result<()> {
    let started = Instant::now();
    let plan = Plan::read(&cfg.work)?;
    let result = joined_result(&cfg.work, &plan)?;
    let request = plan::run_request(&plan)?;
    let token_paths: Vec<&Path> = plan.cases.iter().map(|c| c.path.as_path()).collect();
    if crate::run::folder::replaces_another_run(&cfg.out, cfg.force, &request)? {
        crate::run::folder::check_inputs_outside_outputs(&cfg.out, &token_paths)?;
    }
    let _lock = crate::run::folder::prepare_run_folder(
        &cfg.out,
        cfg.force,
        &request,
        &crate::run::folder::standard_outputs(),
        &cfg.report,
    )?;
    let names: Vec<String> = plan.cases.iter().map(|c| c.case.clone()).collect();
    let groups: Vec<String> = plan
        .cases
        .iter()
        .map(|c| c.group.clone().unwrap_or_else(|| "query".into()))
        .collect();
    let mut providers = std::collections::BTreeMap::new();
    for c in &plan.cases {
        crate::formats::tokens::count_provider(&mut providers, c.provider.as_deref());
    }
    let details = json!({
        "work": crate::formats::absolute(&cfg.work),
        "blocks": plan.blocks,
        "run_id": plan.run_id,
        "tokens": plan.tokens,
        "views": plan.views,
        "positions": plan.positions,
        "grid": plan.grid,
        "dim": plan.dim,
        "token_providers": providers,
    });
    crate::pipeline::scored_tokens::write_token_run(
        &crate::pipeline::scored_tokens::TokenRun {
            command: "shard join",
            out: &cfg.out,
            names: &names,
            groups: &groups,
            result: &result,
            score: &plan.settings,
            dim: plan.dim,
            plots: cfg.plots,
            details,
            read_seconds: 0.0,
        },
        started,
        &cfg.report,
    )
}

/// The [`ScoreResult`] of the whole batch from the blocks' files.
pub fn joined_result(work: &Path, plan: &Plan) -> Result<ScoreResult> {
    let (n, m) = (plan.n(), plan.positions);
    let width = n.saturating_sub(2);
    let mut token_scores = Vec::with_capacity(n);
    let mut scaling = ScalingCurve::empty(width, plan.views, &scaling_rule(plan));
    let (mut pairs, mut kernel) = (0f64, 0f64);
    let mut timings = Vec::new();
    for b in 0..plan.blocks {
        let rel = record_path("finish", b, None);
        let record = read_record(
            work,
            &rel,
            plan,
            "finish",
            Some(b),
            None,
            &remedy(plan, work, "finish", Some(b), None),
        )?;
        let path = work.join(&rel);
        let cases = plan.block_cases(b).len();
        let stem = format!("final/block{}", b + 1);
        let file = |name: &str| record.verified(work, &path, &format!("{stem}.{name}.npy"));
        let scores: Vec<f32> = store::read_array(&file("scores")?, &[cases, m])?;
        let shape = [cases, width];
        let sn: Vec<f64> = store::read_array(&file("sum_normal")?, &shape)?;
        let cn: Vec<u64> = store::read_array(&file("count_normal")?, &shape)?;
        let sf: Vec<f64> = store::read_array(&file("sum_flagged")?, &shape)?;
        let cf: Vec<u64> = store::read_array(&file("count_flagged")?, &shape)?;
        for c in 0..cases {
            token_scores.push(scores[c * m..(c + 1) * m].to_vec());
            let r = c * width..(c + 1) * width;
            scaling.merge(&ScalingCurve {
                sum_normal: sn[r.clone()].to_vec(),
                count_normal: cn[r.clone()].to_vec(),
                sum_flagged: sf[r.clone()].to_vec(),
                count_flagged: cf[r].to_vec(),
                views: plan.views,
                flagged_rule: scaling_rule(plan),
            });
        }
        timings.push(crate::score::Timing {
            stage: format!("block {}: final scores", b + 1),
            seconds: record.details["seconds"].as_f64().unwrap_or(0.0),
        });
        let job = read_record(
            work,
            &record_path("distances", b, None),
            plan,
            "distances",
            Some(b),
            None,
            &remedy(plan, work, "distances", Some(b), None),
        )?;
        pairs += job.details["token_pairs_compared"].as_f64().unwrap_or(0.0);
        kernel += job.details["kernel_seconds"].as_f64().unwrap_or(0.0);
        timings.push(crate::score::Timing {
            stage: format!("job {}: distances", b + 1),
            seconds: job.details["seconds"].as_f64().unwrap_or(0.0),
        });
    }
    let mut excluded = vec![Vec::new(); n];
    let graph = match plan.settings.method {
        Method::Musc => None,
        Method::Codegraph => {
            let step = read_graph(work, plan)?;
            let mut report = step.report;
            for (t, members) in step.outliers.iter().enumerate() {
                let o = round_outcome(work, plan, t + 1)?;
                let Some(threshold) = o.threshold else {
                    continue;
                };
                for &(a, p) in &o.excluded {
                    excluded[a as usize].push(p);
                }
                report.filtering.push(CommunityFilter {
                    members: members.clone(),
                    threshold,
                    excluded: o.excluded.len(),
                });
            }
            Some(report)
        }
    };
    excluded
        .iter_mut()
        .for_each(|e: &mut Vec<u32>| e.sort_unstable());
    let k = plan.k();
    Ok(ScoreResult {
        token_scores,
        excluded,
        subsets: vec![Subset {
            cases: (0..n).collect(),
            k,
            graph: graph.clone(),
        }],
        graph,
        timings,
        k,
        active_tokens: plan.cases.iter().map(|c| c.rows).sum(),
        total_tokens: n * m,
        memory_estimate: 0,
        pairs_compared: pairs,
        kernel_seconds: kernel,
        scaling,
    })
}
