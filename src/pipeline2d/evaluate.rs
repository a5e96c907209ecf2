//! Evaluating one class: maps at each image's size, raw and RsCIN image scores, and with ground truth the
//! image and pixel metrics and AUPRO.

use ndarray::{Array2, ArrayView2};

use super::*;
use crate::backbone::PATCH;
use crate::eval::pixel::PixelAccumulator;
use crate::formats::images::{self, ImageClass};
use crate::run::summary::{ImageLevel, ImageMetrics};
use crate::score::ScoreResult;
use crate::{eval, Result};

/// Raw and RsCIN scores, labels and metrics of one class.
pub(super) struct Evaluated {
    pub(super) raw: Vec<f64>,
    pub(super) final_scores: Vec<f64>,
    pub(super) labels: Vec<Option<bool>>,
    pub(super) metrics: Option<ImageMetrics>,
}

pub(super) fn token_grid(scores: &[f32], grid: (usize, usize)) -> Array2<f32> {
    Array2::from_shape_vec(grid, scores.to_vec()).expect("M = grid positions")
}

pub(super) fn evaluate_class(
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
                pixel: acc.finish(),
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
