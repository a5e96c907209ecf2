//! Writers of the run folder (DESIGN.md "Run folder"): `scores.csv`, `token_scores/<case>.npy`,
//! `graph.json`, `summary.json`, `config.toml`.
//!
//! Every file is written atomically (temporary name, then rename). Traps: case names go into CSV quoted
//! when they contain a comma, a quote or a newline; indices in `graph.json` refer to the `cases` array.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::{json, Value};

use crate::io::{atomic, outdir};
use crate::score::codegraph::GraphReport;
use crate::score::Subset;
use crate::Result;

/// One row of `scores.csv`.
#[derive(Debug, Clone)]
pub struct ScoreRow {
    pub case: String,
    pub group: String,
    pub score: f32,
    pub label: Option<u8>,
    pub community: Option<usize>,
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Writes `scores.csv` (`case,group,score,label,community`).
pub fn write_scores_csv(path: &Path, rows: &[ScoreRow]) -> Result<()> {
    let mut text = String::from("case,group,score,label,community\n");
    for r in rows {
        let _ = writeln!(
            text,
            "{},{},{},{},{}",
            csv_field(&r.case),
            csv_field(&r.group),
            r.score,
            r.label.map(|l| l.to_string()).unwrap_or_default(),
            r.community.map(|c| c.to_string()).unwrap_or_default()
        );
    }
    atomic::write_bytes(path, text.as_bytes())
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
