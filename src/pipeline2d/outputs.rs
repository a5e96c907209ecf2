//! Writing a 2D run: maps and overlays, the groups and view names of the summary, a root's summary over
//! its classes.

use std::path::Path;
use std::time::Instant;

use serde_json::json;

use super::*;
use crate::formats::atomic;
use crate::formats::images::{self, Dataset, ImageClass};
use crate::progress::Progress;
use crate::run::outdir;
use crate::run::summary::{ImageMetrics, Summary};
use crate::score::ScoreResult;
use crate::{eval, Result};

/// `good`/`defect` for a plain folder with masks, the layout's group otherwise.
pub(super) fn group_of(
    case: &images::ImageCase,
    class: &ImageClass,
    label: Option<bool>,
) -> String {
    match (case.folder_label, class.labelled, label) {
        (None, true, Some(true)) => "defect".into(),
        (None, true, _) => "good".into(),
        _ => case.group.clone(),
    }
}

/// `layer_<k>/r<r>` for every view, in view order.
pub(super) fn view_names(cfg: &Score2dConfig) -> Vec<String> {
    cfg.layers
        .iter()
        .flat_map(|l| cfg.degrees.iter().map(move |r| format!("layer_{l}/r{r}")))
        .collect()
}

/// A perceptual-ish colour ramp (black → purple → red → yellow → white) for `t` in `[0, 1]`.
pub(super) fn heat(t: f32) -> [f32; 3] {
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
pub(super) fn write_maps_and_overlays(
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
pub(super) fn overall_summary(
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
