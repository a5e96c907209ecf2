//! Embedding one class: each image resized and normalised for the backbone, its patch tokens through
//! LNAMD into token sets, its `cls` embedding for RsCIN, the void background.

use ndarray::{Array2, Array3, Array4, Axis};

use super::*;
use crate::backbone::{Embedder, PATCH};
use crate::formats::images::{self, ImageClass};
use crate::progress::Progress;
use crate::{Error, Result, TokenSet};

/// An image resized to `size × size` with [`images::resize_bilinear`] and written, ImageNet-normalised,
/// into `dst` `[3, size, size]` (grey replicated into the three channels).
///
/// Returns the background fraction of every `patch × patch` cell of the resized image (raster order):
/// the share of its pixels that are exactly 0 in every channel (see [`images::background_fractions`]).
pub(super) fn fill_model_input(
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

/// Token sets and `cls` embeddings of one class.
pub(super) fn embed_class(
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
pub(super) struct Embedded {
    pub(super) sets: Vec<TokenSet>,
    /// `cls` embeddings `[N, C]`.
    pub(super) cls: Array2<f32>,
    /// Pixel format of every file.
    pub(super) formats: Vec<String>,
    /// Whether the exact-zero background was made void (`--void-background`, resolved for `auto`).
    pub(super) void_active: bool,
}
