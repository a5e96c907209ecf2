//! The 3D tokenizer: a canonical cube in, a [`TokenSet`] of `G³` tokens out (`ALGORITHM.md` §3.2, steps 3–12).
//!
//! * Input: `cube` `[S, S, S]` f32 indexed `[z][y][x]`, `S = 14·G`, values in `[0, 1]` with background 0
//!   (the preprocessing's job), and the brain mask `[S, S, S]` (voxels > 0 before standardisation); an
//!   [`Embedder`] with the selected layers; the shared [`Projection`].
//! * Output: `tokens` `[L, G³, 3d']`, `valid` `[G³]`, grid `(G, G, G)`, raster order `p = (z·G + y)·G + x`.
//!
//! Stages, one module each: [`axes`] (step 3 slicing, step 7 re-indexing), the backbone (step 4, in
//! [`crate::backbone`]), [`pooling`] (steps 5–7), [`projection`] (step 8), [`fusion`] (steps 9–11),
//! [`void`] (step 12).
//!
//! Streaming and memory: the axes are processed one after the other; slices are fed to the backbone in
//! batches of at most `batch` images (default 14 = one pooling group) and each batch's patch tokens are added
//! straight into the pooled accumulator of that axis ([`pooling::Pooler`]) and dropped. So at most one batch
//! of raw slice features is alive, plus the pooled `[L, G³, D]` of one axis and the projected `[L, G³, d']`
//! of the axes done so far.
//!
//! Background reuse: a slice that is entirely 0 is the same image wherever it occurs, so its features are
//! computed once per run ([`BackgroundCache`], keyed by the slice shape) and reused; this is exact. The
//! count of reused slices is reported in [`TokenizeStats`].
//!
//! Traps: axis order (see [`axes`]); the grey value 0 is *not* the model's zero input (ImageNet
//! normalisation maps it to −mean/std), so background slices do produce features and must be pooled like
//! any other slice; the cache belongs to one embedder (one model and layer selection).

use std::collections::HashMap;
use std::time::Instant;

use indicatif::ProgressBar;
use ndarray::{s, Array3, Array4, ArrayView3, Axis};

use crate::backbone::{fill_one, Embedder, PATCH};
use crate::{Error, Result, TokenSet};

pub mod axes;
pub mod fusion;
pub mod lnamd;
pub mod pooling;
pub mod projection;
pub mod void;

pub use axes::SliceAxis;
pub use projection::Projection;

/// Settings of the tokenizer that are not the backbone's.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TokenizerConfig {
    /// Images per backbone call (≥ 1). Changes speed and memory, not the result (up to f32 round-off).
    pub batch: usize,
    /// A token is void when its void fraction exceeds this (default 0.5).
    pub void_threshold: f64,
    /// Record which slices went into each backbone batch (for the throughput benchmark).
    #[serde(skip)]
    pub record_batches: bool,
}

impl Default for TokenizerConfig {
    fn default() -> Self {
        TokenizerConfig {
            batch: PATCH,
            void_threshold: 0.5,
            record_batches: false,
        }
    }
}

/// What tokenizing one volume cost.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct TokenizeStats {
    /// Slices of the volume: `3·S`.
    pub slices: usize,
    /// Slices that went through the backbone.
    pub inferred: usize,
    /// Entirely-background slices whose features came from the [`BackgroundCache`] (backbone passes saved).
    pub background_reused: usize,
    /// Background images run to fill the cache (at most one per run and slice shape).
    pub background_computed: usize,
    /// Backbone calls.
    pub batches: usize,
    /// Seconds spent inside [`Embedder::embed`].
    pub embed_seconds: f64,
    /// Seconds for the whole volume.
    pub seconds: f64,
    /// With [`TokenizerConfig::record_batches`]: the slices of each backbone call, in order.
    #[serde(skip)]
    pub batch_log: Vec<Vec<(SliceAxis, usize)>>,
}

/// Features of the all-background slice, per slice shape, computed once per run.
#[derive(Debug, Default)]
pub struct BackgroundCache {
    features: HashMap<(usize, usize), Array3<f32>>,
    layers: Vec<usize>,
}

impl BackgroundCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// The `[L, N, C]` features of an all-zero `h × w` slice; computed on first use. Returns whether it was
    /// computed now.
    fn get(
        &mut self,
        h: usize,
        w: usize,
        embedder: &mut dyn Embedder,
    ) -> Result<(&Array3<f32>, bool)> {
        if self.features.is_empty() {
            self.layers = embedder.layers().to_vec();
        } else if self.layers != embedder.layers() {
            self.features.clear();
            self.layers = embedder.layers().to_vec();
        }
        let computed = !self.features.contains_key(&(h, w));
        if computed {
            let mut px = Array4::zeros((1, 3, h, w));
            fill_one(
                ndarray::Array2::zeros((h, w)).view(),
                px.index_axis_mut(Axis(0), 0),
            );
            let f = embedder.embed(px.view())?;
            self.features
                .insert((h, w), f.index_axis(Axis(1), 0).to_owned());
        }
        Ok((&self.features[&(h, w)], computed))
    }
}

/// A ready-to-use tokenizer: a backbone, the shared projection, the background cache and the settings.
///
/// ```no_run
/// # fn main() -> mri_ad::Result<()> {
/// use mri_ad::backbone::ort::{Device, OrtConfig, OrtEmbedder};
/// use mri_ad::tokens::{Tokenizer, TokenizerConfig};
/// let embedder = OrtEmbedder::load(&OrtConfig {
///     model: "onnx/dinov2_vits14.onnx".into(),
///     ort_lib: None, // ORT_DYLIB_PATH
///     device: Device::Auto,
///     threads: 0,
///     layers: vec![6, 9, 12],
/// })?;
/// let mut tokenizer = Tokenizer::new(Box::new(embedder), 128, 0, TokenizerConfig::default())?;
/// let cube = ndarray::Array3::<f32>::zeros((224, 224, 224)); // canonical cube, values in [0, 1]
/// let mask = cube.mapv(|v| v > 0.0);
/// let bar = indicatif::ProgressBar::hidden();
/// let (set, stats) = tokenizer.tokenize("case", cube.view(), mask.view(), &bar)?;
/// # Ok(()) }
/// ```
pub struct Tokenizer {
    embedder: Box<dyn Embedder>,
    projection: Projection,
    cache: BackgroundCache,
    cfg: TokenizerConfig,
}

impl Tokenizer {
    /// Draws the projection `[proj_dim, embedder.dim()]` from `seed`.
    pub fn new(
        embedder: Box<dyn Embedder>,
        proj_dim: usize,
        seed: u64,
        cfg: TokenizerConfig,
    ) -> Result<Self> {
        let projection = Projection::new(proj_dim, embedder.dim(), seed)?;
        Ok(Tokenizer {
            embedder,
            projection,
            cache: BackgroundCache::new(),
            cfg,
        })
    }

    /// Tokenizes one canonical cube (see [`tokenize`]).
    pub fn tokenize(
        &mut self,
        name: &str,
        cube: ArrayView3<f32>,
        mask: ArrayView3<bool>,
        bar: &ProgressBar,
    ) -> Result<(TokenSet, TokenizeStats)> {
        tokenize(
            name,
            cube,
            mask,
            self.embedder.as_mut(),
            &self.projection,
            &self.cfg,
            &mut self.cache,
            bar,
        )
    }

    /// The execution provider that runs the backbone.
    pub fn provider(&self) -> &str {
        self.embedder.provider()
    }

    /// The shared projection.
    pub fn projection(&self) -> &Projection {
        &self.projection
    }
}

/// Checks the shapes and values of a canonical cube and its mask; `name` is used in errors.
pub fn check_cube(name: &str, cube: ArrayView3<f32>, mask: ArrayView3<bool>) -> Result<usize> {
    let (a, b, c) = cube.dim();
    if a != b || b != c || a == 0 || a % PATCH != 0 {
        return Err(Error::bad_input(
            name,
            format!("the volume must be a cube whose edge is a positive multiple of {PATCH}; its shape is [{a}, {b}, {c}]"),
        ));
    }
    if mask.dim() != cube.dim() {
        return Err(Error::bad_input(
            name,
            format!(
                "the brain mask has shape {:?} but the volume has {:?}",
                mask.dim(),
                cube.dim()
            ),
        ));
    }
    if let Some((idx, v)) = cube
        .indexed_iter()
        .find(|(_, v)| !v.is_finite() || **v < 0.0 || **v > 1.0)
    {
        return Err(Error::bad_input(
            name,
            format!(
                "voxel (z, y, x) = {idx:?} is {v}; the tokenizer expects values in [0, 1] (background 0), as the \
                 preprocessing produces"
            ),
        ));
    }
    Ok(a)
}

/// Tokenizes one canonical cube: `ALGORITHM.md` §3.2 steps 3–12. `bar` advances by one per slice.
#[allow(clippy::too_many_arguments)]
pub fn tokenize(
    name: &str,
    cube: ArrayView3<f32>,
    mask: ArrayView3<bool>,
    embedder: &mut dyn Embedder,
    projection: &Projection,
    cfg: &TokenizerConfig,
    cache: &mut BackgroundCache,
    bar: &ProgressBar,
) -> Result<(TokenSet, TokenizeStats)> {
    let start = Instant::now();
    let size = check_cube(name, cube, mask)?;
    if cfg.batch == 0 {
        return Err(Error::bad_argument("--batch", "must be at least 1"));
    }
    let (n_layers, dim) = (embedder.layers().len(), embedder.dim());
    if projection.in_dim() != dim {
        return Err(Error::bad_argument(
            "--proj-dim",
            format!(
                "the projection expects width {} but the backbone gives {dim}",
                projection.in_dim()
            ),
        ));
    }
    let g = size / PATCH;
    let mut stats = TokenizeStats {
        slices: 3 * size,
        ..Default::default()
    };
    let mut projected: Vec<Array3<f32>> = Vec::with_capacity(3);
    let mut px = Array4::<f32>::zeros((cfg.batch.min(size), 3, size, size));
    let mut pending: Vec<usize> = Vec::with_capacity(cfg.batch);
    for axis in SliceAxis::ALL {
        let mut pooler = pooling::Pooler::new(axis, size, n_layers, dim);
        for t in 0..size {
            let slice = axis.slice(cube, t);
            if slice.iter().all(|&v| v == 0.0) {
                let (features, computed) = cache.get(size, size, embedder)?;
                pooler.add(t, features.view());
                if computed {
                    stats.background_computed += 1;
                } else {
                    stats.background_reused += 1;
                }
                bar.inc(1);
            } else {
                fill_one(slice, px.index_axis_mut(Axis(0), pending.len()));
                pending.push(t);
            }
            // A full batch, and what is left at the end of the axis, goes through the backbone.
            if pending.len() == px.dim().0 || t + 1 == size {
                flush(
                    axis,
                    &px,
                    &mut pending,
                    embedder,
                    &mut pooler,
                    &mut stats,
                    cfg,
                    bar,
                )?;
            }
        }
        let pooled = pooler.finish();
        let mut u = Array3::<f32>::zeros((n_layers, g * g * g, projection.out_dim()));
        for (l, layer) in pooled.outer_iter().enumerate() {
            u.index_axis_mut(Axis(0), l)
                .assign(&projection.apply(layer));
        }
        projected.push(u);
    }
    let axes: [Array3<f32>; 3] = projected.try_into().expect("three axes");
    let mut tokens = fusion::concat_axes(&axes);
    drop(axes);
    fusion::normalise(&mut tokens);
    let valid = void::valid_tokens(mask, cfg.void_threshold);
    let set = TokenSet::new(name, tokens, valid, [g, g, g])?;
    stats.seconds = start.elapsed().as_secs_f64();
    Ok((set, stats))
}

#[allow(clippy::too_many_arguments)]
fn flush(
    axis: SliceAxis,
    px: &Array4<f32>,
    pending: &mut Vec<usize>,
    embedder: &mut dyn Embedder,
    pooler: &mut pooling::Pooler,
    stats: &mut TokenizeStats,
    cfg: &TokenizerConfig,
    bar: &ProgressBar,
) -> Result<()> {
    if pending.is_empty() {
        return Ok(());
    }
    let n = pending.len();
    let t0 = Instant::now();
    let features = embedder.embed(px.slice(s![..n, .., .., ..]))?;
    stats.embed_seconds += t0.elapsed().as_secs_f64();
    stats.batches += 1;
    stats.inferred += n;
    for (b, &t) in pending.iter().enumerate() {
        pooler.add(t, features.index_axis(Axis(1), b));
    }
    if cfg.record_batches {
        stats
            .batch_log
            .push(pending.iter().map(|&t| (axis, t)).collect());
    }
    pending.clear();
    bar.inc(n as u64);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backbone::fake::FakeEmbedder;
    use ndarray::Array3;

    fn run(
        cube: &Array3<f32>,
        mask: &Array3<bool>,
        emb: &mut FakeEmbedder,
        batch: usize,
    ) -> (TokenSet, TokenizeStats) {
        let proj = Projection::new(6, emb.dim(), 3).unwrap();
        let cfg = TokenizerConfig {
            batch,
            ..Default::default()
        };
        let mut cache = BackgroundCache::new();
        tokenize(
            "t",
            cube.view(),
            mask.view(),
            emb,
            &proj,
            &cfg,
            &mut cache,
            &ProgressBar::hidden(),
        )
        .unwrap()
    }

    /// A 28³ volume with varied content and some background borders.
    fn volume() -> Array3<f32> {
        Array3::from_shape_fn((28, 28, 28), |(z, y, x)| {
            if z < 3 || y > 25 || x == 0 {
                0.0
            } else {
                (((z * 31 + y * 17 + x * 7) % 23) as f32) / 23.0
            }
        })
    }

    #[test]
    fn one_bright_cube_changes_exactly_its_token_in_all_three_axes() {
        // background volume (all void would be refused, so the mask is full), one bright 14³ cube at
        // canonical token (z, y, x) = (1, 0, 1) of a 28³ volume (G = 2)
        let mut cube = Array3::<f32>::zeros((28, 28, 28));
        cube.slice_mut(s![14..28, 0..14, 14..28]).fill(0.8);
        let mask = Array3::from_elem((28, 28, 28), true);
        let mut emb = FakeEmbedder::new(&[1, 2], 5, 11);
        let (set, _) = run(&cube, &mask, &mut emb, 4);
        let (z, y, x, g) = (1, 0, 1, 2);
        let target = (z * g + y) * g + x;
        let d = 6;
        for l in 0..2 {
            for p in 0..8 {
                for a in 0..3 {
                    let block = set.tokens.slice(s![l, p, a * d..(a + 1) * d]);
                    let reference = set.tokens.slice(s![
                        l,
                        if target == 0 { 1 } else { 0 },
                        a * d..(a + 1) * d
                    ]);
                    let same = block
                        .iter()
                        .zip(reference.iter())
                        .all(|(x, y)| (x - y).abs() < 1e-6);
                    assert_eq!(same, p != target, "layer {l} token {p} axis block {a}");
                }
            }
        }
    }

    #[test]
    fn swapping_y_and_x_permutes_tokens_and_swaps_coronal_with_sagittal() {
        let v = volume();
        let vt = v
            .clone()
            .permuted_axes([0, 2, 1])
            .as_standard_layout()
            .to_owned();
        let mask = v.mapv(|x| x > 0.0);
        let mask_t = vt.mapv(|x| x > 0.0);
        let mut emb = FakeEmbedder::new(&[3], 4, 5);
        let (a, _) = run(&v, &mask, &mut emb, 5);
        let (b, _) = run(&vt, &mask_t, &mut emb, 5);
        let (g, d) = (2usize, 6usize);
        for z in 0..g {
            for y in 0..g {
                for x in 0..g {
                    let p = (z * g + y) * g + x;
                    let q = (z * g + x) * g + y; // the same voxels in the transposed volume
                    let ta = a.tokens.slice(s![0, p, ..]);
                    let tb = b.tokens.slice(s![0, q, ..]);
                    for c in 0..d {
                        assert!((ta[c] - tb[c]).abs() < 1e-5, "axial");
                        assert!(
                            (ta[d + c] - tb[2 * d + c]).abs() < 1e-5,
                            "coronal ↔ sagittal"
                        );
                        assert!(
                            (ta[2 * d + c] - tb[d + c]).abs() < 1e-5,
                            "sagittal ↔ coronal"
                        );
                    }
                    assert_eq!(a.valid[p], b.valid[q]);
                }
            }
        }
    }

    #[test]
    fn batching_and_background_reuse_do_not_change_tokens() {
        let v = volume();
        let mask = v.mapv(|x| x > 0.0);
        let mut e1 = FakeEmbedder::new(&[1, 4], 7, 2);
        let mut e2 = FakeEmbedder::new(&[1, 4], 7, 2);
        let (a, sa) = run(&v, &mask, &mut e1, 1);
        let (b, sb) = run(&v, &mask, &mut e2, 14);
        let diff = (&a.tokens - &b.tokens)
            .iter()
            .fold(0f32, |m, x| m.max(x.abs()));
        assert!(diff < 1e-6, "{diff}");
        // background slices: axial z = 0, 1, 2; coronal y = 26, 27; sagittal x = 0 → 6, one computed
        assert_eq!(sa.background_computed, 1);
        assert_eq!(sa.background_reused, 5);
        assert_eq!(sa.inferred, 84 - 6);
        assert_eq!(e1.images_embedded, 84 - 6 + 1);
        assert_eq!(sb.batches, 3 * 2); // per axis: ≤ 26 slices in batches of 14
        assert_eq!(a.tokens.dim(), (2, 8, 18));
        // a second volume reusing the same cache computes no background at all
        let proj = Projection::new(6, 7, 3).unwrap();
        let mut cache = BackgroundCache::new();
        let cfg = TokenizerConfig::default();
        let bar = ProgressBar::hidden();
        let mut stats_of = |name: &str| {
            let run = tokenize(
                name,
                v.view(),
                mask.view(),
                &mut e2,
                &proj,
                &cfg,
                &mut cache,
                &bar,
            );
            run.unwrap().1
        };
        stats_of("x");
        let s2 = stats_of("y");
        assert_eq!((s2.background_computed, s2.background_reused), (0, 6));
    }

    #[test]
    fn bad_cubes_are_refused_with_the_name() {
        let mut emb = FakeEmbedder::new(&[1], 3, 0);
        let proj = Projection::new(2, 3, 0).unwrap();
        let cfg = TokenizerConfig::default();
        let mut cache = BackgroundCache::new();
        let bar = ProgressBar::hidden();
        let mut refuse = |name: &str, c: &Array3<f32>, m: &Array3<bool>| {
            tokenize(
                name,
                c.view(),
                m.view(),
                &mut emb,
                &proj,
                &cfg,
                &mut cache,
                &bar,
            )
            .unwrap_err()
        };
        let c = Array3::<f32>::zeros((28, 28, 14));
        let e = refuse("case7", &c, &Array3::from_elem((28, 28, 14), true));
        assert!(
            e.to_string().contains("case7") && e.to_string().contains("[28, 28, 14]"),
            "{e}"
        );
        let mut c = Array3::<f32>::zeros((14, 14, 14));
        c[[1, 2, 3]] = f32::NAN;
        let e = refuse("case8", &c, &Array3::from_elem((14, 14, 14), true));
        assert!(e.to_string().contains("(1, 2, 3)"), "{e}");
        let c = Array3::<f32>::zeros((14, 14, 14));
        let e = refuse("case9", &c, &Array3::from_elem((14, 14, 14), false));
        assert!(e.to_string().contains("void"), "{e}");
        assert_eq!(e.exit_code(), 2);
    }
}
