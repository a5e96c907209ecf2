//! Writers of the run folder (DESIGN.md "Run folder"): `scores.csv`, `token_scores/<case>.npy`,
//! `graph.json`, `summary.json`, `config.toml`, the plots of `plots/` ([`plots`], [`write_batch_plots`])
//! and `index.html` ([`html`]).
//!
//! Every file is written atomically (temporary name, then rename). Traps: case names go into CSV quoted
//! when they contain a comma, a quote or a newline; indices in `graph.json` refer to the `cases` array.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::{json, Value};

use crate::formats::atomic;
use crate::run::outdir;
use crate::score::codegraph::GraphReport;
use crate::score::{ScoreResult, Subset};
use crate::Result;

pub mod html;
pub mod plots;

/// One row of `scores.csv` (every run kind).
#[derive(Debug, Clone)]
pub struct ScoreRow {
    pub case: String,
    pub group: String,
    pub score: Score,
    pub label: Option<u8>,
    pub community: Option<usize>,
    /// 2D: the raw image score (the map's maximum), column `raw_score`.
    pub raw_score: Option<f64>,
    /// A 2D root's table of all classes: the case's class, column `class`.
    pub class: Option<String>,
}

/// A case's score as `scores.csv` prints it, at the precision it was computed in (shortest round trip):
/// the maximum token score (f32) of `score`, the RsCIN image score (f64) of `score2d`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Score {
    F32(f32),
    F64(f64),
}

impl Score {
    /// The value.
    pub fn get(self) -> f64 {
        match self {
            Score::F32(v) => v as f64,
            Score::F64(v) => v,
        }
    }
}

impl std::fmt::Display for Score {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Score::F32(v) => write!(f, "{v}"),
            Score::F64(v) => write!(f, "{v}"),
        }
    }
}

/// The rows of `scores.csv`: the patient score is the case's maximum token score.
pub fn score_rows(
    names: &[String],
    groups: &[String],
    labels: &[Option<u8>],
    result: &ScoreResult,
) -> Vec<ScoreRow> {
    let community = result
        .graph
        .as_ref()
        .map(|g| community_of_case(g, names.len()))
        .unwrap_or_else(|| vec![None; names.len()]);
    (0..names.len())
        .map(|a| ScoreRow {
            case: names[a].clone(),
            group: groups[a].clone(),
            score: Score::F32(
                result.token_scores[a]
                    .iter()
                    .copied()
                    .fold(f32::NEG_INFINITY, f32::max),
            ),
            label: labels[a],
            community: community[a],
            raw_score: None,
            class: None,
        })
        .collect()
}

/// The histogram group of a row: its group, with the lesion label when known (`query · lesion`).
fn plot_group(r: &ScoreRow) -> String {
    match (r.label, r.group.as_str()) {
        (Some(1), g) => format!("{g} · lesion"),
        (Some(0), g) if g != "healthy" => format!("{g} · no lesion"),
        (_, g) => g.to_string(),
    }
}

/// Writes the batch plots into `<out>/plots/`: `roc.png` (when some case has a label), `histogram.png`,
/// `scaling.png`, `graph.png` (CoDeGraph). Returns `(relative path, caption)` of each file written, for
/// the index page. Void tokens (score exactly 0) are left out of the token histogram.
pub fn write_batch_plots(
    out: &Path,
    rows: &[ScoreRow],
    result: &ScoreResult,
) -> Result<Vec<(String, String)>> {
    let dir = outdir::subdir(out, "plots")?;
    let mut written = Vec::new();
    if rows.iter().any(|r| r.label.is_some()) {
        let scores: Vec<f32> = rows.iter().map(|r| r.score.get() as f32).collect();
        let labels: Vec<bool> = rows.iter().map(|r| r.label == Some(1)).collect();
        plots::roc_curve(&dir.join("roc.png"), &scores, &labels)?;
        written.push(("plots/roc.png".into(), "patient-level ROC".into()));
    }
    // Groups in order of first appearance.
    let mut names: Vec<String> = Vec::new();
    for r in rows {
        let g = plot_group(r);
        if !names.contains(&g) {
            names.push(g);
        }
    }
    let mut patients: Vec<(String, Vec<f32>)> =
        names.iter().map(|n| (n.clone(), Vec::new())).collect();
    let mut tokens = patients.clone();
    for (r, t) in rows.iter().zip(&result.token_scores) {
        let gi = names
            .iter()
            .position(|n| *n == plot_group(r))
            .expect("listed");
        patients[gi].1.push(r.score.get() as f32);
        tokens[gi].1.extend(t.iter().copied().filter(|&v| v != 0.0));
    }
    plots::score_histograms(&dir.join("histogram.png"), &patients, &tokens)?;
    written.push((
        "plots/histogram.png".into(),
        "score histograms per group".into(),
    ));
    plots::similarity_scaling(&dir.join("scaling.png"), &result.scaling)?;
    written.push((
        "plots/scaling.png".into(),
        "similarity scaling: mean growth rate vs rank (log-log)".into(),
    ));
    if let Some(g) = &result.graph {
        let plot = plots::GraphPlot {
            names: rows.iter().map(|r| r.case.clone()).collect(),
            groups: rows.iter().map(|r| r.group.clone()).collect(),
            edges: g.edges.clone(),
            communities: g
                .communities
                .iter()
                .map(|c| (c.members.clone(), c.outlier))
                .collect(),
            note: format!(
                "resolution γ = {}, links selected {} of {} candidates, coverage {:.2}, r_ref = {}",
                g.resolution
                    .map(|r| format!("{r:.4}"))
                    .unwrap_or_else(|| "none".into()),
                g.links_selected,
                g.link_candidates,
                g.coverage,
                g.r_ref
            ),
        };
        plots::volume_graph(&dir.join("graph.png"), &plot)?;
        written.push((
            "plots/graph.png".into(),
            "volume graph and communities".into(),
        ));
    }
    Ok(written)
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The order `scores.csv` lists the rows in, with each row's rank: highest score first (rank 1), ties in
/// batch order. A 2D root's table of all classes ranks within each class, the classes in order of first
/// appearance.
pub fn ranked(rows: &[ScoreRow]) -> Vec<(usize, &ScoreRow)> {
    let mut classes: Vec<Option<&str>> = Vec::new();
    for r in rows {
        if !classes.contains(&r.class.as_deref()) {
            classes.push(r.class.as_deref());
        }
    }
    let mut out = Vec::with_capacity(rows.len());
    for class in classes {
        let mut members: Vec<&ScoreRow> = rows
            .iter()
            .filter(|r| r.class.as_deref() == class)
            .collect();
        // A stable sort keeps batch order among equal scores; total_cmp puts any NaN last.
        members.sort_by(|a, b| b.score.get().total_cmp(&a.score.get()));
        out.extend(members.into_iter().enumerate().map(|(i, r)| (i + 1, r)));
    }
    out
}

/// Writes `scores.csv`: `rank,case,group,score,label,community`, then `raw_score` when the rows have one
/// (2D) and `class` when they have one (a 2D root's table); the rows sorted by score, highest first
/// ([`ranked`]).
pub fn write_scores_csv(path: &Path, rows: &[ScoreRow]) -> Result<()> {
    let raw = rows.iter().any(|r| r.raw_score.is_some());
    let class = rows.iter().any(|r| r.class.is_some());
    let mut text = String::from("rank,case,group,score,label,community");
    text.push_str(if raw { ",raw_score" } else { "" });
    text.push_str(if class { ",class\n" } else { "\n" });
    for (rank, r) in ranked(rows) {
        let _ = write!(
            text,
            "{rank},{},{},{},{},{}",
            csv_field(&r.case),
            csv_field(&r.group),
            r.score,
            r.label.map(|l| l.to_string()).unwrap_or_default(),
            r.community.map(|c| c.to_string()).unwrap_or_default()
        );
        if raw {
            let _ = write!(
                text,
                ",{}",
                r.raw_score.map(|v| v.to_string()).unwrap_or_default()
            );
        }
        if class {
            let _ = write!(text, ",{}", csv_field(r.class.as_deref().unwrap_or("")));
        }
        text.push('\n');
    }
    atomic::write_bytes(path, text.as_bytes())
}

/// How many cases the volume metrics average over: (lesion cases, lesion-free cases).
fn case_counts(metrics: &Value) -> (usize, usize) {
    let count = |key: &str| metrics[key].as_object().map_or(0, |o| o.len());
    let lesion = count("voxel_ap_per_case");
    (lesion, count("dice_per_case").saturating_sub(lesion))
}

/// The metrics of a volume run, in the order a reader needs them: the lesion cases' outlines first, then
/// the patient ranking, then the pooled voxel and token figures; each row says what it averages over.
/// Shared by `index.html` and the terminal summary of `score`.
pub fn volume_metric_rows(metrics: &Value) -> Vec<(String, &'static str)> {
    let (l, h) = case_counts(metrics);
    let n = l + h;
    vec![
        (format!("Dice at t*, mean over the {l} lesion cases"), "dice_mean_lesion_cases"),
        (
            format!("voxel AP, mean over the {l} lesion cases (each on its own map)"),
            "voxel_ap_mean_lesion_cases",
        ),
        (
            format!("hottest voxel inside the lesion: fraction of the {l} lesion cases"),
            "hottest_voxel_in_lesion_fraction",
        ),
        (
            format!("Dice at the voxel F1-max threshold, mean over the {l} lesion cases"),
            "dice_at_voxel_threshold_mean_lesion_cases",
        ),
        (
            format!("token-grid Dice at t*, mean over the {l} lesion cases"),
            "token_dice_mean_lesion_cases",
        ),
        (
            format!("patient AUROC ({l} lesion against {h} lesion-free cases, by score)"),
            "patient_auroc",
        ),
        (format!("patient F1-max (the same {n} cases)"), "patient_f1_max"),
        (format!("voxel AUROC (every cube voxel of the {n} cases)"), "voxel_auroc"),
        (format!("voxel F1-max (every cube voxel of the {n} cases)"), "voxel_f1_max"),
        ("voxel F1-max threshold".to_string(), "voxel_f1_threshold"),
        (format!("token F1-max (every token of the {n} cases)"), "token_f1_max"),
        ("t*: the Dice threshold (the token F1-max threshold)".to_string(), "dice_threshold"),
        (
            format!("Dice at t*, mean over all {n} cases (a lesion-free case counts 1 if clean, 0 if not)"),
            "dice_mean",
        ),
    ]
}

/// Writes `token_scores/<case>.npy` for every case.
pub fn write_token_scores(out: &Path, names: &[String], scores: &[Vec<f32>]) -> Result<()> {
    let dir = outdir::subdir(out, "token_scores")?;
    for (name, s) in names.iter().zip(scores) {
        atomic::write_npy_f32(&dir.join(format!("{name}.npy")), s)?;
    }
    Ok(())
}

/// The community index of every case (position in `graph.communities`).
pub fn community_of_case(graph: &GraphReport, n: usize) -> Vec<Option<usize>> {
    let mut out = vec![None; n];
    for (ci, c) in graph.communities.iter().enumerate() {
        for &m in &c.members {
            out[m] = Some(ci);
        }
    }
    out
}

/// The `graph.json` document.
///
/// With subset division (`subsets.len() > 1`) the indices are batch indices, `resolution` is null, and
/// `subsets` lists each part's cases, k, resolution, link counts, coverage, reference rank and fence.
pub fn graph_json(
    graph: &GraphReport,
    names: &[String],
    excluded: &[Vec<u32>],
    subsets: &[Subset],
) -> Value {
    let name_list = |idx: &[usize]| idx.iter().map(|&i| names[i].clone()).collect::<Vec<_>>();
    let communities: Vec<Value> = graph
        .communities
        .iter()
        .map(|c| {
            json!({
                "members": name_list(&c.members),
                "member_indices": c.members,
                "size": c.members.len(),
                "internal_weight": c.internal_weight,
                "density": c.density,
                "fence": c.fence,
                "outlier": c.outlier,
            })
        })
        .collect();
    let filtering: Vec<Value> = graph
        .filtering
        .iter()
        .map(|f| {
            json!({
                "members": name_list(&f.members),
                "dependency_threshold": f.threshold,
                "tokens_excluded": f.excluded,
            })
        })
        .collect();
    let excluded_map: serde_json::Map<String, Value> = names
        .iter()
        .zip(excluded)
        .map(|(n, e)| (n.clone(), json!(e)))
        .collect();
    let parts: Vec<Value> = subsets
        .iter()
        .map(|p| {
            let g = p.graph.as_ref();
            json!({
                "cases": p.cases.iter().map(|&i| names[i].clone()).collect::<Vec<_>>(),
                "msm_k": p.k,
                "resolution": g.and_then(|g| g.resolution),
                "links_selected": g.map(|g| g.links_selected),
                "link_candidates": g.map(|g| g.link_candidates),
                "coverage": g.map(|g| g.coverage),
                "reference_rank": g.map(|g| g.r_ref),
                "density_fence": g.and_then(|g| g.density_fence),
            })
        })
        .collect();
    let mut doc = json!({
        "cases": names,
        "resolution": graph.resolution,
        "links_selected": graph.links_selected,
        "link_candidates": graph.link_candidates,
        "coverage": graph.coverage,
        "reference_rank": graph.r_ref,
        "edges": graph.edges.iter().map(|&(i, j, w)| json!([i, j, w])).collect::<Vec<_>>(),
        "communities": communities,
        "density_fence": graph.density_fence,
        "filtering": filtering,
        "excluded": excluded_map,
    });
    if subsets.len() > 1 {
        doc["subsets"] = json!(parts);
    }
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(case: &str, score: f32, class: Option<&str>) -> ScoreRow {
        ScoreRow {
            case: case.into(),
            group: "query".into(),
            score: Score::F32(score),
            label: None,
            community: None,
            raw_score: None,
            class: class.map(String::from),
        }
    }

    fn order(rows: &[ScoreRow]) -> Vec<(usize, &str)> {
        ranked(rows)
            .into_iter()
            .map(|(rank, r)| (rank, r.case.as_str()))
            .collect()
    }

    #[test]
    fn rows_are_ranked_highest_first_with_ties_in_batch_order() {
        let rows = [
            row("a", 0.2, None),
            row("b", 0.5, None),
            row("c", 0.2, None),
        ];
        assert_eq!(order(&rows), [(1, "b"), (2, "a"), (3, "c")]);
    }

    #[test]
    fn a_table_of_classes_ranks_within_each_class() {
        let rows = [
            row("x1", 0.1, Some("x")),
            row("y1", 0.9, Some("y")),
            row("x2", 0.3, Some("x")),
        ];
        assert_eq!(order(&rows), [(1, "x2"), (2, "x1"), (1, "y1")]);
    }

    #[test]
    fn scores_csv_starts_with_the_rank() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("scores.csv");
        write_scores_csv(&p, &[row("a", 0.25, None), row("b", 0.5, None)]).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(
            text,
            "rank,case,group,score,label,community\n1,b,query,0.5,,\n2,a,query,0.25,,\n"
        );
    }
}
