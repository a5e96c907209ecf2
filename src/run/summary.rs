//! `summary.json` of every run kind, as one type: [`Summary`].
//!
//! * Common to every kind: the version, the command, the number of cases, the scoring part
//!   ([`ScoringSummary`]; absent from a 2D root's summary over its classes), the metrics ([`Metrics`]:
//!   volumes or images; `null` without labels), the timings and the total time.
//! * What one kind records besides (its inputs, preprocessing, backbone, the batch space) stays in
//!   [`Summary::details`], as the run wrote it; the parts that are read back have typed views:
//!   [`Summary::volume_run`] for `eval`.
//! * Written by [`Summary::write`] (atomically), read by [`Summary::read`] (errors name the file): by `eval`
//!   and by the HTML page ([`crate::report::html`]).
//!
//! Traps: numbers that can be undefined (an AUROC without positives, a NaN) are `Option<f64>`, written as
//! `null`. The keys of `details` must not repeat a common key (a debug assertion checks it).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::eval::pixel::PixelMetrics;
use crate::score::ScoreConfig;
use crate::{Error, Result};

/// The file name.
pub const SUMMARY_FILE: &str = "summary.json";

/// `summary.json` (see the module doc).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub mri_ad_version: String,
    /// `score --healthy/--query`, `score --tokens` or `score2d`.
    pub command: String,
    /// The command line that ran, as a shell would take it (the program shown as `mri-ad`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_line: Option<String>,
    /// The working directory it ran in (relative paths on the command line are relative to it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_directory: Option<String>,
    pub cases: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scoring: Option<ScoringSummary>,
    /// With labels, the metrics; `None` (`null`) without.
    #[serde(default)]
    pub metrics: Option<Metrics>,
    #[serde(default)]
    pub timings: Vec<Timing>,
    pub total_seconds: f64,
    /// Everything else the run kind records, under its own keys.
    #[serde(flatten)]
    pub details: Map<String, Value>,
}

/// One stage's wall time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    pub stage: String,
    pub seconds: f64,
}

impl Timing {
    pub fn new(stage: impl Into<String>, seconds: f64) -> Self {
        Timing {
            stage: stage.into(),
            seconds,
        }
    }
}

/// Collects the [`Timing`] of each stage of a run, in order.
#[derive(Debug, Default)]
pub struct Stopwatch {
    pub timings: Vec<Timing>,
}

impl Stopwatch {
    /// Runs `f` as the stage `name` and records its wall time (also when it fails).
    pub fn stage<T>(&mut self, name: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let t = std::time::Instant::now();
        let out = f();
        self.timings
            .push(Timing::new(name, t.elapsed().as_secs_f64()));
        out
    }

    /// Records a time measured elsewhere.
    pub fn record(&mut self, name: impl Into<String>, seconds: f64) {
        self.timings.push(Timing::new(name, seconds));
    }
}

/// The scoring part of a summary (what [`crate::score::score_batch`] did).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoringSummary {
    pub config: ScoreConfig,
    pub seed: u64,
    /// The MSM k, or one per part with `--divide`.
    pub msm_k: Value,
    /// The cases of each part (one part without `--divide`).
    pub parts: Vec<Vec<String>>,
    pub void_tokens: VoidTokens,
    pub excluded_tokens: usize,
    pub excluded_fraction: f64,
    /// CoDeGraph: how many communities were flagged.
    pub outlier_communities: Option<usize>,
    pub distance_kernel: DistanceKernel,
    pub memory_estimate_mib: f64,
    /// The similarity-scaling diagnostics (ALGORITHM.md §10).
    pub similarity_scaling: Value,
}

/// How void tokens were handled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VoidTokens {
    pub in_search: bool,
    pub active_tokens: usize,
    pub total_tokens: usize,
}

/// The distance kernel's work.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DistanceKernel {
    pub token_pairs_compared: f64,
    pub seconds: f64,
    pub gflops: f64,
}

/// The metrics of a run with labels: of images (§8.2) or of volumes (ALGORITHM.md §8.3 and more). Read
/// back in that order: image metrics have required keys, volume metrics of older runs may lack the newer
/// keys (they read as absent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Metrics {
    Images(Box<ImageMetrics>),
    Volumes(Box<VolumeMetrics>),
}

/// The metrics of a run on volumes (the keys `eval.json` and `summary.json` have always had).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VolumeMetrics {
    /// Where they are computed (the canonical cube).
    pub space: String,
    pub patient_auroc: Option<f64>,
    pub patient_f1_max: Option<f64>,
    pub voxel_auroc: Option<f64>,
    pub voxel_auroc_method: String,
    pub token_f1_max: Option<f64>,
    pub dice_threshold: Option<f64>,
    pub dice_mean: Option<f64>,
    pub dice_mean_lesion_cases: Option<f64>,
    pub dice_per_case: BTreeMap<String, Option<f64>>,
    pub token_dice_mean: Option<f64>,
    pub token_dice_mean_lesion_cases: Option<f64>,
    pub token_dice_per_case: BTreeMap<String, Option<f64>>,
    pub token_dice_note: String,
    pub voxel_f1_max: Option<f64>,
    pub voxel_f1_threshold: Option<f64>,
    pub voxel_f1_method: String,
    pub dice_at_voxel_threshold_mean: Option<f64>,
    pub dice_at_voxel_threshold_mean_lesion_cases: Option<f64>,
    pub dice_at_voxel_threshold_per_case: BTreeMap<String, Option<f64>>,
    pub dice_at_voxel_threshold_note: String,
    pub hottest_voxel_in_lesion_fraction: Option<f64>,
    pub hottest_voxel_in_lesion: BTreeMap<String, bool>,
    pub hottest_voxel_distance: BTreeMap<String, Option<f64>>,
    pub hottest_voxel_distance_method: String,
    pub voxel_ap_mean_lesion_cases: Option<f64>,
    pub voxel_ap_per_case: BTreeMap<String, Option<f64>>,
    pub voxel_ap_method: String,
}

/// The metrics of one class of images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageMetrics {
    pub images: usize,
    pub anomalous_images: usize,
    /// Of the reported image score (RsCIN).
    pub image: ImageLevel,
    /// Of the raw map maximum.
    pub image_raw_max: ImageLevel,
    pub pixel: PixelLevel,
    pub aupro: Option<f64>,
}

/// Image-level metrics of one score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageLevel {
    pub auroc: Option<f64>,
    pub ap: Option<f64>,
    pub f1_max: Option<f64>,
    pub f1_threshold: Option<f64>,
}

/// Pixel-level metrics of one class, as the 2D evaluation computes them.
pub type PixelLevel = PixelMetrics;

impl Metrics {
    /// The volume metrics, if these are.
    pub fn volumes(&self) -> Option<&VolumeMetrics> {
        match self {
            Metrics::Volumes(v) => Some(v),
            Metrics::Images(_) => None,
        }
    }

    /// The image metrics, if these are.
    pub fn images(&self) -> Option<&ImageMetrics> {
        match self {
            Metrics::Images(m) => Some(m),
            Metrics::Volumes(_) => None,
        }
    }
}

/// What `eval` needs of a run on volumes: its inputs and how they were prepared.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct VolumeRun {
    pub query: PathBuf,
    #[serde(default)]
    pub healthy: Option<PathBuf>,
    /// The brain masks folder (runs from before `--masks`: none).
    #[serde(default)]
    pub brain_masks: Option<PathBuf>,
    pub margin: usize,
    /// The crop as recorded (runs from before `crop` existed cropped each volume on its own).
    #[serde(default)]
    pub crop: Option<CropRecord>,
    /// The map upsampling as recorded (runs from before `maps` existed used align-corners).
    #[serde(default)]
    pub maps: Option<MapsRecord>,
    pub backbone: BackboneRecord,
}

/// `crop` of a volume run's summary.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct CropRecord {
    pub mode: crate::volume::CropMode,
    #[serde(default)]
    pub batch_box: Option<crate::volume::crop::CropBox>,
    /// The batch space (runs from before the world space: none, every volume on the first one's grid).
    #[serde(default)]
    pub space: Option<crate::volume::space::BatchSpace>,
}

/// `maps` of a volume run's summary.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct MapsRecord {
    pub upsample: crate::eval::Upsample,
}

/// The part of `backbone` that `eval` needs.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct BackboneRecord {
    pub size: usize,
}

/// `mri-ad` and `args`, each single-quoted for a POSIX shell when it needs it (a `'` inside becomes
/// `'\''`), so the line can be pasted back.
pub fn command_line(args: impl Iterator<Item = std::ffi::OsString>) -> String {
    let mut line = String::from("mri-ad");
    for a in args {
        let a = a.to_string_lossy();
        let plain = !a.is_empty()
            && a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
        line.push(' ');
        if plain {
            line.push_str(&a);
        } else {
            line.push('\'');
            line.push_str(&a.replace('\'', "'\\''"));
            line.push('\'');
        }
    }
    line
}

impl Summary {
    /// A summary of `command` over `cases` cases, of this version, with nothing else yet.
    pub fn new(command: &str, cases: usize) -> Self {
        Summary {
            mri_ad_version: env!("CARGO_PKG_VERSION").to_string(),
            command: command.to_string(),
            command_line: Some(command_line(std::env::args_os().skip(1))),
            working_directory: std::env::current_dir()
                .ok()
                .map(|d| d.display().to_string()),
            cases,
            scoring: None,
            metrics: None,
            timings: Vec::new(),
            total_seconds: 0.0,
            details: Map::new(),
        }
    }

    /// Records `value` under `key` in [`Summary::details`].
    pub fn detail(&mut self, key: &str, value: impl Serialize) -> &mut Self {
        debug_assert!(
            ![
                "mri_ad_version",
                "command",
                "command_line",
                "working_directory",
                "cases",
                "scoring",
                "metrics",
                "timings",
                "total_seconds"
            ]
            .contains(&key),
            "{key} is a common key"
        );
        let value = serde_json::to_value(value).expect("summary details serialise");
        self.details.insert(key.to_string(), value);
        self
    }

    /// Writes `<out>/summary.json` atomically.
    pub fn write(&self, out: &Path) -> Result<()> {
        crate::formats::atomic::write_json(&out.join(SUMMARY_FILE), self)
    }

    /// Reads a run folder's `summary.json`.
    pub fn read(run: &Path) -> Result<Summary> {
        let path = run.join(SUMMARY_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        serde_json::from_str(&text)
            .map_err(|e| Error::bad_input(&path, format!("not a run summary: {e}")))
    }

    /// The inputs and preparation of a run on volumes (`Err`: what is missing, as a run of another kind
    /// lacks it).
    pub fn volume_run(&self) -> std::result::Result<VolumeRun, String> {
        serde_json::from_value(Value::Object(self.details.clone())).map_err(|e| e.to_string())
    }

    /// The volume metrics, if the run has them.
    pub fn volume_metrics(&self) -> Option<&VolumeMetrics> {
        self.metrics.as_ref().and_then(Metrics::volumes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_quoted_for_a_shell() {
        let args = ["score", "--out", "my run", "--query", "it's"].map(std::ffi::OsString::from);
        assert_eq!(
            command_line(args.into_iter()),
            "mri-ad score --out 'my run' --query 'it'\\''s'"
        );
    }

    #[test]
    fn details_stay_at_the_top_level_and_metrics_are_told_apart() {
        let mut s = Summary::new("score --tokens", 3);
        s.detail("tokens", "/data/t").detail("dim", 32);
        s.metrics = Some(Metrics::Images(Box::new(ImageMetrics {
            images: 3,
            anomalous_images: 1,
            image: ImageLevel {
                auroc: Some(1.0),
                ap: None,
                f1_max: None,
                f1_threshold: None,
            },
            image_raw_max: ImageLevel {
                auroc: Some(0.5),
                ap: None,
                f1_max: None,
                f1_threshold: None,
            },
            pixel: PixelLevel {
                auroc: None,
                ap: None,
                f1_max: None,
                f1_threshold: None,
                pixels: 10,
                positive_pixels: 2,
                method: "exact".into(),
            },
            aupro: Some(0.3),
        })));
        let json: Value = serde_json::to_value(&s).unwrap();
        assert_eq!(json["tokens"], "/data/t");
        assert_eq!(json["metrics"]["image"]["auroc"], 1.0);
        let back: Summary = serde_json::from_value(json).unwrap();
        assert_eq!(back, s);
        assert!(back.metrics.as_ref().unwrap().images().is_some());
        assert!(back.volume_run().is_err(), "no volume details");
    }
}
