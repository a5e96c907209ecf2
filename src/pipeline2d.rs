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
//!    `r²`, L2 per token): one view each, so the [`TokenSet`] holds `L·R` views (block-major: view
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
//! `scores.csv` (`case,group,score,label,community,raw_score`), `token_scores/<case>.npy` (f32
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
//!   Pixel AUROC/AP/F1-max are exact up to 2²⁶ pixels per class, binned above (see [`eval::pixel`]).
//! * The pixel metrics are computed at each image's own resolution (MuSc resizes the masks to 518 instead).

use std::path::{Path, PathBuf};
use std::time::Instant;

use ndarray::{Array2, Array3, Array4, ArrayView2, Axis};
use serde_json::{json, Value};

use crate::backbone::ort::{Device, OrtConfig, OrtEmbedder};
use crate::backbone::{Embedder, PATCH};
use crate::eval::pixel::PixelAccumulator;
use crate::formats::images::{self, Dataset, ImageClass};
use crate::formats::{atomic, hash};
use crate::progress::Progress;
use crate::report::{Score, ScoreRow};
use crate::run::folder::{check_inputs_outside_outputs, hash_files, prepare_run_folder};
use crate::run::folder::{replaces_another_run, run_request, standard_outputs};
use crate::run::outdir;
use crate::run::outputs::run_settings;
use crate::run::outputs::BatchOutputs;
use crate::run::summary::{ImageLevel, ImageMetrics, Metrics, Summary, Timing};
use crate::score::codegraph::GraphReport;
use crate::score::{score_batch, ScoreConfig, ScoreResult};
use crate::{eval, Error, Result, TokenSet};

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
        if self.size == 0 || self.size % PATCH != 0 {
            return Err(Error::bad_argument(
                "--size",
                format!("{} is not a positive multiple of {PATCH}", self.size),
            ));
        }
        if self.batch == 0 {
            return Err(Error::bad_argument("--batch", "must be at least 1"));
        }
        if self.layers.is_empty() || self.layers.contains(&0) {
            return Err(Error::bad_argument(
                "--layers",
                "give at least one block, 1-based",
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

/// An image resized to `size × size` with [`images::resize_bilinear`] and written, ImageNet-normalised,
/// into `dst` `[3, size, size]` (grey replicated into the three channels).
///
/// Returns the background fraction of every `patch × patch` cell of the resized image (raster order):
/// the share of its pixels that are exactly 0 in every channel (see [`images::background_fractions`]).
fn fill_model_input(
    image: &images::Image,
    size: usize,
    dst: ndarray::ArrayViewMut3<f32>,
    patch: usize,
) -> Vec<f64> {
    match &image.pixels {
        images::Pixels::Grey(g) => {
            let r = images::resize_bilinear(g.view(), (size, size));
            crate::backbone::fill_one(r.view(), dst);
            images::background_fractions(r.view().insert_axis(Axis(0)), patch)
        }
        images::Pixels::Rgb(c) => {
            let mut r = Array3::<f32>::zeros((3, size, size));
            for ch in 0..3 {
                r.index_axis_mut(Axis(0), ch)
                    .assign(&images::resize_bilinear(
                        c.index_axis(Axis(0), ch),
                        (size, size),
                    ));
            }
            crate::backbone::fill_rgb(r.view(), dst);
            images::background_fractions(r.view(), patch)
        }
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
                "{}: no such file (build the default model with scripts/build_default_model.py; see onnx/README.md)",
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

/// The checked inputs of a run: what [`prepare`] returns and [`run_with`] works on.
pub struct Inputs {
    dataset: Dataset,
    checked: Vec<Vec<Checked>>,
    /// The run's request (every class) and each class's own (for its folder of an MVTec root).
    request: Value,
    class_requests: Vec<Value>,
    seconds: f64,
}

impl Inputs {
    /// The discovered dataset.
    pub fn dataset(&self) -> &Dataset {
        &self.dataset
    }
}

/// Discovers the images and checks everything that can be checked without the model: the output folder
/// (the run-folder rules of [`crate::run::folder`], with the request of `requests`), at least 3 images
/// per class, RsCIN windows within the batch, every image header, every mask (readable, of its image's
/// size).
pub fn prepare(cfg: &Score2dConfig, model_sha256: &str) -> Result<Inputs> {
    let t = Instant::now();
    cfg.validate()?;
    let dataset = images::discover(&cfg.images, cfg.masks.as_deref())?;
    let (request, class_requests) = requests(cfg, &dataset, model_sha256)?;
    if replaces_another_run(&cfg.out, cfg.force, &request)? {
        let files: Vec<&Path> = dataset
            .classes
            .iter()
            .flat_map(|c| &c.cases)
            .flat_map(|c| std::iter::once(c.image.as_path()).chain(c.mask.as_deref()))
            .collect();
        check_inputs_outside_outputs(&cfg.out, &files)?;
    }
    let checked = dataset
        .classes
        .iter()
        .map(check_class)
        .collect::<Result<_>>()?;
    for class in &dataset.classes {
        let n = class.cases.len();
        if let Some(&k) = cfg.rscin_windows.iter().find(|&&k| k > n) {
            return Err(Error::bad_argument(
                "--rscin-windows",
                format!(
                    "window {k} is larger than the batch of {n} images of {}",
                    class.root.display()
                ),
            ));
        }
    }
    Ok(Inputs {
        dataset,
        checked,
        request,
        class_requests,
        seconds: t.elapsed().as_secs_f64(),
    })
}

/// The settings of `score2d` that change results, as the request records them (the model by content),
/// besides the scoring keys.
fn settings_2d(cfg: &Score2dConfig, model_sha256: &str) -> Result<toml::Table> {
    let extra = toml::toml! {
        size = (cfg.size as i64)
        layers = (cfg.layers.iter().map(|&l| l as i64).collect::<Vec<_>>())
        lnamd-degrees = (cfg.degrees.iter().map(|&r| r as i64).collect::<Vec<_>>())
        rscin-windows = (cfg.rscin_windows.iter().map(|&k| k as i64).collect::<Vec<_>>())
        void-background = (cfg.void_background.to_string())
    };
    let mut settings = run_settings(&cfg.effective_score(), &extra)?;
    settings.insert("model".into(), format!("sha256:{model_sha256}").into());
    Ok(settings)
}

/// The request of the run (every class's images and ground-truth masks by SHA-256, and the settings) and
/// the request of each class alone (recorded in its folder of an MVTec root).
fn requests(
    cfg: &Score2dConfig,
    dataset: &Dataset,
    model_sha256: &str,
) -> Result<(Value, Vec<Value>)> {
    let settings = settings_2d(cfg, model_sha256)?;
    let files: Vec<&Path> = dataset
        .classes
        .iter()
        .flat_map(|c| &c.cases)
        .flat_map(|c| std::iter::once(c.image.as_path()).chain(c.mask.as_deref()))
        .collect();
    let mut digests = hash_files(&files)?.into_iter();
    let mut per_class = Vec::new();
    let mut all = Vec::new();
    for class in &dataset.classes {
        let entries: Vec<Value> = class
            .cases
            .iter()
            .map(|c| {
                let image = digests.next().expect("one per file");
                let mask = c.mask.as_ref().map(|_| digests.next().expect("one per file"));
                json!({"class": class.name, "case": c.name, "image_sha256": image, "ground_truth_sha256": mask})
            })
            .collect();
        all.extend(entries.iter().cloned());
        per_class.push(run_request(Value::Array(entries), &settings));
    }
    Ok((run_request(Value::Array(all), &settings), per_class))
}

/// What the validation pass learns about a case before any work.
struct Checked {
    size: (usize, usize),
    label: Option<bool>,
}

/// Checks every image header and every mask (size, readability) and derives the labels.
fn check_class(class: &ImageClass) -> Result<Vec<Checked>> {
    if class.cases.len() < 3 {
        return Err(Error::BadBatch {
            path: class.root.clone(),
            problem: format!(
                "{} image(s): mutual scoring needs at least 3 images per batch (each is scored against the others)",
                class.cases.len()
            ),
        });
    }
    class
        .cases
        .iter()
        .map(|c| {
            let size = images::image_size(&c.image)?;
            let label = match (&c.mask, c.folder_label) {
                (Some(m), folder) => {
                    let mask = images::read_mask(m)?;
                    if mask.dim() != size {
                        return Err(Error::Mismatch {
                            path: m.clone(),
                            what: "mask size (height × width)".into(),
                            expected: format!("{} × {}", size.0, size.1),
                            actual: format!("{} × {}", mask.dim().0, mask.dim().1),
                            reference: c.image.display().to_string(),
                        });
                    }
                    Some(folder.unwrap_or_else(|| mask.iter().any(|&v| v)))
                }
                (None, Some(l)) => Some(l),
                (None, None) => class.labelled.then_some(false),
            };
            Ok(Checked { size, label })
        })
        .collect()
}

/// Token sets and `cls` embeddings of one class.
fn embed_class(
    cfg: &Score2dConfig,
    class: &ImageClass,
    checked: &[Checked],
    embedder: &mut dyn Embedder,
    progress: &Progress,
) -> Result<Embedded> {
    let s = cfg.size;
    let g = s / PATCH;
    let m = g * g;
    let n = class.cases.len();
    let (nl, nr) = (cfg.layers.len(), cfg.degrees.len());
    let mut sets = Vec::with_capacity(n);
    let mut formats = Vec::with_capacity(n);
    let mut backgrounds: Vec<Vec<f64>> = Vec::with_capacity(n);
    let mut all_framed = true;
    let mut cls_all: Option<Array2<f32>> = None;
    let bar = progress.bar(n as u64, &format!("{} tokens", class.name));
    for (start, chunk) in class.cases.chunks(cfg.batch).enumerate() {
        let start = start * cfg.batch;
        let mut px = Array4::<f32>::zeros((chunk.len(), 3, s, s));
        for (b, c) in chunk.iter().enumerate() {
            let img = images::read_image(&c.image)?;
            if img.size() != checked[start + b].size {
                return Err(Error::bad_input(
                    &c.image,
                    "the image's size changed while it was being read",
                ));
            }
            backgrounds.push(fill_model_input(
                &img,
                s,
                px.index_axis_mut(Axis(0), b),
                PATCH,
            ));
            all_framed &= img.has_zero_frame();
            formats.push(img.format);
        }
        let (features, cls) = embedder.embed_with_cls(px.view())?;
        let dim = features.dim().3;
        let cls_all = cls_all.get_or_insert_with(|| Array2::zeros((n, dim)));
        for (b, c) in chunk.iter().enumerate() {
            cls_all.row_mut(start + b).assign(&cls.row(b));
            let mut tokens = Array3::<f32>::zeros((nl * nr, m, dim));
            for l in 0..nl {
                let map = features.slice(ndarray::s![l, b, .., ..]);
                for (i, &r) in cfg.degrees.iter().enumerate() {
                    let view = crate::tokens::lnamd::lnamd(map, (g, g), r)?;
                    tokens.index_axis_mut(Axis(0), l * nr + i).assign(&view);
                }
            }
            let set = TokenSet::new(c.name.clone(), tokens, vec![true; m], [1, g, g])
                .map_err(|e| Error::bad_input(&c.image, format!("its tokens are unusable: {e}")))?;
            sets.push(set);
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    let void_active = match cfg.void_background {
        VoidBackground::On => true,
        VoidBackground::Off => false,
        VoidBackground::Auto => all_framed,
    };
    if void_active {
        for ((set, background), c) in sets.iter_mut().zip(&backgrounds).zip(&class.cases) {
            set.valid = background.iter().map(|&f| f <= VOID_THRESHOLD).collect();
            if !set.valid.contains(&true) {
                return Err(Error::bad_input(
                    &c.image,
                    format!(
                        "every patch is more than {}% exact-zero background, so with the background void \
                         (--void-background {}) nothing of it can be scored; remove the image or pass \
                         --void-background off",
                        VOID_THRESHOLD * 100.0,
                        cfg.void_background
                    ),
                ));
            }
        }
    }
    Ok(Embedded {
        sets,
        cls: cls_all.expect("at least 3 images"),
        formats,
        void_active,
    })
}

/// What [`embed_class`] returns.
struct Embedded {
    sets: Vec<TokenSet>,
    /// `cls` embeddings `[N, C]`.
    cls: Array2<f32>,
    /// Pixel format of every file.
    formats: Vec<String>,
    /// Whether the exact-zero background was made void (`--void-background`, resolved for `auto`).
    void_active: bool,
}

/// Runs `score2d` on checked inputs ([`prepare`]) with any backbone (the unit test uses the fake one).
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
    let say = |msg: String| cfg.report.say(msg);
    let progress = Progress::new(cfg.progress);
    let score_cfg = cfg.effective_score();
    let multi = dataset.classes.len() > 1;

    let mut pending = Vec::new();
    for (class, checked) in dataset.classes.iter().zip(&checked) {
        say(format!(
            "{}: {} images ({} layout{}), {} views of {} tokens, {:?}",
            class.name,
            class.cases.len(),
            dataset.layout,
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
        } = embed_class(cfg, class, checked, embedder, &progress)?;
        if void_active && cfg.void_background == VoidBackground::Auto {
            say(format!(
                "{}: every image has an exact-zero border, so the background is void as in `score` \
                 (--void-background auto; pass off to score it)",
                class.name
            ));
        }
        let embed_seconds = t.elapsed().as_secs_f64();
        let dim = sets[0].dim();
        let t = Instant::now();
        let result = score_batch(&sets, &score_cfg, &progress)?;
        let void_tokens: Vec<usize> = sets
            .iter()
            .map(|t| t.valid.iter().filter(|&&v| !v).count())
            .collect();
        drop(sets);
        let score_seconds = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let evaluated = evaluate_class(cfg, class, checked, &result, cls.view())?;
        let eval_seconds = t.elapsed().as_secs_f64();
        pending.push((
            class,
            checked,
            formats,
            (void_active, void_tokens),
            dim,
            result,
            evaluated,
            [embed_seconds, score_seconds, eval_seconds],
        ));
    }

    // Every input has been read and scored: now the output folder. Its marker lists what this run writes
    // (the class folders of an MVTec root), so that a run replacing it removes exactly those.
    let mut outputs = standard_outputs();
    if multi {
        outputs.extend(dataset.classes.iter().map(|c| c.name.clone()));
    } else {
        outputs.push("overlays".into());
    }
    prepare_run_folder(&cfg.out, cfg.force, &request, &outputs)?;
    let class_outputs: Vec<String> = standard_outputs()
        .into_iter()
        .chain(["overlays".to_string()])
        .collect();
    let mut classes = Vec::new();
    for (
        (class, checked, formats, (void_active, void_tokens), dim, result, evaluated, secs),
        class_request,
    ) in pending.into_iter().zip(&class_requests)
    {
        let out = if multi {
            let d = cfg.out.join(&class.name);
            prepare_run_folder(&d, true, class_request, &class_outputs)?;
            d
        } else {
            cfg.out.clone()
        };
        let t = Instant::now();
        let community = result
            .graph
            .as_ref()
            .map(|g| crate::report::community_of_case(g, class.cases.len()))
            .unwrap_or_else(|| vec![None; class.cases.len()]);
        let cases: Vec<Case2d> = class
            .cases
            .iter()
            .enumerate()
            .map(|(a, c)| Case2d {
                name: c.name.clone(),
                group: group_of(c, class, evaluated.labels[a]),
                image: c.image.clone(),
                mask: c.mask.clone(),
                size: checked[a].size,
                format: formats[a].clone(),
                label: evaluated.labels[a],
                raw_score: evaluated.raw[a],
                score: evaluated.final_scores[a],
                community: community[a],
                void_tokens: void_tokens[a],
            })
            .collect();
        let rows: Vec<ScoreRow> = cases.iter().map(|c| c.row(None)).collect();
        let outputs = BatchOutputs {
            out: &out,
            rows: &rows,
            result: &result,
            score: &score_cfg,
            config_extra: &toml::Table::new(),
            dim,
            plots: true,
        };
        let written = outputs.write()?;
        let grid = (cfg.size / PATCH, cfg.size / PATCH);
        write_maps_and_overlays(&out, &cases, &result, grid, &progress)?;
        let maps_seconds = t.elapsed().as_secs_f64();
        let mut summary = Summary::new("score2d", cases.len());
        summary
            .detail("images", &cfg.images)
            .detail("masks", &cfg.masks)
            .detail("layout", dataset.layout)
            .detail("class", &class.name)
            .detail(
                "inputs",
                cases
                    .iter()
                    .map(|c| {
                        json!({
                            "case": c.name, "group": c.group, "image": c.image, "mask": c.mask,
                            "height": c.size.0, "width": c.size.1, "format": c.format,
                            "void_tokens": c.void_tokens,
                        })
                    })
                    .collect::<Vec<_>>(),
            )
            .detail("void_background", json!({
                "mode": cfg.void_background.to_string(),
                "active": void_active,
                "rule": "when active, a token is void if more than `threshold` of its patch of the resized image is exact-zero background (every channel 0); void tokens are left out of the search (score 0) and create no graph links; auto = active when every image of the batch has an exact-zero border",
                "threshold": VOID_THRESHOLD,
            }))
            .detail("backbone", json!({
                "model": cfg.model,
                "model_sha256": model_sha256,
                "provider": embedder.provider(),
                "layers": cfg.layers,
                "size": cfg.size,
                "grid": [1, grid.0, grid.1],
                "dim": dim,
                "batch": cfg.batch,
                "resize": "PIL BILINEAR (antialiased triangle filter) to size × size",
                "normalisation": "ImageNet mean/std; grey replicated into 3 channels",
            }))
            .detail("lnamd_degrees", &cfg.degrees)
            .detail("views", view_names(cfg))
            .detail("rscin_windows", &cfg.rscin_windows)
            .detail("maps", "token scores upsampled bilinearly (align corners) to each image's size; raw image score = map maximum; score = RsCIN");
        summary.scoring = Some(written.scoring);
        summary.metrics = evaluated.metrics.map(|m| Metrics::Images(Box::new(m)));
        summary.timings = vec![
            Timing::new("check inputs", check_seconds),
            Timing::new("decode + backbone + LNAMD", secs[0]),
            Timing::new("scoring", secs[1]),
        ];
        summary.timings.extend(
            result
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
        summary.total_seconds = started.elapsed().as_secs_f64();
        let links = crate::report::html::IndexLinks {
            plots: written.plots,
            ..Default::default()
        };
        outputs.finish(&summary, &links)?;
        classes.push(Class2d {
            name: class.name.clone(),
            out,
            cases,
            grid,
            result,
            summary,
        });
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
    say(format!(
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

/// `good`/`defect` for a plain folder with masks, the layout's group otherwise.
fn group_of(case: &images::ImageCase, class: &ImageClass, label: Option<bool>) -> String {
    match (case.folder_label, class.labelled, label) {
        (None, true, Some(true)) => "defect".into(),
        (None, true, _) => "good".into(),
        _ => case.group.clone(),
    }
}

/// `layer_<k>/r<r>` for every view, in view order.
fn view_names(cfg: &Score2dConfig) -> Vec<String> {
    cfg.layers
        .iter()
        .flat_map(|l| cfg.degrees.iter().map(move |r| format!("layer_{l}/r{r}")))
        .collect()
}

/// Raw and RsCIN scores, labels and metrics of one class.
struct Evaluated {
    raw: Vec<f64>,
    final_scores: Vec<f64>,
    labels: Vec<Option<bool>>,
    metrics: Option<ImageMetrics>,
}

fn token_grid(scores: &[f32], grid: (usize, usize)) -> Array2<f32> {
    Array2::from_shape_vec(grid, scores.to_vec()).expect("M = grid positions")
}

fn evaluate_class(
    cfg: &Score2dConfig,
    class: &ImageClass,
    checked: &[Checked],
    result: &ScoreResult,
    cls: ArrayView2<f32>,
) -> Result<Evaluated> {
    let g = cfg.size / PATCH;
    let labelled = class.labelled;
    let (lo, hi) = eval::score_range(&result.token_scores);
    let total: usize = checked.iter().map(|c| c.size.0 * c.size.1).sum();
    let mut pixel = labelled.then(|| PixelAccumulator::new(lo as f64, hi as f64, total));
    let mut maps: Vec<Array2<f32>> = Vec::new();
    let mut masks: Vec<Array2<bool>> = Vec::new();
    let mut raw = Vec::with_capacity(class.cases.len());
    for (a, c) in class.cases.iter().enumerate() {
        let up = eval::upsample_bilinear(
            token_grid(&result.token_scores[a], (g, g)).view(),
            checked[a].size,
        );
        raw.push(up.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64);
        if let Some(acc) = pixel.as_mut() {
            let mask = match &c.mask {
                Some(m) => images::read_mask(m)?,
                None => Array2::from_elem(checked[a].size, false),
            };
            acc.add(up.iter().copied(), mask.iter().copied());
            maps.push(up);
            masks.push(mask);
        }
    }
    let final_scores = eval::rscin::rscin(&raw, cls, &cfg.rscin_windows)?;
    let labels: Vec<Option<bool>> = checked.iter().map(|c| c.label).collect();
    let metrics = match pixel {
        None => None,
        Some(acc) => {
            let truth: Vec<bool> = labels.iter().map(|l| l == &Some(true)).collect();
            let image = |s: &[f64]| {
                let s: Vec<f32> = s.iter().map(|&v| v as f32).collect();
                let f1 = eval::f1_max(&s, &truth);
                ImageLevel {
                    auroc: eval::auroc(&s, &truth),
                    ap: eval::average_precision(&s, &truth),
                    f1_max: f1.map(|b| b.0),
                    f1_threshold: f1.map(|b| b.1),
                }
            };
            let map_views: Vec<ArrayView2<f32>> = maps.iter().map(|m| m.view()).collect();
            let mask_views: Vec<ArrayView2<bool>> = masks.iter().map(|m| m.view()).collect();
            Some(ImageMetrics {
                images: truth.len(),
                anomalous_images: truth.iter().filter(|&&t| t).count(),
                image: image(&final_scores),
                image_raw_max: image(&raw),
                pixel: acc.finish().into(),
                aupro: eval::aupro::aupro(&map_views, &mask_views)?,
            })
        }
    };
    Ok(Evaluated {
        raw,
        final_scores,
        labels,
        metrics,
    })
}

/// A perceptual-ish colour ramp (black → purple → red → yellow → white) for `t` in `[0, 1]`.
fn heat(t: f32) -> [f32; 3] {
    const STOPS: [(f32, [f32; 3]); 5] = [
        (0.0, [0.0, 0.0, 0.3]),
        (0.3, [0.5, 0.0, 0.6]),
        (0.6, [0.9, 0.1, 0.1]),
        (0.85, [1.0, 0.8, 0.0]),
        (1.0, [1.0, 1.0, 0.9]),
    ];
    let t = t.clamp(0.0, 1.0);
    for w in STOPS.windows(2) {
        let ((a, ca), (b, cb)) = (w[0], w[1]);
        if t <= b {
            let f = (t - a) / (b - a);
            return [
                ca[0] + f * (cb[0] - ca[0]),
                ca[1] + f * (cb[1] - ca[1]),
                ca[2] + f * (cb[2] - ca[2]),
            ];
        }
    }
    STOPS[4].1
}

/// Writes `maps/<case>.npy` and `overlays/<case>.png` for every case.
fn write_maps_and_overlays(
    out: &Path,
    cases: &[Case2d],
    result: &ScoreResult,
    grid: (usize, usize),
    progress: &Progress,
) -> Result<()> {
    use image::ImageEncoder;
    use ndarray_npy::WriteNpyExt;
    let maps_dir = outdir::subdir(out, "maps")?;
    let over_dir = outdir::subdir(out, "overlays")?;
    let (lo, hi) = eval::score_range(&result.token_scores);
    let span = if hi > lo { hi - lo } else { 1.0 };
    let bar = progress.bar(cases.len() as u64, "maps");
    for (a, c) in cases.iter().enumerate() {
        let up = eval::upsample_bilinear(token_grid(&result.token_scores[a], grid).view(), c.size);
        atomic::write_with(&maps_dir.join(format!("{}.npy", c.name)), |w| {
            up.write_npy(w).map_err(|e| e.to_string())
        })?;
        let img = images::read_image(&c.image)?;
        let mask = match &c.mask {
            Some(m) => Some(images::read_mask(m)?),
            None => None,
        };
        let (h, w) = c.size;
        let mut buf = vec![0u8; h * w * 3];
        for y in 0..h {
            for x in 0..w {
                let t = (up[[y, x]] - lo) / span;
                let col = heat(t);
                let base = img.rgb_at(y, x);
                let alpha = 0.15 + 0.55 * t.clamp(0.0, 1.0);
                let mut px = [0f32; 3];
                for k in 0..3 {
                    px[k] = (1.0 - alpha) * base[k] + alpha * col[k];
                }
                if let Some(m) = &mask {
                    let edge = m[[y, x]]
                        && (y == 0
                            || x == 0
                            || y + 1 == h
                            || x + 1 == w
                            || !m[[y - 1, x]]
                            || !m[[y + 1, x]]
                            || !m[[y, x - 1]]
                            || !m[[y, x + 1]]);
                    if edge {
                        px = [0.0, 1.0, 0.0];
                    }
                }
                let o = (y * w + x) * 3;
                for k in 0..3 {
                    buf[o + k] = (px[k].clamp(0.0, 1.0) * 255.0).round() as u8;
                }
            }
        }
        atomic::write_with(&over_dir.join(format!("{}.png", c.name)), |wr| {
            image::codecs::png::PngEncoder::new(wr)
                .write_image(&buf, w as u32, h as u32, image::ExtendedColorType::Rgb8)
                .map_err(|e| e.to_string())
        })?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(())
}

/// `<out>/summary.json` for several classes: per-class metrics and their means (ALGORITHM.md §8.2).
fn overall_summary(
    cfg: &Score2dConfig,
    dataset: &Dataset,
    classes: &[Class2d],
    started: Instant,
) -> Summary {
    type Pick = fn(&ImageMetrics) -> Option<f64>;
    let keys: [(&str, Pick); 7] = [
        ("image_auroc", |m| m.image.auroc),
        ("image_ap", |m| m.image.ap),
        ("image_f1_max", |m| m.image.f1_max),
        ("pixel_auroc", |m| m.pixel.auroc),
        ("pixel_ap", |m| m.pixel.ap),
        ("pixel_f1_max", |m| m.pixel.f1_max),
        ("aupro", |m| m.aupro),
    ];
    let mut mean = serde_json::Map::new();
    for (name, pick) in keys {
        let vals: Vec<f64> = classes
            .iter()
            .filter_map(|c| c.summary.metrics.as_ref()?.images().and_then(pick))
            .collect();
        mean.insert(
            name.to_string(),
            json!({
                "mean": (!vals.is_empty()).then(|| vals.iter().sum::<f64>() / vals.len() as f64),
                "classes": vals.len(),
            }),
        );
    }
    let mut summary = Summary::new("score2d", classes.iter().map(|c| c.cases.len()).sum());
    summary
        .detail("images", &cfg.images)
        .detail("layout", dataset.layout)
        .detail(
            "classes",
            classes
                .iter()
                .map(|c| {
                    json!({
                        "class": c.name,
                        "folder": c.out,
                        "cases": c.cases.len(),
                        "metrics": c.summary.metrics,
                    })
                })
                .collect::<Vec<_>>(),
        )
        .detail("mean_over_classes", mean);
    summary.total_seconds = started.elapsed().as_secs_f64();
    summary
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backbone::fake::FakeEmbedder;

    #[test]
    fn void_background_names_round_trip() {
        for name in VoidBackground::NAMES {
            assert_eq!(name.parse::<VoidBackground>().unwrap().to_string(), name);
        }
        assert!("maybe"
            .parse::<VoidBackground>()
            .unwrap_err()
            .contains("auto"));
    }

    #[test]
    fn a_run_with_the_fake_backbone_returns_what_a_plot_needs() {
        let dir = tempfile::tempdir().unwrap();
        let images = dir.path().join("img");
        std::fs::create_dir_all(&images).unwrap();
        for i in 0..5u32 {
            let img = image::GrayImage::from_fn(40 + i, 44, |x, y| {
                let bump = if i == 0 && x > 20 && y > 20 { 55 } else { 0 };
                image::Luma([((x * 7 + y * 3 + i * 11) % 200) as u8 + bump])
            });
            img.save(images.join(format!("c{i}.png"))).unwrap();
        }
        let out = dir.path().join("run");
        let cfg = Score2dConfig {
            images: images.clone(),
            masks: None,
            out: out.clone(),
            model: "unused.onnx".into(),
            ort_lib: None,
            device: Device::Cpu,
            batch: 2,
            layers: vec![1, 2],
            size: 42,
            degrees: vec![1, 3],
            rscin_windows: vec![1, 2],
            void_background: VoidBackground::Auto,
            score: ScoreConfig {
                leiden_restarts: 4,
                ..ScoreConfig::default()
            },
            force: false,
            report: crate::messages::Reporter::silent(),
            progress: false,
        };
        // block-major views: (block 1, r 1), (1, 3), (2, 1), (2, 3): the r = 1 views feed the graph
        assert_eq!(cfg.effective_score().graph_views, vec![0, 2]);
        let inputs = prepare(&cfg, "sha").unwrap();
        assert!(!out.exists(), "prepare writes nothing");
        let mut fake = FakeEmbedder::new(&[1, 2], 8, 0);
        let run = run_with(&cfg, inputs, &mut fake, "sha").unwrap();
        assert_eq!((fake.images_embedded, fake.calls), (5, 3));
        assert_eq!(run.layout, "plain");
        let class = &run.classes[0];
        assert_eq!(class.out, out);
        assert_eq!(class.grid, (3, 3));
        assert_eq!(class.cases.len(), 5);
        assert_eq!(class.cases[2].size, (44, 42));
        assert!(class.graph().is_some());
        for (a, c) in class.cases.iter().enumerate() {
            assert!(c.label.is_none() && c.group == "image");
            let scores = &class.result.token_scores[a];
            assert_eq!(scores.len(), 9);
            // the raw score is the maximum of the written map, which has the image's size; the map
            // interpolates the tokens, so it never exceeds them (align corners: it hits only the grid
            // points whose coordinates o·(g−1)/(s−1) are integers)
            let map: Array2<f32> =
                ndarray_npy::read_npy(out.join(format!("maps/{}.npy", c.name))).unwrap();
            assert_eq!(map.dim(), c.size);
            let map_max = map.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let token_max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            assert_eq!(c.raw_score, map_max as f64);
            assert!(map_max <= token_max && map[[0, 0]] == scores[0]);
            assert!(c.score.is_finite());
            assert!(out.join(format!("overlays/{}.png", c.name)).is_file());
        }
        assert_eq!(run.summary.details["views"].as_array().unwrap().len(), 4);
        assert!(run.summary.metrics.is_none());
    }
}
