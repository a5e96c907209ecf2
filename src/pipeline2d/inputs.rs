//! The inputs of a 2D run, checked before the model is loaded: discovery, the run folder's request, every
//! image header and mask.

use std::path::Path;
use std::time::Instant;

use serde_json::{json, Value};

use super::*;
use crate::formats::images::{self, Dataset, ImageClass};
use crate::run::folder::{
    check_inputs_outside_outputs, hash_files, replaces_another_run, run_request,
};
use crate::run::outputs::run_settings;
use crate::{Error, Result};

/// The checked inputs of a run: what [`prepare`] returns and [`run_with`] works on.
pub struct Inputs {
    pub(super) dataset: Dataset,
    pub(super) checked: Vec<Vec<Checked>>,
    /// The run's request (every class) and each class's own (for its folder of an MVTec root).
    pub(super) request: Value,
    pub(super) class_requests: Vec<Value>,
    pub(super) seconds: f64,
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
        let files = dataset_files(&dataset);
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
pub(super) fn settings_2d(cfg: &Score2dConfig, model_sha256: &str) -> Result<toml::Table> {
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
pub(super) fn requests(
    cfg: &Score2dConfig,
    dataset: &Dataset,
    model_sha256: &str,
) -> Result<(Value, Vec<Value>)> {
    let settings = settings_2d(cfg, model_sha256)?;
    let files = dataset_files(dataset);
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
pub(super) struct Checked {
    pub(super) size: (usize, usize),
    pub(super) label: Option<bool>,
}

/// Checks every image header and every mask (size, readability) and derives the labels.
pub(super) fn check_class(class: &ImageClass) -> Result<Vec<Checked>> {
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

/// Every input file of a dataset, images and masks, in case order.
fn dataset_files(dataset: &images::Dataset) -> Vec<&Path> {
    dataset
        .classes
        .iter()
        .flat_map(|c| &c.cases)
        .flat_map(|c| std::iter::once(c.image.as_path()).chain(c.mask.as_deref()))
        .collect()
}
