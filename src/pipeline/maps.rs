//! The maps and metrics pass of a volume run: each case's anomaly map (and mask) written on its input's
//! own grid and, with labels, the metrics of ALGORITHM.md §8.3 and the supplementary Dice; shared by
//! `score` and `eval`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use ndarray::Array3;
use serde_json::{json, Value};

use super::cases::{lesion_cube, BatchCase};
use crate::formats::nifti;
use crate::parallel::map_in_order;
use crate::progress::Progress;
use crate::report;
use crate::run::outdir;
use crate::run::summary::{Metrics, VolumeMetrics};
use crate::volume::Preprocessor;
use crate::{eval, Error, Result};

pub(super) struct Evaluation {
    pub(super) case_labels: Vec<Option<u8>>,
    pub(super) metrics: Option<Metrics>,
    pub(super) masks_note: Value,
    /// Seconds spent drawing the QC montages.
    pub(super) qc_seconds: f64,
    /// Case → where its map is hottest, in its input (`summary.json` `hottest_voxel`).
    pub(super) hottest: Value,
}

/// What [`maps_and_metrics`] works on.
pub(super) struct MapsJob<'a> {
    pub(super) out: &'a Path,
    pub(super) size: usize,
    pub(super) grid: [usize; 3],
    pub(super) upsample: eval::Upsample,
    /// Zero the written maps outside each input's brain.
    pub(super) brain_only: bool,
    pub(super) with_labels: bool,
    /// Write the maps and masks (false: metrics only, for `eval`).
    pub(super) write: bool,
    /// Draw the QC montages into this folder.
    pub(super) qc: Option<PathBuf>,
    /// How many cases are worked on at once (see [`map_workers`]).
    pub(super) workers: usize,
}

/// How many volumes `eval` works on at once: `threads` (0 = one per core) within `memory_budget` MiB, as
/// `--threads` and `--memory-budget` of `score`.
#[derive(Debug, Clone, Copy)]
pub struct Workers {
    pub threads: usize,
    pub memory_budget: usize,
}

/// Bytes one case needs in the maps stage, an estimate on the high side (measured at 224³ with 1-mm MNI
/// inputs: about half of it; a map with mostly distinct values can need more for its voxel-AP groups): the
/// cube, its brain mask, the upsampled map, the lesion cube, the predicted mask and the sorted voxel-AP
/// groups of an `S³` cube (about 32 bytes per cube voxel), the input volume, its label map and the map and
/// mask resampled onto its grid (16 bytes per input voxel), and the case's 2²⁰-bin histogram.
pub(super) fn map_case_bytes(size: usize, input_voxels: usize) -> usize {
    32 * size.pow(3) + 16 * input_voxels + 16 * HISTOGRAM_BINS
}

/// How many volumes the crop box, Nyúl and maps stages work on at once: `threads` (0 = one per core), no
/// more than the cases, and no more than `budget_mib` holds at [`map_case_bytes`] each (at least one).
pub(super) fn map_workers(
    threads: usize,
    budget_mib: usize,
    size: usize,
    input_voxels: usize,
    cases: usize,
) -> usize {
    let threads = if threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        threads
    };
    let fit = budget_mib * 1024 * 1024 / map_case_bytes(size, input_voxels);
    threads.min(fit).min(cases).max(1)
}

/// The number of voxels of the largest input volume (from the headers), to size [`map_workers`].
pub(super) fn input_voxels(cases: &[BatchCase]) -> Result<usize> {
    let mut most = 0;
    for case in cases {
        let h = nifti::read_header(&case.input.path)?;
        most = most.max(h.dim[1..4].iter().map(|&d| d.max(1) as usize).product());
    }
    Ok(most)
}

/// What the first pass over one case gives (its voxels go straight into the batch histogram).
pub(super) struct CasePass {
    /// With labels: 1 when the case has a lesion.
    pub(super) label: Option<u8>,
    /// Lesion cases: the distance in cube voxels from the hottest voxel of the upsampled map to the lesion
    /// (0: it lies in the lesion; otherwise how near a miss is).
    pub(super) hottest_distance: Option<f64>,
    /// Lesion cases: the voxel AP of the case's own map (threshold-free, no shared threshold).
    pub(super) ap: Option<f64>,
    /// Without labels: the fit of the label-free mask threshold of §9.
    pub(super) gmm: Option<Value>,
    /// With labels: the token labels (a token is positive when its block holds a lesion voxel).
    pub(super) token_labels: Vec<bool>,
    pub(super) qc_seconds: f64,
    /// Where the upsampled map is hottest: input voxel and world mm ([`hottest_place`]).
    pub(super) hottest: Value,
}

/// What the passes over the cases share.
pub(super) struct MapsContext<'a> {
    pub(super) job: &'a MapsJob<'a>,
    pub(super) preprocessor: &'a Preprocessor,
    pub(super) scores: &'a [Vec<f32>],
    pub(super) maps_dir: Option<PathBuf>,
    pub(super) gmm_masks_dir: Option<PathBuf>,
    pub(super) overlay: (f32, f32),
    pub(super) range: (f32, f32),
}

impl MapsContext<'_> {
    fn token_grid(&self, a: usize) -> Array3<f32> {
        let g = self.job.grid;
        Array3::from_shape_vec((g[0], g[1], g[2]), self.scores[a].clone())
            .expect("token scores have M = grid entries")
    }

    fn upsampled(&self, a: usize) -> Array3<f32> {
        let s = self.job.size;
        eval::upsample_trilinear(self.token_grid(a).view(), [s, s, s], self.job.upsample)
    }

    /// Pass 1 for case `a`: its map on its input's grid, the label-free mask without labels, its QC montage,
    /// and with labels its per-case metrics, token labels and histogram counts.
    fn first_pass(
        &self,
        a: usize,
        c: &BatchCase,
        histogram: &Mutex<eval::ScoreHistogram>,
    ) -> Result<CasePass> {
        let (volume, brain_mask) = c.input.files().read()?;
        let prepared = self.preprocessor.prepare(&volume, brain_mask.as_ref())?;
        let up = self.upsampled(a);
        let mut pass = CasePass {
            label: None,
            hottest_distance: None,
            ap: None,
            gmm: None,
            token_labels: Vec::new(),
            qc_seconds: 0.0,
            hottest: Value::Null,
        };
        // The hottest voxel and where it lies in the input: found once, for summary.json, the QC montage
        // and the lesion distance.
        let hot = report::plots::qc::hottest(up.view());
        let place = input_place(&prepared.transform);
        pass.hottest = hottest_place(hot, place.as_ref());
        if let Some(dir) = &self.maps_dir {
            let mut native = prepared.transform.map_to_native(&up, 0.0)?;
            if self.job.brain_only {
                zero_outside_brain(&mut native, &volume, brain_mask.as_ref());
            }
            nifti::write_map_like(
                &dir.join(format!("{}_anomaly.nii.gz", c.input.id)),
                &volume,
                &native,
            )?;
        }
        if let Some(dir) = &self.gmm_masks_dir {
            let fit = gmm_mask_threshold(&up, &prepared.mask, &c.input.path)?;
            let predicted = ndarray::Zip::from(&up)
                .and(&prepared.mask)
                .map_collect(|&v, &brain| (brain && v as f64 > fit.tau) as u8);
            let native = prepared.transform.mask_to_native(&predicted)?;
            nifti::write_mask_like(
                &dir.join(format!("{}_mask.nii.gz", c.input.id)),
                &volume,
                &native,
            )?;
            pass.gmm = Some(serde_json::to_value(&fit).expect("serialisable"));
        }
        let mask = if self.job.with_labels {
            Some(lesion_cube(c, &prepared.transform)?)
        } else {
            None
        };
        if let Some(dir) = &self.job.qc {
            let t = Instant::now();
            let image = report::plots::QcImage {
                case: &c.input.id,
                cube: prepared.cube.view(),
                map: up.view(),
                label: mask.as_ref().map(|m| m.view()),
                threshold: self.overlay.0,
                top: self.overlay.1,
                score: self.scores[a]
                    .iter()
                    .copied()
                    .fold(f32::NEG_INFINITY, f32::max),
                hottest: hot,
                place,
            };
            report::plots::qc_montage(&dir.join(format!("{}.png", c.input.id)), &image)?;
            pass.qc_seconds = t.elapsed().as_secs_f64();
        }
        drop(prepared);
        drop(volume);
        if let Some(mask) = mask {
            let lesion = mask.iter().any(|&v| v);
            pass.label = Some(lesion as u8);
            if lesion {
                // The same voxel the QC montage marks (ties: the one nearest their centre).
                pass.hottest_distance = eval::distance_to_mask(mask.view(), hot);
                pass.ap = eval::average_precision(
                    up.as_slice().expect("upsampled maps are contiguous"),
                    mask.as_slice().expect("lesion cubes are contiguous"),
                );
            }
            let patch = self.job.size / self.job.grid[0];
            pass.token_labels = eval::pool_labels(mask.view(), patch)
                .iter()
                .copied()
                .collect();
            // Integer counts: the batch histogram is the same whatever order the cases finish in.
            let mut counts =
                eval::ScoreHistogram::new(self.range.0 as f64, self.range.1 as f64, HISTOGRAM_BINS);
            counts.add(up.iter().copied(), mask.iter().copied());
            histogram
                .lock()
                .expect("no worker panicked holding the histogram")
                .merge(&counts);
        }
        Ok(pass)
    }

    /// Pass 2 for case `a`: its Dice at the threshold `t` (none: nothing is predicted), its Dice at the
    /// voxel-level threshold `t_voxel` and, with `masks_dir`, its binary mask at `t` on its input's grid.
    fn second_pass(
        &self,
        a: usize,
        c: &BatchCase,
        t: Option<f64>,
        t_voxel: Option<f64>,
        masks_dir: Option<&Path>,
    ) -> Result<(f64, f64)> {
        let (volume, brain_mask) = c.input.files().read()?;
        let prepared = self.preprocessor.prepare(&volume, brain_mask.as_ref())?;
        let up = self.upsampled(a);
        let mask = lesion_cube(c, &prepared.transform)?;
        let predicted = up.mapv(|v| t.is_some_and(|t| v as f64 >= t));
        let dice = eval::dice(predicted.iter().copied(), mask.iter().copied());
        let dice_voxel = eval::dice(
            up.iter().map(|&v| t_voxel.is_some_and(|t| v as f64 >= t)),
            mask.iter().copied(),
        );
        if let Some(dir) = masks_dir {
            let native = prepared
                .transform
                .mask_to_native(&predicted.mapv(|v| v as u8))?;
            nifti::write_mask_like(
                &dir.join(format!("{}_mask.nii.gz", c.input.id)),
                &volume,
                &native,
            )?;
        }
        Ok((dice, dice_voxel))
    }
}

/// Sets `map` (on the input's grid) to 0 outside the input's brain, by the preprocessing's rule
/// ([`crate::volume::native_brain`]: its `--masks` mask > 0, or its voxels > 0).
fn zero_outside_brain(
    map: &mut Array3<f32>,
    volume: &crate::formats::nifti::Volume,
    brain: Option<&crate::formats::nifti::Volume>,
) {
    let brain = crate::volume::native_brain(volume, brain);
    ndarray::Zip::from(map).and(&brain).for_each(|m, &inside| {
        if !inside {
            *m = 0.0;
        }
    });
}

/// Where the hottest voxel `hot` (cube `(z, y, x)`, the voxel the QC montage marks) lies: the input voxel
/// `(i, j, k)` nearest to it and the world point in RAS+ mm when `place` is known, and the cube voxel.
fn hottest_place(
    hot: (usize, usize, usize),
    place: Option<&report::plots::qc::InputPlace>,
) -> Value {
    let cube = [hot.0, hot.1, hot.2];
    match place {
        Some(place) => {
            let (v, w) = place.locate(hot);
            json!({"input_ijk": v, "world_mm": w.map(|c| (c * 100.0).round() / 100.0), "cube_zyx": cube})
        }
        None => json!({"cube_zyx": cube}),
    }
}

/// How the case's cube lies in its input (for the QC montage's hottest point); `None` for a singular affine.
fn input_place(t: &crate::volume::Transform) -> Option<report::plots::qc::InputPlace> {
    Some(report::plots::qc::InputPlace {
        cube_to_world: t.cube_affine(),
        world_to_input: nifti::invert_affine(&t.native_affine)?,
        input_axes: nifti::orientation_code(&t.native_affine),
    })
}

/// `Some(v)` for a finite `v` (JSON has no NaN: a non-finite metric is written as null, as before).
fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

/// Bins of the voxel-AUROC histogram.
pub(super) const HISTOGRAM_BINS: usize = 1 << 20;

/// Writes the anomaly maps on each input's grid and, with labels, computes the metrics of §8.3 and writes
/// the binary masks at the token-grid F1-max threshold. Cases are worked on `job.workers` at a time
/// ([`map_in_order`]); every result is gathered in case order, so the outputs do not depend on the number of
/// workers.
pub(super) fn maps_and_metrics(
    job: &MapsJob,
    preprocessor: &Preprocessor,
    cases: &[BatchCase],
    scores: &[Vec<f32>],
    progress: &Progress,
) -> Result<Evaluation> {
    let range = eval::score_range(scores);
    let ctx = MapsContext {
        job,
        preprocessor,
        scores,
        maps_dir: if job.write {
            Some(outdir::subdir(job.out, "maps")?)
        } else {
            None
        },
        // Without labels: the label-free masks of §9, one GMM threshold per volume.
        gmm_masks_dir: if job.write && !job.with_labels {
            Some(outdir::subdir(job.out, "masks")?)
        } else {
            None
        },
        overlay: report::plots::qc::overlay_range(scores),
        range,
    };
    let histogram = Mutex::new(eval::ScoreHistogram::new(
        range.0 as f64,
        range.1 as f64,
        HISTOGRAM_BINS,
    ));
    // Pass 1: maps; with labels, cube-space lesion masks → token labels and the voxel histogram.
    let bar = progress.bar(
        cases.len() as u64,
        if job.write { "maps" } else { "evaluation" },
    );
    let passes = map_in_order(job.workers, cases, &|| bar.inc(1), &|a, c| {
        ctx.first_pass(a, c, &histogram)
    })?;
    bar.finish_and_clear();
    let qc_seconds = passes.iter().map(|p| p.qc_seconds).sum();
    let hottest: serde_json::Map<String, Value> = cases
        .iter()
        .zip(&passes)
        .map(|(c, p)| (c.input.id.clone(), p.hottest.clone()))
        .collect();
    let hottest = Value::Object(hottest);
    let case_labels: Vec<Option<u8>> = passes.iter().map(|p| p.label).collect();
    if !job.with_labels {
        let gmm_per_case: serde_json::Map<String, Value> = cases
            .iter()
            .zip(&passes)
            .filter_map(|(c, p)| Some((c.input.id.clone(), p.gmm.clone()?)))
            .collect();
        return Ok(Evaluation {
            case_labels,
            metrics: None,
            masks_note: if job.write {
                json!({
                    "threshold": "label-free: per volume, the GMM threshold of ALGORITHM.md §9 (q_tr 0.95, alpha_tail 0.01) \
                                  fitted on the brain voxels of the upsampled S³ map (at most 2^18 of them, an even stride); \
                                  mask = brain voxel with value > tau",
                    "per_case": gmm_per_case,
                })
            } else {
                Value::Null
            },
            qc_seconds,
            hottest,
        });
    }
    let histogram = histogram
        .into_inner()
        .expect("no worker panicked holding the histogram");
    let token_scores: Vec<f32> = scores.iter().flatten().copied().collect();
    let token_labels: Vec<bool> = passes
        .iter()
        .flat_map(|p| p.token_labels.iter().copied())
        .collect();
    let lesion_cases: Vec<(&BatchCase, &CasePass)> = cases
        .iter()
        .zip(&passes)
        .filter(|(_, p)| p.label == Some(1))
        .collect();
    let hottest_distance: Vec<(String, f64)> = lesion_cases
        .iter()
        .map(|(c, p)| {
            let d = p.hottest_distance.expect("a lesion case has a lesion");
            (c.input.id.clone(), d)
        })
        .collect();
    let case_ap: Vec<(String, f64)> = lesion_cases
        .iter()
        .map(|(c, p)| {
            (
                c.input.id.clone(),
                p.ap.expect("a lesion case has positives"),
            )
        })
        .collect();
    // Patient level.
    let patient_scores: Vec<f32> = scores
        .iter()
        .map(|s| s.iter().copied().fold(f32::NEG_INFINITY, f32::max))
        .collect();
    let patient_labels: Vec<bool> = case_labels.iter().map(|l| *l == Some(1)).collect();
    let threshold = eval::f1_max(&token_scores, &token_labels);
    // Pass 2: Dice at t* and at the voxel-level threshold, and the binary masks (at t*) on each input's grid.
    let t = threshold.map(|b| b.1);
    let masks_dir = if job.write {
        Some(outdir::subdir(job.out, "masks")?)
    } else {
        None
    };
    let bar = progress.bar(
        cases.len() as u64,
        if job.write { "Dice and masks" } else { "Dice" },
    );
    let voxel_best = histogram.f1_max();
    let t_voxel = voxel_best.map(|b| b.1);
    let both = map_in_order(job.workers, cases, &|| bar.inc(1), &|a, c| {
        ctx.second_pass(a, c, t, t_voxel, masks_dir.as_deref())
    })?;
    bar.finish_and_clear();
    let token_dice = eval::ThresholdDice::new(
        threshold,
        scores
            .iter()
            .zip(&passes)
            .map(|(s, p)| eval::token_dice(s, &p.token_labels, t))
            .collect(),
        &patient_labels,
    );
    let dice = eval::ThresholdDice::new(
        threshold,
        both.iter().map(|d| d.0).collect(),
        &patient_labels,
    );
    let dice_voxel = eval::ThresholdDice::new(
        voxel_best,
        both.iter().map(|d| d.1).collect(),
        &patient_labels,
    );
    let by_case = |values: &[f64]| -> BTreeMap<String, Option<f64>> {
        cases
            .iter()
            .zip(values)
            .map(|(c, &d)| (c.input.id.clone(), finite(d)))
            .collect()
    };
    let metrics = VolumeMetrics {
        space: format!(
            "canonical cube {}³ (labels resampled by nearest neighbour)",
            job.size
        ),
        patient_auroc: eval::auroc(&patient_scores, &patient_labels),
        patient_f1_max: eval::f1_max(&patient_scores, &patient_labels).map(|b| b.0),
        voxel_auroc: histogram.auroc(),
        voxel_auroc_method: "2^20-bin histogram of the upsampled maps (ties within a bin count 1/2)".into(),
        token_f1_max: dice.f1_max,
        dice_threshold: dice.threshold,
        dice_mean: finite(dice.mean),
        dice_mean_lesion_cases: dice.mean_lesion,
        dice_per_case: by_case(&dice.per_case),
        token_dice_mean: finite(token_dice.mean),
        token_dice_mean_lesion_cases: token_dice.mean_lesion,
        token_dice_per_case: by_case(&token_dice.per_case),
        token_dice_note: "not ALGORITHM.md §8.3: per case, the Dice on the token grid of the tokens >= dice_threshold against the token labels (a token is lesion when any of its voxels is); pooled over all cases this Dice is token_f1_max".into(),
        voxel_f1_max: dice_voxel.f1_max,
        voxel_f1_threshold: dice_voxel.threshold,
        voxel_f1_method: "2^20-bin histogram of the upsampled maps against the cube-space lesion masks, pooled over all cases; the threshold is the lower edge of the best bin (predict map >= threshold)".into(),
        dice_at_voxel_threshold_mean: finite(dice_voxel.mean),
        dice_at_voxel_threshold_mean_lesion_cases: dice_voxel.mean_lesion,
        dice_at_voxel_threshold_per_case: by_case(&dice_voxel.per_case),
        dice_at_voxel_threshold_note: "not ALGORITHM.md §8.3 (whose Dice, dice_*, is at the token-grid threshold dice_threshold): the same Dice at the voxel-level F1-max threshold voxel_f1_threshold (the threshold of voxel-level protocols); the masks use dice_threshold".into(),
        hottest_voxel_in_lesion_fraction: (!hottest_distance.is_empty()).then(|| {
            hottest_distance.iter().filter(|h| h.1 == 0.0).count() as f64 / hottest_distance.len() as f64
        }),
        hottest_voxel_in_lesion: hottest_distance
            .iter()
            .map(|(c, d)| (c.clone(), *d == 0.0))
            .collect(),
        hottest_voxel_distance: hottest_distance
            .iter()
            .map(|(c, d)| (c.clone(), finite(*d)))
            .collect(),
        hottest_voxel_distance_method: "per lesion case, Euclidean distance in cube voxels from the hottest voxel to the nearest lesion voxel (0 inside)".into(),
        voxel_ap_mean_lesion_cases: (!case_ap.is_empty())
            .then(|| case_ap.iter().map(|c| c.1).sum::<f64>() / case_ap.len() as f64),
        voxel_ap_per_case: case_ap.iter().map(|(c, v)| (c.clone(), finite(*v))).collect(),
        voxel_ap_method: "per lesion case, exact average precision (scikit-learn's definition) of its upsampled map over every voxel of its cube".into(),
    };
    Ok(Evaluation {
        case_labels,
        metrics: Some(Metrics::Volumes(Box::new(metrics))),
        masks_note: json!("threshold: the token-grid F1-max threshold t* (dice_threshold), applied to the upsampled maps"),
        qc_seconds,
        hottest,
    })
}

/// The §9 threshold of one volume's upsampled map, fitted on its brain voxels (an even stride keeps at most
/// 2^18 of them: the EM runs 100 iterations at most, and a few hundred thousand values pin the two
/// Gaussians down).
pub(super) fn gmm_mask_threshold(
    up: &Array3<f32>,
    brain: &Array3<bool>,
    path: &Path,
) -> Result<eval::gmm::GmmThreshold> {
    let values: Vec<f32> = up
        .iter()
        .zip(brain.iter())
        .filter(|(_, &b)| b)
        .map(|(&v, _)| v)
        .collect();
    let stride = values.len().div_ceil(1 << 18).max(1);
    let sample: Vec<f32> = values.iter().step_by(stride).copied().collect();
    eval::gmm::gmm_threshold(
        &sample,
        eval::gmm::DEFAULT_Q_TR,
        eval::gmm::DEFAULT_ALPHA_TAIL,
    )
    .map_err(|e| Error::bad_input(path, format!("the label-free mask threshold failed: {e}")))
}

#[cfg(test)]
mod tests {
    #[test]
    fn maps_are_zero_outside_the_brain_of_the_mask_or_of_the_volume() {
        use crate::formats::nifti;
        let volume = |data: Vec<f32>| nifti::Volume {
            path: "v.nii.gz".into(),
            data: Array3::from_shape_vec((1, 1, 4), data).unwrap(),
            header: nifti::header_for_affine(&nifti::identity()),
            affine: nifti::identity(),
        };
        let image = volume(vec![0.0, 5.0, 3.0, 0.0]);
        let mut map = Array3::from_elem((1, 1, 4), 0.5f32);
        super::zero_outside_brain(&mut map, &image, None);
        assert_eq!(map.as_slice().unwrap(), &[0.0, 0.5, 0.5, 0.0]);
        let mask = volume(vec![1.0, 1.0, 0.0, 0.0]);
        let mut map = Array3::from_elem((1, 1, 4), 0.5f32);
        super::zero_outside_brain(&mut map, &image, Some(&mask));
        assert_eq!(
            map.as_slice().unwrap(),
            &[0.5, 0.5, 0.0, 0.0],
            "the mask wins"
        );
    }

    use super::*;

    #[test]
    fn map_workers_are_capped_by_threads_cases_and_memory() {
        // 224³ cube, 197 × 233 × 189 input: about 0.5 GiB a case.
        let (size, voxels) = (224, 197 * 233 * 189);
        let per_case = map_case_bytes(size, voxels);
        assert!((400 << 20..600 << 20).contains(&per_case), "{per_case}");
        assert_eq!(map_workers(16, 1 << 20, size, voxels, 30), 16, "threads");
        assert_eq!(map_workers(16, 1 << 20, size, voxels, 5), 5, "cases");
        let budget_mib = 3 * per_case / (1 << 20) + 1;
        assert_eq!(map_workers(16, budget_mib, size, voxels, 30), 3, "memory");
        assert_eq!(map_workers(16, 1, size, voxels, 30), 1, "at least one");
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(
            map_workers(0, 1 << 20, size, voxels, 1000),
            cores,
            "0 = one per core"
        );
    }
}
