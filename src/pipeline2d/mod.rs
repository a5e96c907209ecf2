//! The 2D path (`mri-ad score2d`): images → DINOv2 tokens of four blocks → LNAMD views → the batch scorer
//! (MuSc or CoDeGraph) → maps at each image's resolution → RsCIN image scores → metrics → run folder.
//!
//! Input: a folder of images (plain, optionally with a mask folder, or the MVTec AD layout; see
//! [`crate::formats::images`]). Each class is one batch (ALGORITHM.md §8.2); a plain folder is one class.
//!
//! Per image (ALGORITHM.md §2, §4.1, §7.1):
//! 1. decode, resize to `S×S` with PIL's bilinear filter, ImageNet normalisation (grey replicated);
//! 2. the backbone's patch tokens of the selected blocks (`[L, (S/14)², C]`) and its `cls` embedding;
//! 3. per block and per degree `r`, LNAMD (whole-map layer norm, zero-padded `r×r` box mean with divisor
//!    `r²`, L2 per token): one view each, so the [`crate::TokenSet`] holds `L·R` views (block-major: view
//!    `l·R + i` is block `l`, degree `R[i]`) on the grid `(1, S/14, S/14)`. Every position is valid unless
//!    the background is void (`--void-background`; `auto` = when every image of the batch has an
//!    exact-zero border): then a token whose patch of the resized image is more than half exact-zero
//!    pixels is void, as the brain mask makes it on volumes (left out of the search, score 0, no graph
//!    links, nor from tokens within `--link-margin` of it);
//! 4. the scorer averages all views; the CoDeGraph graph stage uses the `r = 1` views (§11 row 18) unless
//!    `--graph-views` says otherwise;
//! 5. the token scores are upsampled bilinearly with align-corners semantics to the image's own size; the
//!    raw image score is the map's maximum; RsCIN (§7.1 step 4) with the `cls` embeddings gives the final
//!    image score (`scores.csv` column `score`; the raw maximum is `raw_score`).
//!
//! Output (one run folder per class; for an MVTec root with several classes `<out>/<class>/`, plus
//! `<out>/summary.json` with the per-class metrics and their mean, and `<out>/scores.csv` of all classes):
//! `scores.csv` (`rank,case,group,score,label,community,raw_score`, highest score first), `token_scores/<case>.npy` (f32
//! `[(S/14)²]`), `maps/<case>.npy` (f32 `[H, W]`, the image's size), `overlays/<case>.png` (the map over
//! the image, colours scaled to the class's score range, mask outline in green), `graph.json`
//! (CoDeGraph), `summary.json`, `config.toml`, `.mri-ad-run`.
//!
//! Traps and memory:
//! * The void background is *exact* zero in every channel after the resize, not "dark": skull-stripped
//!   slices have it, photographs rarely do. Without it, the outline of the brain on a black background
//!   makes the surface tokens of two slices match closely (neighbour burnout), and the graph links normal
//!   images instead of the ones sharing a defect (docs/score2d.md). An image that is all background is
//!   an error when the background is void.
//! * Everything is computed before the output folder is created, so a bad input (unreadable image, mask
//!   of another size, fewer than 3 images) exits 2 with no output folder left behind. The output folder
//!   follows the run-folder rules of `score` ([`crate::run::folder`], checked first): its marker records the
//!   request (every image and ground-truth mask by SHA-256, the settings, the model by content); the
//!   same request again rewrites the results, another needs `--force` and then removes the earlier
//!   outputs (an MVTec root's class folders included) first; a non-empty folder without a marker needs
//!   `--force`. Each class folder of an MVTec root records its own class's request.
//! * Tokens of one class are held in memory: `L·R·(S/14)²·C·4` bytes per image, 25 MB at S = 518 with
//!   ViT-S (12 views × 1369 × 384), so a few hundred images per class fit in a few GB; the scorer's
//!   distance tables come on top (`--memory-budget`).
//! * With ground truth, the maps and masks of one class are held for AUPRO (`H·W·5` bytes per image).
//!   Pixel AUROC/AP/F1-max are exact up to 2²⁶ pixels per class, binned above (see [`crate::eval::pixel`]).
//! * The pixel metrics are computed at each image's own resolution (MuSc resizes the masks to 518 instead).

use std::path::PathBuf;
use std::time::Instant;

use serde_json::{json, Value};

use crate::backbone::ort::{Device, OrtConfig, OrtEmbedder};
use crate::backbone::{Embedder, PATCH};
use crate::formats::hash;
use crate::formats::images::ImageClass;
use crate::progress::Progress;
use crate::report::{Score, ScoreRow};
use crate::run::folder::prepare_run_folder;
use crate::run::folder::standard_outputs;
use crate::run::outputs::BatchOutputs;
use crate::run::summary::{Metrics, Summary, Timing};
use crate::score::codegraph::GraphReport;
use crate::score::{score_batch, ScoreConfig, ScoreResult};
use crate::{Error, Result};

mod embed;
mod evaluate;
mod inputs;
mod outputs;

use embed::{embed_class, Embedded};
use evaluate::{evaluate_class, token_grid, Evaluated};
use inputs::Checked;
pub use inputs::{prepare, Inputs};
use outputs::{group_of, overall_summary, view_names, write_maps_and_overlays};

/// With the background void (`--void-background`), a token is void when more than this fraction of its
/// patch is background (the volume default of `--void-threshold`, ALGORITHM.md §3.2 step 12).
pub const VOID_THRESHOLD: f64 = 0.5;

/// Whether an exact-zero background is void (`--void-background`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VoidBackground {
    /// Void when every image of the batch has an exact-zero border (skull-stripped slices, letterboxed
    /// frames); photographs keep every token.
    Auto,
    /// Always void the exact-zero background.
    On,
    /// Every token is scored (MuSc's behaviour on photographs).
    Off,
}

impl VoidBackground {
    /// The names `--void-background` takes.
    pub const NAMES: [&'static str; 3] = ["auto", "on", "off"];
}

impl std::str::FromStr for VoidBackground {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(VoidBackground::Auto),
            "on" => Ok(VoidBackground::On),
            "off" => Ok(VoidBackground::Off),
            other => Err(format!(
                "unknown void background `{other}` (auto, on or off)"
            )),
        }
    }
}

impl std::fmt::Display for VoidBackground {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            VoidBackground::Auto => "auto",
            VoidBackground::On => "on",
            VoidBackground::Off => "off",
        })
    }
}

/// Everything `score2d` needs.
#[derive(Debug, Clone)]
pub struct Score2dConfig {
    pub images: PathBuf,
    pub masks: Option<PathBuf>,
    pub out: PathBuf,
    pub model: PathBuf,
    pub ort_lib: Option<PathBuf>,
    pub device: Device,
    /// Images per backbone call.
    pub batch: usize,
    /// Backbone blocks (1-based).
    pub layers: Vec<usize>,
    /// Model input edge S (multiple of 14).
    pub size: usize,
    /// LNAMD degrees (odd).
    pub degrees: Vec<usize>,
    /// RsCIN window sizes.
    pub rscin_windows: Vec<usize>,
    /// Void tokens from an exact-zero background (`--void-background`): a token whose patch of the
    /// resized image is more than [`VOID_THRESHOLD`] background is void, as `score` does on volumes.
    pub void_background: VoidBackground,
    pub score: ScoreConfig,
    pub force: bool,
    /// Where the messages go.
    pub report: crate::messages::Reporter,
    pub progress: bool,
}

impl Score2dConfig {
    /// Checks the values; the error names the flag.
    pub fn validate(&self) -> Result<()> {
        crate::backbone::check_size("--size", &self.size)?;
        if self.batch == 0 {
            return Err(Error::bad_argument("--batch", "must be at least 1"));
        }
        crate::backbone::check_layers("--layers", &self.layers)?;
        if self.score.search == crate::score::SearchKind::Window {
            return Err(Error::bad_argument(
                "--search",
                "window is for volumes registered to one atlas; 2D images are not registered (an \
                 object's parts need not lie at the same pixel in every image): use --search exact",
            ));
        }
        if self.degrees.is_empty() || self.degrees.iter().any(|&r| r % 2 == 0) {
            return Err(Error::bad_argument(
                "--lnamd-degrees",
                format!("{:?}: give odd degrees (e.g. 1,3,5)", self.degrees),
            ));
        }
        if self.rscin_windows.is_empty() || self.rscin_windows.contains(&0) {
            return Err(Error::bad_argument(
                "--rscin-windows",
                format!(
                    "{:?}: give window sizes ≥ 1 (e.g. 1,2,3)",
                    self.rscin_windows
                ),
            ));
        }
        let views = self.layers.len() * self.degrees.len();
        if let Some(&v) = self.score.graph_views.iter().find(|&&v| v >= views) {
            return Err(Error::bad_argument(
                "--graph-views",
                format!("view {v} does not exist: score2d has {views} views (block-major, {} degrees per block)", self.degrees.len()),
            ));
        }
        self.score.validate()
    }

    /// The scoring configuration actually used: the `r = 1` views feed the graph stage unless
    /// `--graph-views` was given (ALGORITHM.md §11 row 18).
    pub fn effective_score(&self) -> ScoreConfig {
        let mut s = self.score.clone();
        if s.graph_views.is_empty() {
            if let Some(i) = self.degrees.iter().position(|&r| r == 1) {
                let r = self.degrees.len();
                s.graph_views = (0..self.layers.len()).map(|l| l * r + i).collect();
            }
        }
        s
    }
}

/// One image's results.
#[derive(Debug, Clone)]
pub struct Case2d {
    pub name: String,
    pub group: String,
    pub image: PathBuf,
    pub mask: Option<PathBuf>,
    /// `(height, width)` of the input image (and of its map).
    pub size: (usize, usize),
    /// Pixel format of the file.
    pub format: String,
    /// Ground truth (None without masks in a plain folder).
    pub label: Option<bool>,
    /// Maximum of the upsampled map.
    pub raw_score: f64,
    /// RsCIN-refined image score.
    pub score: f64,
    /// CoDeGraph community (index into `graph.communities`).
    pub community: Option<usize>,
    /// Void tokens (exact-zero background when `--void-background` is active; 0 otherwise).
    pub void_tokens: usize,
}

impl Case2d {
    /// Its row of `scores.csv` (with its class in a root's table of all classes).
    fn row(&self, class: Option<&str>) -> ScoreRow {
        ScoreRow {
            case: self.name.clone(),
            group: self.group.clone(),
            score: Score::F64(self.score),
            label: self.label.map(u8::from),
            community: self.community,
            raw_score: Some(self.raw_score),
            class: class.map(str::to_string),
        }
    }
}

/// One class (batch): what a plot needs is here (scores, labels, groups, communities, token maps).
#[derive(Debug, Clone)]
pub struct Class2d {
    pub name: String,
    /// The class's run folder.
    pub out: PathBuf,
    pub cases: Vec<Case2d>,
    /// Token grid `(H/14, W/14)` of the model input.
    pub grid: (usize, usize),
    /// The scorer's output (token scores `[N][M]`, graph, excluded positions, timings).
    pub result: ScoreResult,
    /// `summary.json` of the class.
    pub summary: Summary,
}

/// The whole run.
#[derive(Debug, Clone)]
pub struct Run2d {
    pub layout: &'static str,
    pub classes: Vec<Class2d>,
    /// `<out>/summary.json` (for one class, the class's own summary).
    pub summary: Summary,
}

impl Class2d {
    /// The graph report (CoDeGraph only).
    pub fn graph(&self) -> Option<&GraphReport> {
        self.result.graph.as_ref()
    }
}

/// Runs `score2d` with the ONNX Runtime backbone.
pub fn run(cfg: &Score2dConfig) -> Result<Run2d> {
    cfg.validate()?;
    if !cfg.model.is_file() {
        return Err(Error::bad_argument(
            "--model",
            format!(
                "{}: no such file (build the default model with scripts/setup/build_default_model.py; see onnx/README.md)",
                cfg.model.display()
            ),
        ));
    }
    // Discovery and every check before loading the model: bad input fails fast.
    let sha = hash::sha256_file(&cfg.model)?;
    let inputs = prepare(cfg, &sha)?;
    let mut embedder = OrtEmbedder::load(&OrtConfig {
        model: cfg.model.clone(),
        ort_lib: cfg.ort_lib.clone(),
        device: cfg.device,
        threads: cfg.score.threads,
        layers: cfg.layers.clone(),
    })?;
    if let Some(n) = embedder.notice() {
        cfg.report.notice(n);
    }
    cfg.report.say(format!(
        "device: {} (--device {})",
        embedder.provider(),
        cfg.device
    ));
    run_with(cfg, inputs, &mut embedder, &sha)
}

/// Runs `score2d` on checked inputs ([`prepare`]) with any backbone (the unit test uses the fake one):
/// every class is embedded, scored and evaluated before the output folder is touched, then written.
pub fn run_with(
    cfg: &Score2dConfig,
    inputs: Inputs,
    embedder: &mut dyn Embedder,
    model_sha256: &str,
) -> Result<Run2d> {
    let started = Instant::now();
    let Inputs {
        dataset,
        checked,
        request,
        class_requests,
        seconds: check_seconds,
    } = inputs;
    if embedder.layers() != cfg.layers.as_slice() {
        return Err(Error::bad_argument(
            "--layers",
            format!(
                "the backbone was opened with blocks {:?}, the run asks for {:?}",
                embedder.layers(),
                cfg.layers
            ),
        ));
    }
    let progress = Progress::new(cfg.progress);
    let multi = dataset.classes.len() > 1;
    let mut scored = Vec::new();
    for (class, checked) in dataset.classes.iter().zip(&checked) {
        scored.push(score_class(
            cfg,
            dataset.layout,
            class,
            checked,
            embedder,
            &progress,
        )?);
    }
    // Every input has been read and scored: now the output folder. Its marker lists what this run writes
    // (the class folders of an MVTec root), so that a run replacing it removes exactly those.
    let mut outputs = standard_outputs();
    if multi {
        outputs.extend(dataset.classes.iter().map(|c| c.name.clone()));
    } else {
        outputs.push("overlays".into());
    }
    let _lock = prepare_run_folder(&cfg.out, cfg.force, &request, &outputs, &cfg.report)?;
    let class_outputs: Vec<String> = standard_outputs()
        .into_iter()
        .chain(["overlays".to_string()])
        .collect();
    let context = WriteContext {
        cfg,
        layout: dataset.layout,
        model_sha256,
        provider: embedder.provider().to_string(),
        check_seconds,
        started,
        progress: &progress,
    };
    let mut classes = Vec::new();
    for (one, class_request) in scored.into_iter().zip(&class_requests) {
        let mut _class_lock = None;
        let out = if multi {
            let d = cfg.out.join(&one.class.name);
            _class_lock = Some(prepare_run_folder(
                &d,
                true,
                class_request,
                &class_outputs,
                &cfg.report,
            )?);
            d
        } else {
            cfg.out.clone()
        };
        classes.push(context.write_class(one, out)?);
    }
    let summary = if multi {
        let doc = overall_summary(cfg, &dataset, &classes, started);
        let rows: Vec<ScoreRow> = classes
            .iter()
            .flat_map(|class| class.cases.iter().map(|c| c.row(Some(&class.name))))
            .collect();
        crate::report::write_scores_csv(&cfg.out.join("scores.csv"), &rows)?;
        doc.write(&cfg.out)?;
        doc
    } else {
        classes[0].summary.clone()
    };
    cfg.report.say(format!(
        "done in {:.1} s; wrote {}",
        started.elapsed().as_secs_f64(),
        cfg.out.display()
    ));
    Ok(Run2d {
        layout: dataset.layout,
        classes,
        summary,
    })
}

/// One class embedded, scored and evaluated, in memory, before anything is written.
struct ScoredClass<'a> {
    class: &'a ImageClass,
    checked: &'a [Checked],
    /// Pixel format of each image.
    formats: Vec<String>,
    void_active: bool,
    /// Void tokens of each image.
    void_tokens: Vec<usize>,
    dim: usize,
    result: ScoreResult,
    evaluated: Evaluated,
    /// Seconds of the embedding, the scoring and the evaluation.
    seconds: [f64; 3],
}

/// Embeds, scores and evaluates one class.
fn score_class<'a>(
    cfg: &Score2dConfig,
    layout: &str,
    class: &'a ImageClass,
    checked: &'a [Checked],
    embedder: &mut dyn Embedder,
    progress: &Progress,
) -> Result<ScoredClass<'a>> {
    let score_cfg = cfg.effective_score();
    cfg.report.say(format!(
        "{}: {} images ({layout} layout{}), {} views of {} tokens, {:?}",
        class.name,
        class.cases.len(),
        if class.labelled {
            ", with ground truth"
        } else {
            ""
        },
        cfg.layers.len() * cfg.degrees.len(),
        (cfg.size / PATCH).pow(2),
        score_cfg.method
    ));
    let t = Instant::now();
    let Embedded {
        sets,
        cls,
        formats,
        void_active,
    } = embed_class(cfg, class, checked, embedder, progress)?;
    if void_active && cfg.void_background == VoidBackground::Auto {
        cfg.report.say(format!(
            "{}: every image has an exact-zero border, so the background is void as in `score` \
             (--void-background auto; pass off to score it)",
            class.name
        ));
    }
    let embed_seconds = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let result = score_batch(&sets, &score_cfg, progress)?;
    let void_tokens: Vec<usize> = sets
        .iter()
        .map(|t| t.valid.iter().filter(|&&v| !v).count())
        .collect();
    let dim = sets[0].dim();
    drop(sets);
    let score_seconds = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let evaluated = evaluate_class(cfg, class, checked, &result, cls.view())?;
    Ok(ScoredClass {
        class,
        checked,
        formats,
        void_active,
        void_tokens,
        dim,
        result,
        evaluated,
        seconds: [embed_seconds, score_seconds, t.elapsed().as_secs_f64()],
    })
}

/// What writing every class of a run shares.
struct WriteContext<'a> {
    cfg: &'a Score2dConfig,
    layout: &'static str,
    model_sha256: &'a str,
    /// The execution provider that ran the backbone.
    provider: String,
    check_seconds: f64,
    started: Instant,
    progress: &'a Progress,
}

impl WriteContext<'_> {
    /// Writes one scored class into its run folder `out`: the outputs of every run kind, its maps and
    /// overlays, summary.json and index.html.
    fn write_class(&self, one: ScoredClass, out: PathBuf) -> Result<Class2d> {
        let cfg = self.cfg;
        let t = Instant::now();
        let cases = one.cases();
        let rows: Vec<ScoreRow> = cases.iter().map(|c| c.row(None)).collect();
        let score_cfg = cfg.effective_score();
        let outputs = BatchOutputs {
            out: &out,
            rows: &rows,
            result: &one.result,
            score: &score_cfg,
            config_extra: &toml::Table::new(),
            dim: one.dim,
            plots: true,
        };
        let written = outputs.write()?;
        let grid = (cfg.size / PATCH, cfg.size / PATCH);
        write_maps_and_overlays(&out, &cases, &one.result, grid, self.progress)?;
        let maps_seconds = t.elapsed().as_secs_f64();
        let mut summary = self.class_summary(&one, &cases);
        summary.scoring = Some(written.scoring);
        summary.metrics = one
            .evaluated
            .metrics
            .clone()
            .map(|m| Metrics::Images(Box::new(m)));
        let secs = one.seconds;
        summary.timings = vec![
            Timing::new("check inputs", self.check_seconds),
            Timing::new("decode + backbone + LNAMD", secs[0]),
            Timing::new("scoring", secs[1]),
        ];
        summary.timings.extend(
            one.result
                .timings
                .iter()
                .map(|tm| Timing::new(format!("scoring: {}", tm.stage), tm.seconds)),
        );
        summary
            .timings
            .push(Timing::new("maps, RsCIN and metrics", secs[2]));
        summary.timings.extend(written.timings);
        summary.timings.push(Timing::new(
            "write outputs, maps and overlays (all of it)",
            maps_seconds,
        ));
        summary.total_seconds = self.started.elapsed().as_secs_f64();
        let links = crate::report::html::IndexLinks {
            plots: written.plots,
            ..Default::default()
        };
        outputs.finish(&summary, &links)?;
        Ok(Class2d {
            name: one.class.name.clone(),
            out,
            cases,
            grid,
            result: one.result,
            summary,
        })
    }

    /// A class's summary: its inputs, the void rule, the backbone and the 2D settings.
    fn class_summary(&self, one: &ScoredClass, cases: &[Case2d]) -> Summary {
        let cfg = self.cfg;
        let grid = cfg.size / PATCH;
        let inputs: Vec<Value> = cases
            .iter()
            .map(|c| {
                json!({
                    "case": c.name, "group": c.group, "image": c.image, "mask": c.mask,
                    "height": c.size.0, "width": c.size.1, "format": c.format,
                    "void_tokens": c.void_tokens,
                })
            })
            .collect();
        let mut summary = Summary::new("score2d", cases.len());
        summary
            .detail("images", &cfg.images)
            .detail("masks", &cfg.masks)
            .detail("layout", self.layout)
            .detail("class", &one.class.name)
            .detail("inputs", inputs)
            .detail("void_background", json!({
                "mode": cfg.void_background.to_string(),
                "active": one.void_active,
                "rule": "when active, a token is void if more than `threshold` of its patch of the resized image is exact-zero background (every channel 0); void tokens are left out of the search (score 0) and create no graph links; auto = active when every image of the batch has an exact-zero border",
                "threshold": VOID_THRESHOLD,
            }))
            .detail("backbone", json!({
                "model": cfg.model,
                "model_sha256": self.model_sha256,
                "provider": self.provider,
                "layers": cfg.layers,
                "size": cfg.size,
                "grid": [1, grid, grid],
                "dim": one.dim,
                "batch": cfg.batch,
                "resize": "PIL BILINEAR (antialiased triangle filter) to size × size",
                "normalisation": "ImageNet mean/std; grey replicated into 3 channels",
            }))
            .detail("lnamd_degrees", &cfg.degrees)
            .detail("views", view_names(cfg))
            .detail("rscin_windows", &cfg.rscin_windows)
            .detail("maps", "token scores upsampled bilinearly (align corners) to each image's size; raw image score = map maximum; score = RsCIN");
        summary
    }
}

impl ScoredClass<'_> {
    /// Each image's results.
    fn cases(&self) -> Vec<Case2d> {
        let (class, ev) = (self.class, &self.evaluated);
        let community = self
            .result
            .graph
            .as_ref()
            .map(|g| crate::report::community_of_case(g, class.cases.len()))
            .unwrap_or_else(|| vec![None; class.cases.len()]);
        class
            .cases
            .iter()
            .enumerate()
            .map(|(a, c)| Case2d {
                name: c.name.clone(),
                group: group_of(c, class, ev.labels[a]),
                image: c.image.clone(),
                mask: c.mask.clone(),
                size: self.checked[a].size,
                format: self.formats[a].clone(),
                label: ev.labels[a],
                raw_score: ev.raw[a],
                score: ev.final_scores[a],
                community: community[a],
                void_tokens: self.void_tokens[a],
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
