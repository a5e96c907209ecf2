//! The frozen 2D backbone behind one small trait, [`Embedder`].
//!
//! * Input: a batch of grey images `[B, H, W]` (values in `[0, 1]`, `H` and `W` multiples of 14), turned into
//!   the model input `pixel_values` `[B, 3, H, W]` by [`grey_to_pixel_values`] (the grey value replicated into
//!   3 channels, then ImageNet mean/std normalisation: the model contract of `onnx/README.md` leaves the
//!   normalisation to the caller).
//! * Output: per selected block, the patch tokens of every image, `[L, B, N, C]` with `N = (H/14)·(W/14)` in
//!   row-major patch order (patch row `i`, column `j` at `n = i·(W/14) + j`), CLS dropped, final LayerNorm
//!   applied (by the model).
//! * Global embedding (for RsCIN, 2D only): [`Embedder::embed_with_cls`] also returns the model's `cls`
//!   output `[B, C]` (final LayerNorm of the last block's CLS token, not L2-normalised). The 3D path never
//!   asks for it, so its cost (all blocks up to the last one) is paid only by the 2D path.
//! * Colour images: [`fill_rgb`] normalises an RGB image `[3, H, W]` per channel; grey images are replicated
//!   into the 3 channels by [`fill_one`].
//! * Implementations: [`ort::OrtEmbedder`] (ONNX Runtime, CPU or CUDA) and [`fake::FakeEmbedder`] (a
//!   deterministic patch-local function for tests that need no ONNX Runtime).
//!
//! Traps: layers are 1-based block numbers (`layer_6` is the output of the 6th block); the batch dimension
//! may be any size, so callers choose the batch; features are f32 and an ONNX Runtime run is deterministic
//! for a given batch on a given machine, but a different batch composition may change the last bits.

use ndarray::{Array2, Array4, ArrayView2, ArrayView3, ArrayView4, ArrayViewMut3, Axis};

use crate::Result;

pub mod fake;
pub mod ort;

/// Patch size of every supported backbone (ViT/14).
pub const PATCH: usize = 14;
crate::settings::choice_setting!(ort::Device, ["auto", "cpu", "cuda"]);

crate::settings::declare_settings! {
    /// The model and where it runs: shared by `extract`, `score` and `score2d`.
    pub struct RuntimeSettings {
        /// The ONNX model (contract in onnx/README.md).
        model: std::path::PathBuf = "onnx/dinov2_vits14.onnx".into();
        /// The ONNX Runtime shared library (libonnxruntime.so.*, from the onnxruntime or onnxruntime-gpu
        /// wheel); default: the ORT_DYLIB_PATH environment variable.
        ort_lib: Option<std::path::PathBuf> = None;
        /// auto: CUDA if the CUDA execution provider really registers, else CPU with a notice; cuda: fail
        /// (exit 2) with the provider's error when it cannot run; cpu. CUDA and CPU features differ
        /// slightly (up to about 4e-4; onnx/README.md). The provider that ran is recorded in each token
        /// file's sidecar (and in summary.json by `score` and `score2d`); a run whose cached token files
        /// mix providers prints a notice.
        device: ort::Device = ort::Device::Auto;
    }
}

/// Checks a model input edge: a positive multiple of [`PATCH`], with the nearest valid values in the
/// message. Shared by every command that takes `--size`.
pub fn check_size(flag: &str, size: &usize) -> Result<()> {
    if *size > 0 && size.is_multiple_of(PATCH) {
        return Ok(());
    }
    let lower = (size / PATCH).max(1) * PATCH;
    Err(crate::Error::bad_argument(
        flag,
        format!(
            "the edge must be a positive multiple of {PATCH} (the ViT patch size), got {size}: use {lower} or {}",
            lower + PATCH
        ),
    ))
}

/// Checks a list of backbone blocks: one or more 1-based block numbers, none twice. Shared by every
/// command that takes `--layers`.
pub fn check_layers(flag: &str, layers: &Vec<usize>) -> Result<()> {
    if layers.is_empty() || layers.contains(&0) {
        return Err(crate::Error::bad_argument(
            flag,
            "give one or more 1-based block numbers, e.g. 6,9,12",
        ));
    }
    let mut sorted = layers.clone();
    sorted.sort_unstable();
    sorted.dedup();
    if sorted.len() != layers.len() {
        return Err(crate::Error::bad_argument(
            flag,
            format!("{layers:?} names a block twice"),
        ));
    }
    Ok(())
}

/// ImageNet channel means (DINOv2 normalisation).
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet channel standard deviations.
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// A frozen 2D feature extractor: images in, patch tokens of the selected blocks out.
pub trait Embedder {
    /// The selected blocks (1-based), in the order of the first axis of [`Embedder::embed`]'s output.
    fn layers(&self) -> &[usize];
    /// Feature width `C` of every selected block.
    fn dim(&self) -> usize;
    /// Runs a batch `pixel_values` `[B, 3, H, W]` (already normalised) and returns `[L, B, N, C]`.
    fn embed(&mut self, pixel_values: ArrayView4<f32>) -> Result<Array4<f32>>;
    /// Like [`Embedder::embed`], and also the global embedding of every image, `cls` `[B, C]` (the final
    /// LayerNorm of the last block's CLS token). A model without a `cls` output is an error naming it.
    fn embed_with_cls(
        &mut self,
        pixel_values: ArrayView4<f32>,
    ) -> Result<(Array4<f32>, Array2<f32>)>;
    /// The execution provider that runs the model (e.g. `CPUExecutionProvider`), for reports.
    fn provider(&self) -> &str;
}

/// Replicates grey images `[B, H, W]` into 3 channels and applies the ImageNet normalisation:
/// `pixel_values[b, c, h, w] = (grey[b, h, w] − mean[c]) / std[c]`.
pub fn grey_to_pixel_values(grey: ArrayView3<f32>) -> Array4<f32> {
    let (b, h, w) = grey.dim();
    let mut out = Array4::<f32>::zeros((b, 3, h, w));
    fill_pixel_values(grey, &mut out);
    out
}

/// Like [`grey_to_pixel_values`], writing into the first `B` images of an existing buffer.
pub fn fill_pixel_values(grey: ArrayView3<f32>, out: &mut Array4<f32>) {
    for (img, dst) in grey.outer_iter().zip(out.outer_iter_mut()) {
        fill_one(img, dst);
    }
}

/// Writes one grey image `[H, W]` as a normalised 3-channel image into `dst` `[3, H, W]`.
pub fn fill_one(grey: ArrayView2<f32>, mut dst: ArrayViewMut3<f32>) {
    for (c, mut chan) in dst.axis_iter_mut(Axis(0)).enumerate() {
        let (m, s) = (IMAGENET_MEAN[c], IMAGENET_STD[c]);
        chan.zip_mut_with(&grey, |d, &g| *d = (g - m) / s);
    }
}

/// Writes one RGB image `[3, H, W]` (values in `[0, 1]`) normalised per channel into `dst` `[3, H, W]`:
/// `dst[c] = (rgb[c] − mean[c]) / std[c]`.
pub fn fill_rgb(rgb: ArrayView3<f32>, mut dst: ArrayViewMut3<f32>) {
    for (c, (src, mut chan)) in rgb
        .axis_iter(Axis(0))
        .zip(dst.axis_iter_mut(Axis(0)))
        .enumerate()
    {
        let (m, s) = (IMAGENET_MEAN[c], IMAGENET_STD[c]);
        chan.zip_mut_with(&src, |d, &g| *d = (g - m) / s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array3;

    #[test]
    fn grey_is_replicated_and_normalised_per_channel() {
        let grey = Array3::from_shape_fn((2, 14, 28), |(b, h, w)| {
            (b * 100 + h * 28 + w) as f32 / 1000.0
        });
        let px = grey_to_pixel_values(grey.view());
        assert_eq!(px.dim(), (2, 3, 14, 28));
        for c in 0..3 {
            let v = px[[1, c, 3, 5]];
            let expect = (grey[[1, 3, 5]] - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
            assert!((v - expect).abs() < 1e-6, "channel {c}: {v} vs {expect}");
        }
        // zero (background) maps to −mean/std, not to zero
        let zero = grey_to_pixel_values(Array3::zeros((1, 14, 14)).view());
        assert!((zero[[0, 0, 0, 0]] + 0.485 / 0.229).abs() < 1e-6);
    }

    #[test]
    fn rgb_is_normalised_channel_by_channel() {
        let rgb = Array3::from_shape_fn((3, 14, 14), |(c, h, w)| (c * 7 + h + w) as f32 / 40.0);
        let mut out = Array3::<f32>::zeros((3, 14, 14));
        fill_rgb(rgb.view(), out.view_mut());
        for c in 0..3 {
            let expect = (rgb[[c, 2, 9]] - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
            assert!((out[[c, 2, 9]] - expect).abs() < 1e-6);
        }
        // the channels are not mixed: channel 2 differs from what grey replication would give
        assert!(
            (out[[2, 0, 0]] - (rgb[[0, 0, 0]] - IMAGENET_MEAN[2]) / IMAGENET_STD[2]).abs() > 0.1
        );
    }
}
