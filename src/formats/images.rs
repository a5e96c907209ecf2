//! 2D images for `mri-ad score2d`: decoding, resizing, masks and dataset discovery.
//!
//! * Input: PNG (8- and 16-bit, grey, grey+alpha, RGB, RGBA, palette), JPEG (grey, RGB), TIFF (8-
//!   and 16-bit, and 32-bit float with values in `[0, 1]`). The format is recognised from the file's
//!   content, not its extension.
//! * Output: [`Image`]: grey `[H, W]` or RGB `[3, H, W]` f32 in `[0, 1]` (integer samples divided by their
//!   type's maximum, 255 or 65535); masks as `[H, W]` bool (a pixel is positive when any colour channel is
//!   > 0); a [`Dataset`] of classes, each a batch of [`ImageCase`]s.
//!
//! Layouts recognised by [`discover`]:
//! * **MVTec AD**: `--images` is a class folder (`<class>/test/<defect>/*.png` with
//!   `<class>/ground_truth/<defect>/<stem>_mask.png`; `good` = normal, no mask), or the dataset root whose
//!   subfolders are such classes (each class is scored as its own batch, ALGORITHM.md §8.2). `train/` is not
//!   read (zero-shot: the test images are the batch). Case names are `<defect>_<stem>`.
//! * **Plain folder**: the image files directly in `--images` (not recursive; other files are ignored),
//!   case name = file stem. Optional `--masks` folder: the mask of `<stem>.<ext>` is `<stem>.<ext'>` or
//!   `<stem>_mask.<ext'>` (any supported extension); an image without a mask is normal (all-zero mask); a
//!   mask without an image is an error (it usually means misnamed files).
//!
//! Traps:
//! * **Alpha** is ignored: the colour values are used as stored (not composited on a background).
//! * **16-bit** images are divided by 65535: a 16-bit scan that uses only a small part of the range (e.g.
//!   0–4000) looks dark to the model; stretch it when exporting (as `scripts/data/make_slices2d.py` does).
//! * **Resizing** for the model is PIL's `BILINEAR` resampling ([`resize_bilinear`]): a triangle filter
//!   whose support grows with the reduction factor (antialiased), as DINOv2/MuSc preprocessing gets from
//!   `torchvision.transforms.Resize` on PIL images, computed here in f32/f64 instead of PIL's 8-bit.
//! * **A mask must have its image's size**; a different size is an error naming the mask (resizing a mask
//!   silently would hide a pairing mistake).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ndarray::{Array2, Array3, ArrayView2, ArrayView3, Axis};

use crate::{Error, Result};

/// File extensions (lower case) recognised as images.
pub const IMAGE_EXTENSIONS: [&str; 5] = ["png", "jpg", "jpeg", "tif", "tiff"];

/// Pixels of a decoded image, values in `[0, 1]`.
#[derive(Debug, Clone)]
pub enum Pixels {
    /// One channel, `[H, W]`.
    Grey(Array2<f32>),
    /// Three channels, `[3, H, W]`.
    Rgb(Array3<f32>),
}

/// A decoded image.
#[derive(Debug, Clone)]
pub struct Image {
    pub pixels: Pixels,
    /// What the file held, e.g. `"8-bit grey"`, `"16-bit RGBA (alpha ignored)"` (for summaries).
    pub format: String,
}

impl Image {
    /// `(height, width)`.
    pub fn size(&self) -> (usize, usize) {
        match &self.pixels {
            Pixels::Grey(g) => g.dim(),
            Pixels::Rgb(c) => (c.dim().1, c.dim().2),
        }
    }

    /// Whether every pixel of the outermost rows and columns is exactly 0 in every channel (an image on
    /// a true black background, such as a skull-stripped MRI slice).
    pub fn has_zero_frame(&self) -> bool {
        let (h, w) = self.size();
        let zero = |y: usize, x: usize| self.rgb_at(y, x) == [0.0; 3];
        (0..w).all(|x| zero(0, x) && zero(h - 1, x)) && (0..h).all(|y| zero(y, 0) && zero(y, w - 1))
    }

    /// The image as RGB `[H, W]` triples in `[0, 1]` (grey replicated), for overlays.
    pub fn rgb_at(&self, y: usize, x: usize) -> [f32; 3] {
        match &self.pixels {
            Pixels::Grey(g) => [g[[y, x]]; 3],
            Pixels::Rgb(c) => [c[[0, y, x]], c[[1, y, x]], c[[2, y, x]]],
        }
    }
}

/// The background fraction of every `patch × patch` cell of `channels` `[C, H, W]` (raster order over the
/// `(H/patch) × (W/patch)` cells): the share of its pixels that are exactly 0 in every channel. Exact zero,
/// not "dark": a skull-stripped MRI slice has a true zero background, and the antialiased resize keeps it
/// exactly 0 away from the brain (a weighted sum of zeros), while a photograph's dark areas are rarely 0.
pub fn background_fractions(channels: ArrayView3<f32>, patch: usize) -> Vec<f64> {
    let (_, h, w) = channels.dim();
    let (gh, gw) = (h / patch, w / patch);
    let cell = (patch * patch) as f64;
    let mut out = Vec::with_capacity(gh * gw);
    for i in 0..gh {
        for j in 0..gw {
            let mut zero = 0usize;
            for y in i * patch..(i + 1) * patch {
                for x in j * patch..(j + 1) * patch {
                    if channels.axis_iter(Axis(0)).all(|c| c[[y, x]] == 0.0) {
                        zero += 1;
                    }
                }
            }
            out.push(zero as f64 / cell);
        }
    }
    out
}

/// A reader whose format is recognised from the content (an error naming the file otherwise).
fn reader(path: &Path) -> Result<image::ImageReader<std::io::BufReader<std::fs::File>>> {
    let reader = image::ImageReader::open(path)
        .map_err(|e| Error::io(path, e))?
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))?;
    match reader.format() {
        Some(image::ImageFormat::Png | image::ImageFormat::Jpeg | image::ImageFormat::Tiff) => {
            Ok(reader)
        }
        _ => Err(Error::bad_input(
            path,
            "not a valid PNG, JPEG or TIFF file (unrecognised content)",
        )),
    }
}

fn decode(path: &Path) -> Result<image::DynamicImage> {
    reader(path)?.decode().map_err(|e| {
        Error::bad_input(
            path,
            format!("cannot decode the image (not a valid PNG, JPEG or TIFF file?): {e}"),
        )
    })
}

fn grey_from<T: Copy>(
    w: u32,
    h: u32,
    data: &[T],
    stride: usize,
    scale: impl Fn(T) -> f32,
) -> Array2<f32> {
    Array2::from_shape_fn((h as usize, w as usize), |(y, x)| {
        scale(data[(y * w as usize + x) * stride])
    })
}

fn rgb_from<T: Copy>(
    w: u32,
    h: u32,
    data: &[T],
    stride: usize,
    scale: impl Fn(T) -> f32,
) -> Array3<f32> {
    Array3::from_shape_fn((3, h as usize, w as usize), |(c, y, x)| {
        scale(data[(y * w as usize + x) * stride + c])
    })
}

/// Reads an image file (see the module doc for the formats and the value scaling).
pub fn read_image(path: &Path) -> Result<Image> {
    use image::DynamicImage as D;
    let img = decode(path)?;
    let (w, h) = (img.width(), img.height());
    if w == 0 || h == 0 {
        return Err(Error::bad_input(
            path,
            format!("the image is empty ({w}×{h})"),
        ));
    }
    let b8 = |v: u8| v as f32 / 255.0;
    let b16 = |v: u16| v as f32 / 65535.0;
    let (pixels, format) = match &img {
        D::ImageLuma8(i) => (
            Pixels::Grey(grey_from(w, h, i.as_raw(), 1, b8)),
            "8-bit grey",
        ),
        D::ImageLumaA8(i) => (
            Pixels::Grey(grey_from(w, h, i.as_raw(), 2, b8)),
            "8-bit grey+alpha (alpha ignored)",
        ),
        D::ImageLuma16(i) => (
            Pixels::Grey(grey_from(w, h, i.as_raw(), 1, b16)),
            "16-bit grey",
        ),
        D::ImageLumaA16(i) => (
            Pixels::Grey(grey_from(w, h, i.as_raw(), 2, b16)),
            "16-bit grey+alpha (alpha ignored)",
        ),
        D::ImageRgb8(i) => (Pixels::Rgb(rgb_from(w, h, i.as_raw(), 3, b8)), "8-bit RGB"),
        D::ImageRgba8(i) => (
            Pixels::Rgb(rgb_from(w, h, i.as_raw(), 4, b8)),
            "8-bit RGBA (alpha ignored)",
        ),
        D::ImageRgb16(i) => (
            Pixels::Rgb(rgb_from(w, h, i.as_raw(), 3, b16)),
            "16-bit RGB",
        ),
        D::ImageRgba16(i) => (
            Pixels::Rgb(rgb_from(w, h, i.as_raw(), 4, b16)),
            "16-bit RGBA (alpha ignored)",
        ),
        D::ImageRgb32F(_) | D::ImageRgba32F(_) => {
            let rgb = img.to_rgb32f();
            if let Some(v) = rgb.as_raw().iter().find(|v| !(0.0..=1.0).contains(*v)) {
                return Err(Error::bad_input(
                    path,
                    format!(
                        "floating-point image with a value {v} outside [0, 1]: only [0, 1] float images are \
                         accepted (save it as 8- or 16-bit, or rescale it)"
                    ),
                ));
            }
            (
                Pixels::Rgb(rgb_from(w, h, rgb.as_raw(), 3, |v| v)),
                "32-bit float RGB",
            )
        }
        other => {
            return Err(Error::bad_input(
                path,
                format!("unsupported pixel type {:?}", other.color()),
            ))
        }
    };
    Ok(Image {
        pixels,
        format: format.to_string(),
    })
}

/// Only the size `(height, width)` of an image file, without decoding its pixels.
pub fn image_size(path: &Path) -> Result<(usize, usize)> {
    let (w, h) = reader(path)?.into_dimensions().map_err(|e| {
        Error::bad_input(
            path,
            format!("cannot read the image header (not a valid PNG, JPEG or TIFF file?): {e}"),
        )
    })?;
    Ok((h as usize, w as usize))
}

/// Reads a mask: positive where any colour channel is > 0 (alpha ignored).
pub fn read_mask(path: &Path) -> Result<Array2<bool>> {
    let img = decode(path)?;
    let (w, h) = (img.width() as usize, img.height() as usize);
    let rgb = img.to_rgb32f();
    let raw = rgb.as_raw();
    Ok(Array2::from_shape_fn((h, w), |(y, x)| {
        let o = (y * w + x) * 3;
        raw[o] > 0.0 || raw[o + 1] > 0.0 || raw[o + 2] > 0.0
    }))
}

/// Resampling weights of PIL's `BILINEAR` filter for one axis: for each output index, the first input
/// index and the normalised weights (support widened by the reduction factor: antialiasing).
fn pil_weights(input: usize, output: usize) -> Vec<(usize, Vec<f64>)> {
    let scale = input as f64 / output as f64;
    let filterscale = scale.max(1.0);
    let support = filterscale; // the triangle's support is 1 input pixel, scaled
    (0..output)
        .map(|o| {
            let centre = (o as f64 + 0.5) * scale;
            let lo = ((centre - support + 0.5).trunc().max(0.0)) as usize;
            let hi = ((centre + support + 0.5).trunc() as usize).min(input);
            let mut w: Vec<f64> = (lo..hi)
                .map(|i| {
                    let t = ((i as f64 - centre + 0.5) / filterscale).abs();
                    if t < 1.0 {
                        1.0 - t
                    } else {
                        0.0
                    }
                })
                .collect();
            let sum: f64 = w.iter().sum();
            if sum != 0.0 {
                w.iter_mut().for_each(|v| *v /= sum);
            }
            (lo, w)
        })
        .collect()
}

/// Resizes one channel to `(height, width)` exactly as PIL's `Image.resize(..., BILINEAR)` does on a
/// float (`"F"`) image: separable triangle filter, horizontal pass first, support scaled by the reduction
/// factor, pixel centres at `+0.5`. Accumulates in f64.
pub fn resize_bilinear(src: ArrayView2<f32>, size: (usize, usize)) -> Array2<f32> {
    let (ih, iw) = src.dim();
    let (oh, ow) = size;
    if (ih, iw) == (oh, ow) {
        return src.to_owned();
    }
    let wx = pil_weights(iw, ow);
    let wy = pil_weights(ih, oh);
    let mut tmp = Array2::<f32>::zeros((ih, ow));
    for y in 0..ih {
        let row = src.row(y);
        for (x, (lo, w)) in wx.iter().enumerate() {
            let s: f64 = w
                .iter()
                .enumerate()
                .map(|(k, &c)| row[lo + k] as f64 * c)
                .sum();
            tmp[[y, x]] = s as f32;
        }
    }
    let mut out = Array2::<f32>::zeros((oh, ow));
    for (y, (lo, w)) in wy.iter().enumerate() {
        for x in 0..ow {
            let s: f64 = w
                .iter()
                .enumerate()
                .map(|(k, &c)| tmp[[lo + k, x]] as f64 * c)
                .sum();
            out[[y, x]] = s as f32;
        }
    }
    out
}

/// One image of a batch.
#[derive(Debug, Clone)]
pub struct ImageCase {
    /// Case name (unique in its class): file stem, `<defect>_<stem>` in the MVTec layout.
    pub name: String,
    /// `good` or the defect name (MVTec); `image` (plain folder without masks); `good`/`defect` with masks
    /// (set by the pipeline from the mask's content).
    pub group: String,
    pub image: PathBuf,
    /// Ground-truth mask file (None: normal or unknown, see [`ImageClass::labelled`]).
    pub mask: Option<PathBuf>,
    /// Label from the layout (MVTec: `defect != good`); None when it comes from the mask or is unknown.
    pub folder_label: Option<bool>,
}

/// One batch of images (an MVTec class, or the whole plain folder).
#[derive(Debug, Clone)]
pub struct ImageClass {
    /// Class name (MVTec), or `images` for a plain folder.
    pub name: String,
    /// The folder the images were found in (for messages).
    pub root: PathBuf,
    pub cases: Vec<ImageCase>,
    /// Whether ground truth is known (MVTec, or a plain folder with `--masks`).
    pub labelled: bool,
}

/// What [`discover`] found.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// `mvtec` or `plain`.
    pub layout: &'static str,
    /// Several classes only for an MVTec root.
    pub classes: Vec<ImageClass>,
}

fn extension(path: &Path) -> Option<String> {
    path.extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase())
}

fn is_image_file(path: &Path) -> bool {
    path.is_file()
        && extension(path).is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.as_str()))
        && !path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'))
}

/// The stem of an image file as UTF-8 (an error naming the file otherwise).
fn stem(path: &Path) -> Result<String> {
    path.file_stem()
        .and_then(|s| s.to_str())
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .ok_or_else(|| Error::bad_input(path, "file name is not valid UTF-8 or has no stem"))
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .map(|e| e.map(|e| e.path()).map_err(|e| Error::io(dir, e)))
        .collect::<Result<_>>()?;
    v.sort();
    Ok(v)
}

/// Image files directly in `dir`, by stem (two files with one stem are an error).
fn images_by_stem(dir: &Path) -> Result<BTreeMap<String, PathBuf>> {
    let mut out: BTreeMap<String, PathBuf> = BTreeMap::new();
    for p in sorted_entries(dir)? {
        if !is_image_file(&p) {
            continue;
        }
        let s = stem(&p)?;
        if let Some(other) = out.insert(s.clone(), p.clone()) {
            return Err(Error::bad_input(
                &p,
                format!(
                    "two images with the case name `{s}` ({} too): case names must be unique",
                    other.display()
                ),
            ));
        }
    }
    Ok(out)
}

/// Finds the images (and masks) under `images` (layouts in the module doc).
pub fn discover(images: &Path, masks: Option<&Path>) -> Result<Dataset> {
    if !images.is_dir() {
        return Err(Error::bad_input(images, "--images is not a folder"));
    }
    let class_dirs: Vec<PathBuf> = if images.join("test").is_dir() {
        vec![images.to_path_buf()]
    } else {
        sorted_entries(images)?
            .into_iter()
            .filter(|p| p.join("test").is_dir())
            .collect()
    };
    if !class_dirs.is_empty() {
        if masks.is_some() {
            return Err(Error::bad_argument(
                "--masks",
                format!(
                    "{} has the MVTec AD layout, whose masks are in <class>/ground_truth/; leave --masks out",
                    images.display()
                ),
            ));
        }
        let classes = class_dirs
            .iter()
            .map(|d| mvtec_class(d))
            .collect::<Result<Vec<_>>>()?;
        return Ok(Dataset {
            layout: "mvtec",
            classes,
        });
    }
    let found = images_by_stem(images)?;
    if found.is_empty() {
        return Err(Error::BadBatch {
            path: images.to_path_buf(),
            problem: format!(
                "no images ({}) in this folder, and no MVTec AD layout (<class>/test/<defect>/) under it",
                IMAGE_EXTENSIONS.join(", ")
            ),
        });
    }
    let mask_of = match masks {
        Some(m) => pair_masks(m, &found)?,
        None => BTreeMap::new(),
    };
    let cases = found
        .into_iter()
        .map(|(name, image)| ImageCase {
            mask: mask_of.get(&name).cloned(),
            group: "image".into(),
            folder_label: None,
            name,
            image,
        })
        .collect();
    Ok(Dataset {
        layout: "plain",
        classes: vec![ImageClass {
            name: "images".into(),
            root: images.to_path_buf(),
            cases,
            labelled: masks.is_some(),
        }],
    })
}

/// Pairs the mask folder with the images by stem (`<stem>` or `<stem>_mask`).
fn pair_masks(dir: &Path, images: &BTreeMap<String, PathBuf>) -> Result<BTreeMap<String, PathBuf>> {
    if !dir.is_dir() {
        return Err(Error::bad_input(dir, "--masks is not a folder"));
    }
    let mut out: BTreeMap<String, PathBuf> = BTreeMap::new();
    for p in sorted_entries(dir)? {
        if !is_image_file(&p) {
            continue;
        }
        let s = stem(&p)?;
        let key = if images.contains_key(&s) {
            s
        } else if let Some(k) = s.strip_suffix("_mask").filter(|k| images.contains_key(*k)) {
            k.to_string()
        } else {
            return Err(Error::bad_input(
                &p,
                format!(
                    "a mask without an image: no image named `{s}` or `{}` in --images",
                    s.strip_suffix("_mask").unwrap_or(&s)
                ),
            ));
        };
        if let Some(other) = out.insert(key.clone(), p.clone()) {
            return Err(Error::bad_input(
                &p,
                format!("two masks for the image `{key}` ({} too)", other.display()),
            ));
        }
    }
    Ok(out)
}

/// One MVTec AD class folder.
fn mvtec_class(dir: &Path) -> Result<ImageClass> {
    let name = dir
        .canonicalize()
        .ok()
        .and_then(|d| d.file_name().and_then(|n| n.to_str()).map(str::to_string))
        .unwrap_or_else(|| "class".into());
    let test = dir.join("test");
    let mut cases = Vec::new();
    let mut seen: BTreeMap<String, PathBuf> = BTreeMap::new();
    for defect_dir in sorted_entries(&test)? {
        if !defect_dir.is_dir() {
            continue;
        }
        let defect = defect_dir
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| Error::bad_input(&defect_dir, "folder name is not valid UTF-8"))?
            .to_string();
        let good = defect == "good";
        let masks = if good {
            BTreeMap::new()
        } else {
            let gt = dir.join("ground_truth").join(&defect);
            if gt.is_dir() {
                images_by_stem(&gt)?
            } else {
                BTreeMap::new()
            }
        };
        for (s, image) in images_by_stem(&defect_dir)? {
            let mask = if good {
                None
            } else {
                let m = masks
                    .get(&format!("{s}_mask"))
                    .or_else(|| masks.get(&s))
                    .cloned();
                if m.is_none() {
                    return Err(Error::bad_input(
                        &image,
                        format!(
                            "no ground-truth mask for this `{defect}` image (expected {})",
                            dir.join("ground_truth")
                                .join(&defect)
                                .join(format!("{s}_mask.png"))
                                .display()
                        ),
                    ));
                }
                m
            };
            let case = format!("{defect}_{s}");
            if let Some(other) = seen.insert(case.clone(), image.clone()) {
                return Err(Error::bad_input(
                    &image,
                    format!(
                        "case name `{case}` is also that of {}: rename one of them",
                        other.display()
                    ),
                ));
            }
            cases.push(ImageCase {
                name: case,
                group: defect.clone(),
                image,
                mask,
                folder_label: Some(!good),
            });
        }
    }
    if cases.is_empty() {
        return Err(Error::BadBatch {
            path: test,
            problem: "no images under test/<defect>/".into(),
        });
    }
    Ok(ImageClass {
        name,
        root: dir.to_path_buf(),
        cases,
        labelled: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn background_fractions_count_exact_zeros_in_every_channel() {
        // 2 channels, 4×6 pixels, patch 2 (cells 2×3): cell (0,0) all zero; (0,1) one pixel non-zero in
        // channel 1 only; (0,2) zero in channel 0 but not in channel 1; the second row non-zero in
        // channel 0 except pixel (3,5), which is zero in both channels.
        let mut c = Array3::<f32>::zeros((2, 4, 6));
        c[[1, 0, 2]] = 0.5;
        c.slice_mut(ndarray::s![1, 0..2, 4..6]).fill(1e-6);
        c.slice_mut(ndarray::s![0, 2..4, ..]).fill(0.3);
        c[[0, 3, 5]] = 0.0;
        let f = background_fractions(c.view(), 2);
        assert_eq!(f, vec![1.0, 0.75, 0.0, 0.0, 0.0, 0.25]);
        c.slice_mut(ndarray::s![0, 2..4, 4..6]).fill(0.0);
        assert_eq!(background_fractions(c.view(), 2)[5], 1.0);
    }

    #[test]
    fn a_zero_frame_needs_every_border_pixel_zero() {
        let mut g = Array2::<f32>::zeros((5, 7));
        g.slice_mut(ndarray::s![1..4, 1..6]).fill(0.4);
        let img = |p| Image {
            pixels: p,
            format: String::new(),
        };
        assert!(img(Pixels::Grey(g.clone())).has_zero_frame());
        let mut g2 = g.clone();
        g2[[4, 3]] = 1.0 / 255.0;
        assert!(!img(Pixels::Grey(g2)).has_zero_frame());
        let mut rgb = Array3::<f32>::zeros((3, 5, 7));
        rgb[[2, 2, 6]] = 0.1; // right column, blue only
        assert!(!img(Pixels::Rgb(rgb.clone())).has_zero_frame());
        rgb[[2, 2, 6]] = 0.0;
        assert!(img(Pixels::Rgb(rgb)).has_zero_frame());
    }

    #[test]
    fn pil_weights_reduce_to_interpolation_when_enlarging() {
        // 2 → 4: centres at 0.25, 0.75, 1.25, 1.75 input px; PIL's triangle gives 1, .75/.25, .25/.75, 1
        let src = Array2::from_shape_vec((1, 2), vec![0.0f32, 1.0]).unwrap();
        let out = resize_bilinear(src.view(), (1, 4));
        let expect = [0.0, 0.25, 0.75, 1.0];
        for (a, b) in out.iter().zip(expect) {
            assert!((a - b).abs() < 1e-6, "{out:?}");
        }
        // reducing 4 → 2 by 2: each output averages a 4-pixel triangle window (antialias), not 2 samples
        let src = Array2::from_shape_vec((1, 4), vec![0.0f32, 0.0, 1.0, 1.0]).unwrap();
        let out = resize_bilinear(src.view(), (1, 2));
        // output 0: centre 1.0, support 2 → inputs 0..3 with weights .25,.75,.75(,.25 at 3 cut by 3.0) ...
        assert!(out[[0, 0]] > 0.0 && out[[0, 0]] < 0.5, "{out:?}");
        assert!((out[[0, 0]] + out[[0, 1]] - 1.0).abs() < 1e-6, "{out:?}");
        // constant images stay constant
        let c = Array2::from_elem((7, 9), 0.3f32);
        assert!(resize_bilinear(c.view(), (14, 5))
            .iter()
            .all(|v| (v - 0.3).abs() < 1e-6));
    }
}
