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
//! **Arrays.** Native arrays are indexed `[k][j][i]` like [`crate::io::nifti::Volume::data`]; canonical and
//! cube arrays `[z][y][x]` (z: inferior→superior, y: posterior→anterior, x: left→right; ALGORITHM.md §3.2
//! step 3). Affines always take `(i, j, k)` / `(x, y, z)`, i.e. the reverse of the array index order.
//!
//! **Use** (what `score` does):
//! ```no_run
//! use mri_ad::io::nifti::{read_volume, write_map_like};
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

use ndarray::Array3;

use crate::io::nifti::{self, Affine, Volume};
use crate::{Error, Result};
use crop::CropBox;
use orient::Orientation;
use resize::CubeGrid;

/// Geometry tolerance (mm) when a mask or label map must lie on its image's grid.
pub const GRID_TOLERANCE_MM: f64 = 1e-3;

/// Preprocessing parameters.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PreprocessConfig {
    /// Cube edge `S` (a multiple of 14; default 224).
    pub size: usize,
    /// Margin around the brain's bounding box, in canonical voxels (default 2).
    pub margin: usize,
    /// One crop box for the whole batch (default) or one per volume.
    #[serde(default)]
    pub crop: CropMode,
}

/// How the crop box is chosen (ALGORITHM.md §12 Q11).
///
/// * [`CropMode::Batch`] (default, the spec's choice): the union of the brain boxes of every volume of the
///   batch, so volumes registered to one atlas keep one common geometry in the cube: the same token covers
///   the same anatomy in every volume. It needs every volume on the same grid (size and affine).
/// * [`CropMode::Volume`]: each volume's own brain box. For volumes that are *not* on one grid; the
///   brain's outline then lands at a different place in each cube, which shows up as spurious "recurring"
///   matches between volumes whose boxes happen to agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CropMode {
    #[default]
    Batch,
    Volume,
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

/// Everything needed to map between a native grid and its `S³` cube.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Transform {
    /// Native voxel `(i, j, k)` → world.
    pub native_affine: Affine,
    pub orientation: Orientation,
    /// In canonical `(x, y, z)` voxels.
    pub crop: CropBox,
    pub grid: CubeGrid,
}

impl Transform {
    /// The transform of a native grid, with a crop box in its canonical frame.
    pub fn new(
        native_size: [usize; 3],
        native_affine: &Affine,
        crop: CropBox,
        size: usize,
    ) -> Self {
        let orientation = Orientation::of(native_affine, native_size);
        let caff = orientation.canonical_affine(native_affine);
        let grid = CubeGrid::fit(&crop, nifti::spacing_of(&caff), size);
        Transform {
            native_affine: *native_affine,
            orientation,
            crop,
            grid,
        }
    }

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
        self.grid.cube_affine(&self.canonical_affine())
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
                    "size {:?}, affine {:?}",
                    self.orientation.native_size, self.native_affine
                ),
                actual: format!("size {:?}, affine {:?}", what.size_ijk(), what.affine),
                reference: "its image".into(),
            });
        }
        Ok(())
    }

    /// Native `[k][j][i]` intensities → `S³` cube (orient, crop, pad, trilinear resize).
    pub fn native_to_cube(&self, native: &Array3<f32>) -> Array3<f32> {
        let canonical = self.orientation.to_canonical(native);
        resize::to_cube(&canonical, &self.crop, &self.grid)
    }

    /// A label map on this grid → binary `S³` lesion mask (label > 0), nearest voxel (ALGORITHM.md §3.1).
    /// The label map's grid must match the image's (else [`Error::Mismatch`]).
    pub fn labels_to_cube(&self, labels: &Volume) -> Result<Array3<u8>> {
        self.check_native(&labels.data, labels)?;
        let canonical = self
            .orientation
            .to_canonical(&labels.data.mapv(|v| (v > 0.0) as u8));
        Ok(resize::to_cube_nearest(&canonical, &self.crop, &self.grid))
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
    /// `Ω` on the cube: `cube > 0`, or the user's mask resampled by nearest voxel.
    pub mask: Array3<bool>,
    /// Maps between the cube and the native grid.
    pub transform: Transform,
}

/// Runs the preprocessing steps on volumes.
#[derive(Debug, Clone)]
pub struct Preprocessor {
    pub config: PreprocessConfig,
    /// The batch's common crop box ([`CropMode::Batch`]); `None`: each volume's own box.
    pub batch_box: Option<CropBox>,
}

impl Preprocessor {
    /// Validates the configuration (`size` a positive multiple of 14).
    pub fn new(config: PreprocessConfig) -> Result<Self> {
        if config.size == 0 || config.size % 14 != 0 {
            return Err(Error::bad_argument(
                "--size",
                format!(
                    "the cube edge must be a positive multiple of 14 (the ViT patch size), got {}",
                    config.size
                ),
            ));
        }
        Ok(Preprocessor {
            config,
            batch_box: None,
        })
    }

    /// The same preprocessor with a common crop box for every volume (see [`CropMode::Batch`]).
    pub fn with_batch_box(mut self, crop: CropBox) -> Self {
        self.batch_box = Some(crop);
        self
    }

    /// The union of the crop boxes of `paths` (each read once, `workers` at a time: see
    /// [`crate::parallel`]), checking that every volume lies on the grid of the first: the same size and the
    /// same affine within [`GRID_TOLERANCE_MM`]. A volume on another grid is an error that names both files
    /// and points to `--crop volume`.
    pub fn union_box(
        &self,
        paths: &[&std::path::Path],
        workers: usize,
        progress: &crate::progress::Progress,
    ) -> Result<CropBox> {
        let bar = progress.bar(paths.len() as u64, "crop box");
        let Some((&first, rest)) = paths.split_first() else {
            return Err(Error::BadBatch {
                path: "batch".into(),
                problem: "no volume to compute a crop box from".into(),
            });
        };
        // The first volume's grid is the reference; every other volume is checked against it as it is
        // read, so that a volume on another grid stops the batch like any other bad input.
        let reference = nifti::read_volume(first)?;
        let mut union = self.crop_box(&reference, None)?;
        bar.inc(1);
        let (size, affine) = (reference.size_ijk(), reference.affine);
        drop(reference);
        let boxes = crate::parallel::map_in_order(workers, rest, &|| bar.inc(1), &|_, path| {
            let vol = nifti::read_volume(path)?;
            if !nifti::same_grid(
                size,
                &affine,
                vol.size_ijk(),
                &vol.affine,
                GRID_TOLERANCE_MM,
            ) {
                return Err(Error::bad_input(
                    path,
                    format!(
                        "lies on another voxel grid than {} (size {:?} vs {size:?}, affine {:?} vs \
                         {affine:?}); one crop box for the batch (--crop batch, the default) needs every \
                         volume on one grid, as after registration to one atlas: use --crop volume for \
                         volumes on different grids",
                        first.display(),
                        vol.size_ijk(),
                        vol.affine
                    ),
                ));
            }
            self.crop_box(&vol, None)
        })?;
        for b in &boxes {
            union = union.union(b);
        }
        bar.finish_and_clear();
        Ok(union)
    }

    /// The Nyúl landmarks of each volume of `paths` (read and prepared `workers` at a time, in order), to
    /// fit a [`nyul::NyulModel`] on.
    pub fn nyul_landmarks(
        &self,
        paths: &[&std::path::Path],
        workers: usize,
        progress: &crate::progress::Progress,
    ) -> Result<Vec<[f64; 13]>> {
        let bar = progress.bar(paths.len() as u64, "Nyúl landmarks");
        let per_volume =
            crate::parallel::map_in_order(workers, paths, &|| bar.inc(1), &|_, path| {
                let prepared = self.prepare(&nifti::read_volume(path)?, None)?;
                nyul::landmarks(&prepared.cube, &prepared.mask, path)
            })?;
        bar.finish_and_clear();
        Ok(per_volume)
    }

    /// The canonical brain mask of a volume: `V > 0`, or `mask > 0` for a user mask on the same grid.
    fn canonical_mask(
        &self,
        vol: &Volume,
        user_mask: Option<&Volume>,
        orientation: &Orientation,
    ) -> Result<Array3<bool>> {
        let m = match user_mask {
            Some(m) => {
                if !vol.same_grid(m, GRID_TOLERANCE_MM) {
                    return Err(Error::Mismatch {
                        path: m.path.clone(),
                        what: "the voxel grid (size and affine)".into(),
                        expected: format!("size {:?}, affine {:?}", vol.size_ijk(), vol.affine),
                        actual: format!("size {:?}, affine {:?}", m.size_ijk(), m.affine),
                        reference: vol.path.display().to_string(),
                    });
                }
                orientation.to_canonical(&m.data.mapv(|v| v > 0.0))
            }
            None => mask::threshold_mask(&orientation.to_canonical(&vol.data)),
        };
        if mask::count(&m) == 0 {
            let (path, why) = match user_mask {
                Some(u) => (u.path.clone(), "the brain mask has no voxel > 0"),
                None => (
                    vol.path.clone(),
                    "no voxel is > 0, so the brain mask is empty (an all-zero volume, or a background that \
                     is not zero: give masks with --masks)",
                ),
            };
            return Err(Error::bad_input(path, why));
        }
        Ok(m)
    }

    /// The crop box of a volume in its canonical frame (brain box + margin); use it to build a batch-wide
    /// box with [`CropBox::union`] when the volumes share a grid.
    pub fn crop_box(&self, vol: &Volume, user_mask: Option<&Volume>) -> Result<CropBox> {
        let o = Orientation::of(&vol.affine, vol.size_ijk());
        let m = self.canonical_mask(vol, user_mask, &o)?;
        Ok(CropBox::around(&m, self.config.margin).expect("mask checked non-empty"))
    }

    /// Steps 0 and crop/resize: orient, mask, crop to the brain (+ margin), resize to `S³`.
    pub fn prepare(&self, vol: &Volume, user_mask: Option<&Volume>) -> Result<Prepared> {
        self.prepare_with_box(vol, user_mask, None)
    }

    /// Like [`Self::prepare`] with an explicit canonical crop box (e.g. the batch union); `None` = the
    /// volume's own brain box.
    pub fn prepare_with_box(
        &self,
        vol: &Volume,
        user_mask: Option<&Volume>,
        crop: Option<CropBox>,
    ) -> Result<Prepared> {
        let o = Orientation::of(&vol.affine, vol.size_ijk());
        let cmask = self.canonical_mask(vol, user_mask, &o)?;
        let crop = match crop {
            Some(c) => {
                if !c.fits(o.canonical_size()) {
                    return Err(Error::bad_input(
                        &vol.path,
                        format!(
                            "the crop box {c:?} does not fit the canonical grid {:?}",
                            o.canonical_size()
                        ),
                    ));
                }
                c
            }
            None => match self.batch_box {
                Some(c) if c.fits(o.canonical_size()) => c,
                Some(c) => {
                    return Err(Error::bad_input(
                        &vol.path,
                        format!(
                            "the batch crop box {c:?} does not fit this volume's canonical grid {:?}; \
                             is it on the batch's grid? (--crop volume crops each volume on its own)",
                            o.canonical_size()
                        ),
                    ))
                }
                None => CropBox::around(&cmask, self.config.margin).expect("mask checked non-empty"),
            },
        };
        let transform = Transform::new(vol.size_ijk(), &vol.affine, crop, self.config.size);
        let mut canonical = o.to_canonical(&vol.data);
        if user_mask.is_some() {
            ndarray::Zip::from(&mut canonical)
                .and(&cmask)
                .for_each(|v, &m| {
                    if !m {
                        *v = 0.0
                    }
                });
        }
        let cube = resize::to_cube(&canonical, &transform.crop, &transform.grid);
        let mask = match user_mask {
            Some(_) => resize::to_cube_nearest(&cmask, &transform.crop, &transform.grid),
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
mod tests {
    use super::*;

    fn vol(data: Array3<f32>, affine: Affine) -> Volume {
        let header = nifti::header_for_affine(&affine);
        Volume {
            path: "v.nii".into(),
            data,
            header,
            affine,
        }
    }

    #[test]
    fn batch_box_is_the_union_and_refuses_another_grid() {
        let dir = tempfile::tempdir().unwrap();
        let a = nifti::identity();
        let mut small = Array3::<f32>::zeros((20, 20, 20));
        small.slice_mut(ndarray::s![5..10, 6..12, 7..14]).fill(1.0);
        let mut large = Array3::<f32>::zeros((20, 20, 20));
        large.slice_mut(ndarray::s![3..15, 8..16, 2..9]).fill(1.0);
        let (p1, p2, p3) = (
            dir.path().join("small.nii"),
            dir.path().join("large.nii"),
            dir.path().join("moved.nii"),
        );
        nifti::write_volume(&p1, &small, &a).unwrap();
        nifti::write_volume(&p2, &large, &a).unwrap();
        let mut moved = a;
        moved[1][3] = 3.0;
        nifti::write_volume(&p3, &large, &moved).unwrap();
        let pre = Preprocessor::new(PreprocessConfig {
            size: 28,
            margin: 1,
            crop: CropMode::Batch,
        })
        .unwrap();
        let progress = crate::progress::Progress::new(false);
        let b = pre.union_box(&[&p1, &p2], 2, &progress).unwrap();
        // (x, y, z) order: x from 7..14 ∪ 2..9, y 6..12 ∪ 8..16, z 5..10 ∪ 3..15, each ± 1
        assert_eq!((b.lo, b.hi), ([1, 5, 2], [15, 17, 16]));
        let pre = pre.with_batch_box(b);
        let one = pre
            .prepare(&nifti::read_volume(&p1).unwrap(), None)
            .unwrap();
        let two = pre
            .prepare(&nifti::read_volume(&p2).unwrap(), None)
            .unwrap();
        assert_eq!(one.transform, two.transform);
        let own = Preprocessor::new(PreprocessConfig {
            size: 28,
            margin: 1,
            crop: CropMode::Volume,
        })
        .unwrap();
        let alone = own
            .prepare(&nifti::read_volume(&p1).unwrap(), None)
            .unwrap();
        assert_ne!(alone.transform.crop, b);
        let e = Preprocessor::new(PreprocessConfig::default())
            .unwrap()
            .union_box(&[&p1, &p3], 2, &progress)
            .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("moved.nii") && msg.contains("small.nii") && msg.contains("--crop volume"),
            "{msg}"
        );
        assert_eq!(e.exit_code(), 2);
        // The volume on another grid is reported, not a bad file after it, with one worker or several: the
        // first bad input in order, as a serial loop would report it.
        let junk = p1.with_file_name("junk.nii");
        std::fs::write(&junk, b"not an image").unwrap();
        for workers in [1, 3] {
            let e = Preprocessor::new(PreprocessConfig::default())
                .unwrap()
                .union_box(&[&p1, &p3, &junk, &p2], workers, &progress)
                .unwrap_err();
            assert!(e.to_string().contains("moved.nii"), "{workers}: {e}");
        }
        let e = Preprocessor::new(PreprocessConfig::default())
            .unwrap()
            .union_box(&[&p1, &junk, &p3], 3, &progress)
            .unwrap_err();
        assert!(e.to_string().contains("junk.nii"), "{e}");
    }

    #[test]
    fn size_must_be_a_multiple_of_14() {
        assert!(Preprocessor::new(PreprocessConfig {
            size: 30,
            margin: 0,
            crop: CropMode::Volume,
        })
        .is_err());
        assert!(Preprocessor::new(PreprocessConfig {
            size: 28,
            margin: 0,
            crop: CropMode::Volume,
        })
        .is_ok());
    }

    #[test]
    fn all_zero_volume_is_refused_and_map_goes_back_on_the_native_grid() {
        let pre = Preprocessor::new(PreprocessConfig {
            size: 28,
            margin: 1,
            crop: CropMode::Volume,
        })
        .unwrap();
        let mut a = nifti::identity();
        a[0][0] = -1.5; // LAS, anisotropic
        a[2][2] = 2.0;
        let zero = vol(Array3::zeros((10, 12, 14)), a);
        let e = pre.prepare(&zero, None).unwrap_err();
        assert!(e.to_string().contains("brain mask is empty"), "{e}");
        let mut d = Array3::zeros((10, 12, 14));
        for k in 2..8 {
            for j in 3..10 {
                for i in 1..12 {
                    d[[k, j, i]] = (1 + i + j + k) as f32;
                }
            }
        }
        let v = vol(d.clone(), a);
        let p = pre.prepare(&v, None).unwrap();
        assert_eq!(p.cube.shape(), [28, 28, 28]);
        let back = p.transform.map_to_native(&p.cube, 0.0).unwrap();
        assert_eq!(back.shape(), d.shape());
        // Inside the brain the round trip reproduces the (piecewise linear) intensities closely.
        for ((k, j, i), &x) in d.indexed_iter() {
            if (3..7).contains(&k) && (4..9).contains(&j) && (2..11).contains(&i) {
                assert!((back[[k, j, i]] - x).abs() < 1e-3, "{i} {j} {k}");
            }
        }
        // A user mask on another grid is refused.
        let mut b = a;
        b[1][3] = 5.0;
        let other = vol(d.mapv(|x| (x > 0.0) as u8 as f32), b);
        let e = pre.prepare(&v, Some(&other)).unwrap_err();
        assert!(matches!(e, Error::Mismatch { .. }), "{e}");
        assert!(p
            .transform
            .map_to_native(&Array3::zeros((3, 3, 3)), 0.0)
            .is_err());
    }
}
