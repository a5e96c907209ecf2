//! `index.html` of a run folder: one self-contained page (inline CSS, no script, no external asset) that
//! shows the metrics, the plots of `plots/` and the score table, with relative links to each case's QC
//! montage, anomaly map, mask and token scores.
//!
//! Input: the rows of `scores.csv`, the `summary.json` document as written, and which files this run wrote
//! ([`IndexLinks`]); nothing is read from disk, so a plot left over from an earlier run is never shown.
//! Output: `<run>/index.html`, written atomically.
//!
//! Traps: case names are escaped for HTML and percent-encoded in links; the table is in `scores.csv`'s
//! order ([`super::ranked`]: highest score first, ties in batch order) so the page is deterministic.
//! Images are shown at their drawn size, never wider than the page (the headless-Chromium check in
//! `scripts/oracles/check_page.py` measures it), so their text stays readable.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

use super::ScoreRow;
use crate::formats::atomic;
use crate::run::summary::{Metrics, Summary};
use crate::Result;

/// Which files of the run folder the page may link.
#[derive(Debug, Clone, Default)]
pub struct IndexLinks {
    /// Batch plots, paths relative to the run folder (e.g. `plots/roc.png`), with a caption each.
    pub plots: Vec<(String, String)>,
    /// `plots/qc/<case>.png` was written for every case.
    pub qc: bool,
    /// `maps/<case>_anomaly.nii.gz` exists for every case.
    pub maps: bool,
    /// `masks/<case>_mask.nii.gz` exists for every case.
    pub masks: bool,
}

/// Escapes text for HTML element content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes a path segment (everything but unreserved characters).
pub fn url_segment(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn number(v: &Value) -> String {
    match v {
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => format!("{f:.4}"),
            _ => n.to_string(),
        },
        Value::Null => "–".into(),
        Value::String(s) => escape(s),
        other => escape(&other.to_string()),
    }
}

/// The page as a string.
pub fn render_index(rows: &[ScoreRow], summary: &Summary, links: &IndexLinks) -> String {
    let mut h = String::new();
    write_head(&mut h, summary, rows.len());
    let metrics = summary
        .metrics
        .as_ref()
        .map(|m| serde_json::to_value(m).expect("metrics serialise"))
        .unwrap_or(Value::Null);
    write_metrics(&mut h, summary, &metrics);
    write_scoring(&mut h, summary);
    write_plots(&mut h, links);
    let ranked = super::ranked(rows);
    write_case_table(&mut h, &ranked, &metrics["dice_per_case"], links);
    if links.qc {
        let order: Vec<&ScoreRow> = ranked.iter().map(|(_, r)| *r).collect();
        write_qc_montages(&mut h, &order);
    }
    if summary.volume_metrics().is_some() {
        write_glossary(&mut h);
    }
    write_footer(&mut h, summary);
    h
}

/// The document head (title, inline style) and the run's heading line.
fn write_head(h: &mut String, summary: &Summary, cases: usize) {
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>mri-ad run: {} cases</title>\n\
         <style>\nbody{{font-family:sans-serif;margin:1.5em;color:#222}}\ntable{{border-collapse:collapse;margin:0.5em 0}}\n\
         td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left}}\nth{{background:#eee}}\ntd.num{{text-align:right;font-variant-numeric:tabular-nums}}\n\
         tr.lesion{{background:#fff1f0}}\nimg.plot{{max-width:100%;height:auto;border:1px solid #ddd;margin:4px}}\nfigure{{display:block;margin:10px 0}}\n\
         dd{{margin:0 0 0.5em 1.5em}}\ncode.cmd{{display:block;white-space:pre-wrap;background:#f6f6f6;padding:6px;border:1px solid #ddd}}\n\
         figcaption{{font-size:90%;color:#555}}\n</style>\n</head>\n<body>\n",
        cases
    );
    let _ = writeln!(
        h,
        "<h1>mri-ad run</h1>\n<p>{} ({} cases), mri-ad {}, total {:.1} s.</p>",
        escape(summary.command.as_str()),
        cases,
        escape(&summary.mri_ad_version),
        summary.total_seconds
    );
    if let Some(line) = &summary.command_line {
        let _ = writeln!(
            h,
            "<p>The command that ran{}:</p>\n<code class=\"cmd\">{}</code>",
            summary
                .working_directory
                .as_ref()
                .map(|d| format!(", in <code>{}</code>", escape(d)))
                .unwrap_or_default(),
            escape(line)
        );
    }
}

/// The metrics table (with labels): of images or of volumes (`metrics`: the summary's metrics as JSON).
fn write_metrics(h: &mut String, summary: &Summary, metrics: &Value) {
    if let Some(m) = summary.metrics.as_ref().and_then(Metrics::images) {
        write_image_metrics(h, m);
    } else if summary.volume_metrics().is_some() {
        write_volume_metrics(h, metrics);
    } else {
        h.push_str("<p>No metrics: the run had no lesion labels.</p>\n");
    }
}

/// One row of a metrics table.
fn write_metric_row(h: &mut String, label: &str, value: &Value) {
    let _ = writeln!(
        h,
        "<tr><th>{label}</th><td class=\"num\">{}</td></tr>",
        number(value)
    );
}

/// The metrics table of an image run.
fn write_image_metrics(h: &mut String, m: &crate::run::summary::ImageMetrics) {
    h.push_str("<h2>Metrics</h2>\n<table>\n");
    for (label, value) in [
        ("image AUROC (score)", m.image.auroc),
        ("image AP (score)", m.image.ap),
        ("image F1-max (score)", m.image.f1_max),
        ("image AUROC (map maximum)", m.image_raw_max.auroc),
        ("pixel AUROC", m.pixel.auroc),
        ("pixel AP", m.pixel.ap),
        ("pixel F1-max", m.pixel.f1_max),
        ("AUPRO", m.aupro),
    ] {
        write_metric_row(h, label, &serde_json::json!(value));
    }
    h.push_str("</table>\n");
}

/// The metrics table of a volume run and its space (`metrics`: the volume metrics as JSON).
fn write_volume_metrics(h: &mut String, metrics: &Value) {
    h.push_str("<h2>Metrics</h2>\n<table>\n");
    for (label, key) in super::volume_metric_rows(metrics) {
        write_metric_row(h, &escape(&label), &metrics[key]);
    }
    let _ = writeln!(
        h,
        "</table>\n<p>Computed on each case's {} (see the glossary below).</p>",
        escape(metrics["space"].as_str().unwrap_or("cube"))
    );
}

/// The glossary of the page's terms (volume runs).
fn write_glossary(h: &mut String) {
    h.push_str("<h2 id=\"glossary\">Glossary</h2>\n<dl>\n");
    for (term, text) in GLOSSARY {
        let _ = writeln!(h, "<dt><b>{term}</b></dt><dd>{text}</dd>");
    }
    h.push_str("</dl>\n");
}

/// The terms the metrics and tables use, in plain words.
const GLOSSARY: [(&str, &str); 11] = [
    ("score", "a case's highest token score: how anomalous its most anomalous place is. The table ranks the cases by it."),
    ("token", "one cube of 14 voxels on a side of the resampled S³ volume (16³ tokens at S = 224); the method scores tokens, the map is their scores interpolated to voxels."),
    ("lesion case / lesion-free case", "a case whose label map holds a lesion voxel, or none (healthy cases, and query cases with an empty label map)."),
    ("AUROC", "the probability that a random positive (lesion case, lesion voxel) scores above a random negative; 0.5 is chance, 1 is a perfect ranking."),
    ("AP", "average precision: the area under the precision-recall curve; for one lesion case, of its own map against its own lesion, with no threshold shared across cases."),
    ("F1-max", "the best F1 (harmonic mean of precision and recall) over all thresholds."),
    ("t*", "the one threshold every map is cut at for the Dice: the F1-max threshold of the token scores against the token labels (a token is positive when any of its voxels is lesion), as the evaluation protocol (ALGORITHM.md §8.3) defines it."),
    ("Dice", "overlap of the map cut at t* with the lesion, 2|P∩G| / (|P| + |G|). A lesion-free case has no lesion to overlap: it counts 1 when nothing reaches t* (clean), 0 otherwise (false alarm); the table shows “clean” or “false alarm” for them, and the lesion-case means leave them out."),
    ("hottest voxel", "the voxel where a case's map is highest; the QC montage marks it and gives it in the input's voxel indices and in world millimetres."),
    ("community / outlier community", "CoDeGraph's groups of cases that are each other's nearest matches; an outlier community is a group denser than the others by Tukey's fence, taken as cases sharing a recurring anomaly, whose tokens are then removed from each other's references."),
    ("MuSc / CoDeGraph", "MuSc scores each token by its distance to its nearest tokens in every other case; CoDeGraph first finds outlier communities so that a recurring lesion does not vouch for itself."),
];

/// The scoring facts (method, tokens excluded, outlier communities), when the run scored.
fn write_scoring(h: &mut String, summary: &Summary) {
    if let Some(scoring) = &summary.scoring {
        let _ = writeln!(
            h,
            "<p>Method <b>{}</b>; tokens excluded by CoDeGraph: {}; outlier communities: {}.</p>",
            number(&serde_json::json!(scoring.config.method)),
            scoring.excluded_tokens,
            scoring
                .outlier_communities
                .map_or("–".to_string(), |n| n.to_string())
        );
    }
}

/// The batch plots with their captions, when there are any.
fn write_plots(h: &mut String, links: &IndexLinks) {
    if links.plots.is_empty() {
        return;
    }
    h.push_str("<h2>Plots</h2>\n<div>\n");
    for (file, caption) in &links.plots {
        let _ = writeln!(
            h,
            "<figure><a href=\"{f}\"><img class=\"plot\" src=\"{f}\" alt=\"{c}\"></a><figcaption>{c}</figcaption></figure>",
            f = escape(file),
            c = escape(caption)
        );
    }
    h.push_str("</div>\n");
}

/// The score table in `ranked` order with `scores.csv`'s ranks, with a Dice column when `dice` (case →
/// Dice) is an object.
fn write_case_table(
    h: &mut String,
    ranked: &[(usize, &ScoreRow)],
    dice: &Value,
    links: &IndexLinks,
) {
    h.push_str("<h2>Cases by score</h2>\n<table>\n<tr><th>#</th><th>case</th><th>group</th><th>score</th><th>label</th><th>community</th>");
    if dice.is_object() {
        h.push_str("<th>Dice</th>");
    }
    h.push_str("<th>files</th></tr>\n");
    for &(rank, r) in ranked {
        let _ = write!(
            h,
            "<tr{}><td class=\"num\">{}</td><td>{}</td><td>{}</td><td class=\"num\">{:.4}</td><td>{}</td><td class=\"num\">{}</td>",
            if r.label == Some(1) { " class=\"lesion\"" } else { "" },
            rank,
            escape(&r.case),
            escape(&r.group),
            r.score.get(),
            r.label.map(|l| l.to_string()).unwrap_or_default(),
            r.community.map(|c| c.to_string()).unwrap_or_default()
        );
        if dice.is_object() {
            let _ = write!(h, "<td class=\"num\">{}</td>", dice_cell(r, &dice[&r.case]));
        }
        let _ = writeln!(h, "<td>{}</td></tr>", case_files(&r.case, links));
    }
    h.push_str("</table>\n");
}

/// A case's Dice as the table shows it: the number for a lesion case; for a lesion-free case, whose Dice
/// is 1 or 0, what that means.
fn dice_cell(r: &ScoreRow, dice: &Value) -> String {
    match (r.label, dice.as_f64()) {
        (Some(0), Some(1.0)) => "clean (nothing ≥ t*)".into(),
        (Some(0), Some(_)) => "false alarm (map ≥ t*)".into(),
        _ => number(dice),
    }
}

/// The links to one case's files that this run wrote (QC, map, mask, token scores).
fn case_files(case: &str, links: &IndexLinks) -> String {
    let seg = url_segment(case);
    let mut files = Vec::new();
    if links.qc {
        files.push(format!("<a href=\"plots/qc/{seg}.png\">QC</a>"));
    }
    if links.maps {
        files.push(format!("<a href=\"maps/{seg}_anomaly.nii.gz\">map</a>"));
    }
    if links.masks {
        files.push(format!("<a href=\"masks/{seg}_mask.nii.gz\">mask</a>"));
    }
    files.push(format!("<a href=\"token_scores/{seg}.npy\">tokens</a>"));
    files.join(" · ")
}

/// The QC montages in `order`.
fn write_qc_montages(h: &mut String, order: &[&ScoreRow]) {
    h.push_str("<h2>QC montages (by score)</h2>\n<div>\n");
    for r in order {
        let seg = url_segment(&r.case);
        let _ = writeln!(
            h,
            "<figure><a href=\"plots/qc/{seg}.png\"><img class=\"plot\" loading=\"lazy\" src=\"plots/qc/{seg}.png\" alt=\"{c}\"></a><figcaption>{c} ({:.4})</figcaption></figure>",
            r.score.get(),
            c = escape(&r.case)
        );
    }
    h.push_str("</div>\n");
}

/// The links to the run's data files and the end of the document.
fn write_footer(h: &mut String, summary: &Summary) {
    h.push_str("<p>Files: <a href=\"scores.csv\">scores.csv</a> · <a href=\"summary.json\">summary.json</a>");
    if summary
        .scoring
        .as_ref()
        .is_some_and(|s| s.outlier_communities.is_some())
    {
        h.push_str(" · <a href=\"graph.json\">graph.json</a>");
    }
    h.push_str("</p>\n</body>\n</html>\n");
}

/// Writes `<out>/index.html` atomically.
pub fn write_index(
    out: &Path,
    rows: &[ScoreRow],
    summary: &Summary,
    links: &IndexLinks,
) -> Result<()> {
    atomic::write_bytes(
        &out.join("index.html"),
        render_index(rows, summary, links).as_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::summary::VolumeMetrics;

    fn row(case: &str, score: f32, label: Option<u8>) -> ScoreRow {
        ScoreRow {
            case: case.into(),
            group: "query".into(),
            score: super::super::Score::F32(score),
            label,
            community: Some(1),
            raw_score: None,
            class: None,
        }
    }

    #[test]
    fn page_lists_every_case_sorted_escaped_and_links_only_what_exists() {
        let rows = vec![
            row("a<b>", 0.1, Some(0)),
            row("c d", 0.9, Some(1)),
            row("e", 0.5, None),
        ];
        let mut summary = Summary::new("score --healthy/--query", 3);
        let mut metrics = VolumeMetrics {
            patient_auroc: Some(0.75),
            ..Default::default()
        };
        metrics.dice_per_case.insert("c d".into(), Some(0.5));
        metrics.dice_per_case.insert("a<b>".into(), Some(1.0));
        metrics.voxel_ap_per_case.insert("c d".into(), Some(0.7));
        summary.metrics = Some(Metrics::Volumes(Box::new(metrics)));
        summary.command_line = Some("mri-ad score --query 'q <1>'".into());
        let links = IndexLinks {
            plots: vec![("plots/roc.png".into(), "ROC".into())],
            qc: true,
            maps: true,
            masks: false,
        };
        let page = render_index(&rows, &summary, &links);
        assert!(page.contains("a&lt;b&gt;") && !page.contains("a<b>"));
        assert!(page.contains("plots/qc/c%20d.png") && page.contains("maps/c%20d_anomaly.nii.gz"));
        assert!(!page.contains("_mask.nii.gz"));
        assert!(page.contains("0.7500") && page.contains("src=\"plots/roc.png\""));
        // The command that ran (escaped), what each figure averages over, a lesion-free case's Dice in
        // words, and the glossary.
        assert!(page.contains("mri-ad score --query &#39;q &lt;1&gt;&#39;"));
        assert!(
            page.contains("mean over the 1 lesion cases")
                && page.contains("1 lesion against 1 lesion-free")
        );
        assert!(page.contains("clean (nothing ≥ t*)") && page.contains("id=\"glossary\""));
        assert!(
            page.find("Dice at t*, mean over the 1").unwrap() < page.find("patient AUROC").unwrap()
        );
        // Sorted by score: c d, e, a<b>.
        let (p1, p2, p3) = (
            page.find("<td>c d</td>").unwrap(),
            page.find("<td>e</td>").unwrap(),
            page.find("<td>a&lt;b&gt;</td>").unwrap(),
        );
        assert!(p1 < p2 && p2 < p3);
        assert!(
            !page.contains("http://") && !page.contains("https://") && !page.contains("<script")
        );
        // Tokens-only run: no metrics, no QC.
        let page = render_index(
            &rows,
            &Summary::new("score --tokens", 3),
            &IndexLinks::default(),
        );
        assert!(page.contains("no lesion labels") && !page.contains("plots/qc"));
        for r in &rows {
            assert!(page.contains(&format!("<td>{}</td>", escape(&r.case))));
        }
    }
}
