//! `mri-ad eval`: the metrics of a finished run recomputed from its token scores and recorded inputs.

use std::path::Path;

use serde_json::{json, Value};

use super::cases::{find_cases, BatchCase};
use super::maps::{input_voxels, map_workers, maps_and_metrics, MapsJob, Workers};
use crate::formats::{absolute, atomic, nifti};
use crate::progress::Progress;
use crate::run::folder::RUN_MARKER;
use crate::run::summary::{Summary, VolumeRun};
use crate::volume::space::BatchSpace;
use crate::volume::{canonical_grid, CropMode, PreprocessConfig, Preprocessor};
use crate::{eval, Error, Result};

/// `mri-ad eval`: recomputes the metrics of a finished run (token scores and inputs as recorded in its
/// summary.json) against the label maps of `labels`; writes `<run>/eval.json` and returns it.
pub fn evaluate_run(
    run: &Path,
    labels: &Path,
    workers: Workers,
    progress: &Progress,
) -> Result<Value> {
    let summary_path = run.join("summary.json");
    if !summary_path.is_file() {
        let problem = if run.is_file() {
            "a file, not a run folder"
        } else if !run.is_dir() {
            "no such folder"
        } else if run.join(RUN_MARKER).is_file() {
            "an unfinished run folder (no summary.json yet): run the same `mri-ad score` command again to \
             finish it"
        } else {
            "not a run folder of `mri-ad score` (it has no summary.json)"
        };
        return Err(Error::bad_argument(
            "--run",
            format!("{}: {problem}", run.display()),
        ));
    }
    let recorded = Summary::read(run)?.volume_run().map_err(|e| {
        Error::bad_input(
            &summary_path,
            format!("not a run folder of `mri-ad score --query`: {e}"),
        )
    })?;
    let size = recorded.backbone.size;
    let (query, healthy) = (recorded.query.as_path(), recorded.healthy.clone());
    for (flag, dir) in [("--query", Some(query)), ("--healthy", healthy.as_deref())] {
        let Some(dir) = dir else { continue };
        if !dir.is_dir() {
            return Err(Error::bad_input(
                &summary_path,
                format!(
                    "the {flag} folder it records, {}, does not exist{}",
                    dir.display(),
                    if dir.is_relative() {
                        " (a relative path, read from the current folder: run eval from the folder the run \
                         was made in)"
                    } else {
                        ""
                    }
                ),
            ));
        }
    }
    // The brain masks the run used (runs from before --masks existed used none).
    let cases = find_cases(
        healthy.as_deref(),
        query,
        Some(labels),
        recorded.brain_masks.as_deref(),
    )?
    .cases;
    let (scores, g) = read_token_scores(run, &cases, size)?;
    let preprocessor = recorded_preprocessor(&recorded, &cases, &summary_path)?;
    // The upsampling as the run recorded it (runs from before `maps` existed used align-corners).
    let upsample = recorded
        .maps
        .as_ref()
        .map_or(eval::Upsample::Corners, |m| m.upsample);
    let job = MapsJob {
        out: run,
        size,
        grid: [g, g, g],
        brain_only: false,
        upsample,
        with_labels: true,
        write: false,
        qc: None,
        workers: map_workers(
            workers.threads,
            workers.memory_budget,
            size,
            input_voxels(&cases)?,
            cases.len(),
        ),
    };
    let evaluation = maps_and_metrics(&job, &preprocessor, &cases, &scores, progress)?;
    let doc =
        json!({"run": absolute(run), "labels": absolute(labels), "metrics": evaluation.metrics});
    atomic::write_json(&run.join("eval.json"), &doc)?;
    Ok(doc)
}

/// The token scores of every case of a run (`token_scores/<case>.npy`) and their cube grid's edge, checked
/// against the cube size.
fn read_token_scores(
    run: &Path,
    cases: &[BatchCase],
    size: usize,
) -> Result<(Vec<Vec<f32>>, usize)> {
    let mut scores = Vec::with_capacity(cases.len());
    for c in cases {
        let path = run.join("token_scores").join(format!("{}.npy", c.input.id));
        let file = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
        let s: ndarray::Array1<f32> = ndarray_npy::ReadNpyExt::read_npy(file).map_err(|e| {
            Error::bad_input(&path, format!("not a float32 token-score vector: {e}"))
        })?;
        scores.push(s.to_vec());
    }
    let m = scores[0].len();
    let g = (m as f64).cbrt().round() as usize;
    if g * g * g != m || scores.iter().any(|s| s.len() != m) || !size.is_multiple_of(g) {
        return Err(Error::bad_input(
            run.join("token_scores"),
            format!("token scores of {m} entries do not form a cube grid for size {size}"),
        ));
    }
    Ok((scores, g))
}

/// The preprocessing as the run recorded it: its crop (runs from before `crop` existed cropped each volume
/// on its own) and its batch space (runs from before the world space: every volume on the first one's
/// grid, the box in its frame).
fn recorded_preprocessor(
    recorded: &VolumeRun,
    cases: &[BatchCase],
    summary_path: &Path,
) -> Result<Preprocessor> {
    let crop = recorded.crop.as_ref();
    let mut preprocessor = Preprocessor::new(PreprocessConfig {
        size: recorded.backbone.size,
        margin: recorded.margin,
        crop: crop.map_or(CropMode::Volume, |c| c.mode),
    })?;
    if let Some(c) = crop.filter(|c| c.mode == CropMode::Batch) {
        let space = match (&c.space, c.batch_box) {
            (Some(space), _) => space.clone(),
            (None, Some(crop)) => {
                let first = nifti::read_header(&cases[0].input.path)?;
                let size = nifti::spatial_size(&cases[0].input.path, &first)?;
                BatchSpace {
                    frame: canonical_grid(size, &first.best_affine().0).1,
                    crop,
                }
            }
            (None, None) => {
                return Err(Error::bad_input(
                    summary_path,
                    "`crop.space` and `crop.batch_box` missing: not a run folder of `mri-ad score --query`",
                ))
            }
        };
        preprocessor = preprocessor.with_space(space);
    }
    Ok(preprocessor)
}
