//! Preprocessing of a native volume into the canonical `S³` cube the backbone reads, and the way back.
//!
//! ALGORITHM.md §3.1–3.2 steps 0–2, one module per stage:
//!
//! | stage | module | forward | back |
//! |---|---|---|---|
//! | canonical orientation (RAS+) | [`orient`] | permute/flip, exact | exact inverse |
//! | brain mask `V > 0` (or a user mask) | [`mask`] | | |
//! | crop to the brain's box + margin | [`crop`] | a box, no copy | fill outside |
//! | resize to `S³`, aspect kept by padding | [`resize`] | trilinear (labels: nearest) | trilinear / nearest |
//! | Nyúl standardisation | [`nyul`] | learned on the healthy set | (maps need none) |
//! | scaling to `[0, 1]`, background 0 | [`scale`] | | |
//!
//! **Arrays.** Native arrays are indexed `[k][j][i]` like [`crate::formats::nifti::Volume::data`]; canonical and
//! cube arrays `[z][y][x]` (z: inferior→superior, y: posterior→anterior, x: left→right; ALGORITHM.md §3.2
//! step 3). Affines always take `(i, j, k)` / `(x, y, z)`, i.e. the reverse of the array index order.
//!
//! **Use** (what `score` does):
//! ```no_run
//! use mri_ad::formats::nifti::{read_volume, write_map_like};
//! use mri_ad::volume::{Preprocessor, PreprocessConfig, nyul::{self, NyulModel}};
//! # fn main() -> mri_ad::Result<()> {
//! let pre = Preprocessor::new(PreprocessConfig::default())?;
//! let healthy = read_volume("h1.nii.gz".as_ref())?;
//! let p = pre.prepare(&healthy, None)?;                         // steps: orient, mask, crop, resize
//! let own = nyul::landmarks(&p.cube, &p.mask, &healthy.path)?;  // once per healthy volume
//! let model = NyulModel::fit(&[own])?;                          // save with model.save(run/"nyul.json")
//! let input = pre.backbone_input(&p, &model)?;                  // S³ in [0, 1], background 0
//! let s3_map = input.clone();                                    // ... the scorer's S³ anomaly map
//! let native = p.transform.map_to_native(&s3_map, 0.0)?;        // back on the input's own grid
//! write_map_like("h1_anomaly.nii.gz".as_ref(), &healthy, &native)?;
//! # Ok(()) }
//! ```

pub mod crop;
pub mod mask;
pub mod nyul;
pub mod orient;
pub mod resize;
pub mod scale;
pub mod space;

use std::path::Path;

use ndarray::Array3;

use crate::formats::nifti::{self, Affine, Volume};
use crate::{Error, Result};
use crop::CropBox;
use orient::Orientation;
use resize::{CubeGrid, Placement};
use space::{BatchSpace, Grid, Survey};

/// Geometry tolerance (mm) when a mask or label map must lie on its image's grid, and when two canonical
/// grids count as the same.
pub const GRID_TOLERANCE_MM: f64 = 1e-3;

/// Preprocessing parameters.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PreprocessConfig {
    /// Cube edge `S` (a multiple of 14; default 224).
    pub size: usize,
    /// Margin around the brain's bounding box, in canonical voxels (of the batch's frame with
    /// [`CropMode::Batch`]; default 2).
    pub margin: usize,
    /// One crop box for the whole batch (default) or one per volume.
    #[serde(default)]
    pub crop: CropMode,
}

/// How the crop box is chosen (ALGORITHM.md §12 Q11).
///
/// * [`CropMode::Batch`] (default, the spec's choice): the union of the brain boxes of every volume of the
///   batch in world coordinates ([`space`]), so volumes registered to one atlas keep one common geometry in
///   the cube: the same token covers the same anatomy in every volume, whatever each file's storage
///   orientation, voxel size or field of view. Volumes evidently not in one space are refused.
/// * [`CropMode::Volume`]: each volume's own brain box. For volumes that are *not* registered; the
///   brain's outline then lands at a different place in each cube, which shows up as spurious "recurring"
///   matches between volumes whose boxes happen to agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CropMode {
    #[default]
    Batch,
    Volume,
}

crate::settings::choice_setting!(CropMode, ["batch", "volume"]);

crate::settings::declare_settings! {
    /// The cube's geometry: shared by `extract`, `score` and `check`.
    pub struct CubeSettings {
        /// Cube edge S (multiple of 14): volumes are resized to S³, the tokens form a (S/14)³ grid.
        size: usize = 224, check = crate::backbone::check_size;
        /// Margin in voxels around the brain's bounding box before resizing to the cube (voxels of the
        /// batch's reference grid with --crop batch).
        margin: usize = 2;
        /// batch: one crop box for all volumes (the union of their brain boxes in world space), so
        /// volumes registered to one atlas keep a common geometry whatever their storage orientation,
        /// voxel size or field of view (volumes on other grids than the batch's reference are resampled;
        /// volumes evidently not registered are refused with exit 2); volume: each volume's own brain
        /// box (for volumes that are not registered to one atlas).
        crop: CropMode = CropMode::Batch;
    }
}

impl CubeSettings {
    /// The preprocessing configuration of these settings.
    pub fn preprocess(&self) -> PreprocessConfig {
        PreprocessConfig {
            size: self.size,
            margin: self.margin,
            crop: self.crop,
        }
    }
}

impl std::str::FromStr for CropMode {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "batch" => Ok(CropMode::Batch),
            "volume" => Ok(CropMode::Volume),
            other => Err(format!("unknown crop mode `{other}` (batch or volume)")),
        }
    }
}

impl Default for PreprocessConfig {
    fn default() -> Self {
        PreprocessConfig {
            size: 224,
            margin: 2,
            crop: CropMode::Batch,
        }
    }
}

/// The files of one volume: the image and its brain mask (`--masks`), if any.
#[derive(Debug, Clone, Copy)]
pub struct VolumeFiles<'a> {
    pub image: &'a Path,
    pub mask: Option<&'a Path>,
}

impl VolumeFiles<'_> {
    /// Reads the image and the mask whole.
    pub fn read(&self) -> Result<(Volume, Option<Volume>)> {
        let image = nifti::read_volume(self.image)?;
        let mask = self.mask.map(nifti::read_volume).transpose()?;
        Ok((image, mask))
    }
}

/// The orientation of a volume and its canonical grid (storage orientation undone).
pub fn canonical_grid(size: [usize; 3], affine: &Affine) -> (Orientation, Grid) {
    let orientation = Orientation::of(affine, size);
    let grid = Grid {
        size: orientation.canonical_size(),
        affine: orientation.canonical_affine(affine),
    };
    (orientation, grid)
}

/// Everything needed to map between a native grid and its `S³` cube.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Transform {
    /// Native voxel `(i, j, k)` → world.
    pub native_affine: Affine,
    pub orientation: Orientation,
    /// The canonical grid the cube is placed in: the batch's frame ([`space`]), or with
    /// [`CropMode::Volume`] the volume's own canonical grid.
    pub frame: Grid,
    /// In frame voxels `(x, y, z)`.
    pub crop: CropBox,
    pub grid: CubeGrid,
    /// Where the volume's own canonical grid lies in the frame.
    pub placement: Placement,
}

impl Transform {
    /// Cube edge `S`.
    pub fn size(&self) -> usize {
        self.grid.size
    }

    /// Canonical voxel `(x, y, z)` → world.
    pub fn canonical_affine(&self) -> Affine {
        self.orientation.canonical_affine(&self.native_affine)
    }

    /// Cube voxel `(x, y, z)` → world (isotropic voxels of `grid.voxel_mm`).
    pub fn cube_affine(&self) -> Affine {
        self.grid.cube_affine(&self.frame.affine)
    }

    fn check_cube<T>(&self, a: &Array3<T>, what: &str) -> Result<()> {
        let s = self.size();
        if a.shape() != [s, s, s] {
            return Err(Error::bad_argument(
                what,
                format!("expected an {s}³ cube, got shape {:?}", a.shape()),
            ));
        }
        Ok(())
    }

    fn check_native<T>(&self, a: &Array3<T>, what: &Volume) -> Result<()> {
        let [nx, ny, nz] = self.orientation.native_size;
        if a.shape() != [nz, ny, nx]
            || !nifti::same_grid(
                what.size_ijk(),
                &what.affine,
                self.orientation.native_size,
                &self.native_affine,
                GRID_TOLERANCE_MM,
            )
        {
            return Err(Error::Mismatch {
                path: what.path.clone(),
                what: "the voxel grid (size and affine)".into(),
                expected: format!(
                    "size {:?}, affine {}",
                    self.orientation.native_size,
                    nifti::fmt_affine(&self.native_affine)
                ),
                actual: format!(
                    "size {:?}, affine {}",
                    what.size_ijk(),
                    nifti::fmt_affine(&what.affine)
                ),
                reference: "its image".into(),
            });
        }
        Ok(())
    }

    /// Native `[k][j][i]` intensities → `S³` cube (orient, crop, pad, trilinear resize).
    pub fn native_to_cube(&self, native: &Array3<f32>) -> Array3<f32> {
        let canonical = self.orientation.to_canonical(native);
        resize::to_cube(&canonical, &self.crop, &self.grid, &self.placement)
    }

    /// A label map on this grid → binary `S³` lesion mask (label > 0), nearest voxel (ALGORITHM.md §3.1).
    /// The label map's grid must match the image's (else [`Error::Mismatch`]).
    pub fn labels_to_cube(&self, labels: &Volume) -> Result<Array3<u8>> {
        self.check_native(&labels.data, labels)?;
        let canonical = self
            .orientation
            .to_canonical(&labels.data.mapv(|v| (v > 0.0) as u8));
        Ok(resize::to_cube_nearest(
            &canonical,
            &self.crop,
            &self.grid,
            &self.placement,
        ))
    }

    /// An `S³` map → the native grid `[k][j][i]`: trilinear in the cube (align-corners), `fill` outside the
    /// crop box, then the exact inverse orientation.
    pub fn map_to_native(&self, map: &Array3<f32>, fill: f32) -> Result<Array3<f32>> {
        self.check_cube(map, "map")?;
        let canonical = resize::from_cube(
            map,
            &self.crop,
            &self.grid,
            self.orientation.canonical_size(),
            fill,
            &self.placement,
        );
        Ok(self.orientation.to_native(&canonical))
    }

    /// An `S³` mask → the native grid by nearest voxel (0 outside the crop box).
    pub fn mask_to_native(&self, mask: &Array3<u8>) -> Result<Array3<u8>> {
        self.check_cube(mask, "mask")?;
        let canonical = resize::from_cube_nearest(
            mask,
            &self.crop,
            &self.grid,
            self.orientation.canonical_size(),
            &self.placement,
        );
        Ok(self.orientation.to_native(&canonical))
    }
}

/// The result of steps 0 and the geometric part of preprocessing for one volume.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The volume's file (named in errors of the later steps).
    pub path: std::path::PathBuf,
    /// `S³` cube `[z][y][x]` of the (masked) intensities, before standardisation.
    pub cube: Array3<f32>,
    /// `Ω` on the cube: `cube > 0`, or with a user mask the cube voxels whose trilinear stencil touches the
    /// mask (the same rule on the mask's indicator, so that a brain of positive intensities gives the same
    /// `Ω` whether it was skull-stripped or masked).
    pub mask: Array3<bool>,
    /// Maps between the cube and the native grid.
    pub transform: Transform,
}

/// The brain of a volume on its own grid: `mask > 0` for a user mask (on the same grid, checked by the
/// caller), else `V > 0`. The one rule for the preprocessing and for the maps written back.
pub fn native_brain(vol: &Volume, user_mask: Option<&Volume>) -> Array3<bool> {
    mask::threshold_mask(&user_mask.unwrap_or(vol).data)
}

/// The canonical brain mask of a volume: `V > 0`, or `mask > 0` for a user mask on the same grid.
fn canonical_mask(
    vol: &Volume,
    user_mask: Option<&Volume>,
    orientation: &Orientation,
) -> Result<Array3<bool>> {
    let m = match user_mask {
        Some(m) => {
            if !vol.same_grid(m, GRID_TOLERANCE_MM) {
                return Err(nifti::grid_mismatch(
                    &m.path,
                    "brain mask",
                    (m.size_ijk(), &m.affine),
                    (vol.size_ijk(), &vol.affine),
                    &vol.path,
                ));
            }
            orientation.to_canonical(&native_brain(vol, Some(m)))
        }
        None => orientation.to_canonical(&native_brain(vol, None)),
    };
    if mask::count(&m) == 0 {
        let (path, why) = match user_mask {
            Some(u) => (u.path.clone(), "the brain mask has no voxel > 0"),
            None => (
                vol.path.clone(),
                "no voxel is > 0, so the brain mask is empty (an all-zero volume, or intensities that are \
                 not positive, such as z-scores: give brain masks with --masks)",
            ),
        };
        return Err(Error::bad_input(path, why));
    }
    Ok(m)
}

/// What [`Preprocessor::for_batch`] measured: one survey per volume and, with [`CropMode::Batch`], the plan
/// of the batch's space.
#[derive(Debug, Clone)]
pub struct BatchGeometry {
    pub surveys: Vec<Survey>,
    pub plan: Option<space::Plan>,
}

impl BatchGeometry {
    /// The indices of the volumes resampled into the batch's space (not on its frame's grid).
    pub fn resampled(&self) -> Vec<usize> {
        self.plan
            .iter()
            .flat_map(|p| {
                p.members
                    .iter()
                    .enumerate()
                    .filter(|(_, m)| m.fit == space::Fit::Resampled)
                    .map(|(i, _)| i)
            })
            .collect()
    }
}

/// Runs the preprocessing steps on volumes.
#[derive(Debug, Clone)]
pub struct Preprocessor {
    pub config: PreprocessConfig,
    /// The batch's space ([`CropMode::Batch`]); `None`: each volume in its own canonical grid and box.
    pub space: Option<BatchSpace>,
}

impl Preprocessor {
    /// Validates the configuration (`size` a positive multiple of 14).
    pub fn new(config: PreprocessConfig) -> Result<Self> {
        crate::backbone::check_size("--size", &config.size)?;
        Ok(Preprocessor {
            config,
            space: None,
        })
    }

    /// The same preprocessor with one space for every volume (see [`CropMode::Batch`] and [`space::plan`]).
    pub fn with_space(mut self, space: BatchSpace) -> Self {
        self.space = Some(space);
        self
    }

    /// Reads every volume of a batch once (its image and brain mask, `workers` at a time) and settles its
    /// geometry before anything is written: a volume that is evidently not skull-stripped (and has no mask;
    /// [`space::not_skull_stripped`]) is refused, then with [`CropMode::Batch`] the batch's world space is
    /// planned ([`space::plan`]) and a volume evidently not in it is refused. Errors name the first such
    /// file in order. Returns the preprocessor (with the space) and what was measured.
    pub fn for_batch(
        config: PreprocessConfig,
        files: &[VolumeFiles],
        workers: usize,
        progress: &crate::progress::Progress,
    ) -> Result<(Preprocessor, BatchGeometry)> {
        let pre = Preprocessor::new(config)?;
        let surveys = pre.survey_all(files, workers, progress)?;
        if let Some((s, why)) = surveys
            .iter()
            .find_map(|s| space::not_skull_stripped(s).map(|w| (s, w)))
        {
            return Err(Error::bad_input(&s.path, why));
        }
        if pre.config.crop == CropMode::Volume || surveys.is_empty() {
            return Ok((
                pre,
                BatchGeometry {
                    surveys,
                    plan: None,
                },
            ));
        }
        let plan = space::plan(&surveys, pre.config.margin);
        let batch_space = plan.clone().into_space(&surveys)?;
        Ok((
            pre.with_space(batch_space),
            BatchGeometry {
                surveys,
                plan: Some(plan),
            },
        ))
    }

    /// What the batch space and the skull-stripping check need to know of one volume (and its mask).
    pub fn survey(&self, vol: &Volume, user_mask: Option<&Volume>) -> Result<Survey> {
        let (orientation, grid) = canonical_grid(vol.size_ijk(), &vol.affine);
        let m = canonical_mask(vol, user_mask, &orientation)?;
        let brain_voxels = mask::count(&m);
        let voxel_ml = nifti::spacing_of(&vol.affine).iter().product::<f64>() / 1000.0;
        Ok(Survey {
            path: vol.path.clone(),
            grid,
            brain: CropBox::around(&m, 0).expect("mask checked non-empty"),
            brain_voxels,
            brain_ml: brain_voxels as f64 * voxel_ml,
            corner_fraction: mask::corner_fraction(&vol.data),
            masked: user_mask.is_some(),
        })
    }

    /// The [`Survey`] of each volume of `files` (each read whole once, `workers` at a time: see
    /// [`crate::parallel`]; the first bad input in order stops it).
    pub fn survey_all(
        &self,
        files: &[VolumeFiles],
        workers: usize,
        progress: &crate::progress::Progress,
    ) -> Result<Vec<Survey>> {
        let bar = progress.bar(files.len() as u64, "reading volumes");
        let surveys = crate::parallel::map_in_order(workers, files, &|| bar.inc(1), &|_, f| {
            let (vol, mask) = f.read()?;
            self.survey(&vol, mask.as_ref())
        })?;
        bar.finish_and_clear();
        Ok(surveys)
    }

    /// The Nyúl landmarks of each volume of `files` (read and prepared `workers` at a time, in order), to
    /// fit a [`nyul::NyulModel`] on.
    pub fn nyul_landmarks(
        &self,
        files: &[VolumeFiles],
        workers: usize,
        progress: &crate::progress::Progress,
    ) -> Result<Vec<[f64; 13]>> {
        let bar = progress.bar(files.len() as u64, "Nyúl landmarks");
        let per_volume = crate::parallel::map_in_order(workers, files, &|| bar.inc(1), &|_, f| {
            let (vol, mask) = f.read()?;
            let prepared = self.prepare(&vol, mask.as_ref())?;
            nyul::landmarks(&prepared.cube, &prepared.mask, f.image)
        })?;
        bar.finish_and_clear();
        Ok(per_volume)
    }

    /// Steps 0 and crop/resize: orient, mask, crop to the brain (+ margin; the batch's box in its space),
    /// resize to `S³`. With a user mask, voxels outside it are set to 0 first.
    pub fn prepare(&self, vol: &Volume, user_mask: Option<&Volume>) -> Result<Prepared> {
        let (o, own) = canonical_grid(vol.size_ijk(), &vol.affine);
        let cmask = canonical_mask(vol, user_mask, &o)?;
        let (frame, crop, placement) = match &self.space {
            Some(space) => {
                let placement = space
                    .placement(&own)
                    .ok_or_else(|| Error::bad_input(&vol.path, "its affine cannot be inverted"))?;
                (space.frame.clone(), space.crop, placement)
            }
            None => (
                own,
                CropBox::around(&cmask, self.config.margin).expect("mask checked non-empty"),
                Placement::Frame,
            ),
        };
        let grid = CubeGrid::fit(&crop, frame.spacing(), self.config.size);
        let transform = Transform {
            native_affine: vol.affine,
            orientation: o,
            frame,
            crop,
            grid,
            placement,
        };
        let mut canonical = transform.orientation.to_canonical(&vol.data);
        if user_mask.is_some() {
            ndarray::Zip::from(&mut canonical)
                .and(&cmask)
                .for_each(|v, &m| {
                    if !m {
                        *v = 0.0
                    }
                });
        }
        let t = &transform;
        let cube = resize::to_cube(&canonical, &t.crop, &t.grid, &t.placement);
        let mask = match user_mask {
            Some(_) => {
                let indicator = cmask.mapv(|m| m as u8 as f32);
                resize::to_cube(&indicator, &t.crop, &t.grid, &t.placement).mapv(|v| v > 0.0)
            }
            None => mask::threshold_mask(&cube),
        };
        if mask::count(&mask) < 2 {
            return Err(Error::bad_input(
                &vol.path,
                format!(
                    "the brain covers fewer than 2 voxels of the {}³ cube",
                    self.config.size
                ),
            ));
        }
        Ok(Prepared {
            path: vol.path.clone(),
            cube,
            mask,
            transform,
        })
    }

    /// Steps 1–2: Nyúl standardisation with `model`, then scaling to `[0, 1]` with background 0.
    pub fn backbone_input(&self, p: &Prepared, model: &nyul::NyulModel) -> Result<Array3<f32>> {
        let own = nyul::landmarks(&p.cube, &p.mask, &p.path)?;
        Ok(scale::to_unit_range(&model.apply(&p.cube, &own), &p.mask))
    }
}

#[cfg(test)]
mod tests;
