//! Where `extract` gets its volumes: the [`CubeSource`] trait, [`NiftiCubes`] and [`NpyCubes`].
//!
//! A source lists cases cheaply ([`CubeSource::cases`]: id and input file, no voxels read, so cached cases
//! cost only a hash of the input file) and loads one case on demand ([`CubeSource::load`]) as the canonical
//! cube the tokenizer takes: f32 `[S, S, S]` indexed `[z][y][x]`, values in `[0, 1]`, background 0, plus the
//! brain mask of the same shape. [`CubeSource::preprocessing`] describes everything besides the input file
//! that shapes the cube; it is part of the token-file cache key, so a source whose result depends on the
//! other volumes of the batch (Nyúl standardisation learns its landmarks from the batch) must put those
//! batch-level parameters in it.
//!
//! Two sources:
//! * [`NiftiCubes`]: a folder of NIfTI volumes (any layout of `data-manifest/`), each read, oriented to
//!   RAS+, masked (`voxel > 0`, or its brain mask with `--masks`), cropped, resampled into the batch's
//!   world space ([`crate::volume::space`]) at S³ and Nyúl-standardised ([`crate::volume`]). The Nyúl
//!   landmarks are learned from the volumes of the folder (or loaded with `--nyul FILE`) and, with the
//!   batch space, are part of [`CubeSource::preprocessing`], so they are in every token file's cache key:
//!   changing the batch that trained them recomputes every case. A case's brain mask is keyed by its
//!   SHA-256 ([`CaseInput::mask_sha256`]).
//! * [`NpyCubes`]: `<case>.npy` files, each an already preprocessed cube, float32 `[S, S, S]` in
//!   `(z, y, x)` order (C or Fortran order), values in `[0, 1]`, background exactly 0; the mask is
//!   `voxel > 0`. For cubes made by another pipeline.
//!
//! Traps: the file is read, never modified; float64 or integer arrays are refused rather than cast, so a
//! pipeline mistake is visible; the cube edge must equal `--size`.

use std::fs::File;
use std::path::{Path, PathBuf};

use ndarray::Array3;
use ndarray_npy::ReadNpyExt;

use crate::pipeline::discover;
use crate::progress::Progress;
use crate::volume::nyul::NyulModel;
use crate::volume::{PreprocessConfig, Preprocessor};
use crate::{Error, Result};

/// One case of a source: its id (file stem) and the input file it is made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseInput {
    pub id: String,
    pub path: PathBuf,
    /// The file's SHA-256 when the caller has it already (`score` hashes its inputs for the run's
    /// request); `None`: the extraction computes it for the token cache key.
    pub sha256: Option<String>,
    /// The case's brain mask (`--masks`), which replaces the `voxel > 0` rule.
    pub mask: Option<PathBuf>,
    /// The mask's SHA-256 when the caller has it already (as `sha256`).
    pub mask_sha256: Option<String>,
}

impl CaseInput {
    /// A case without a mask and without known digests.
    pub fn new(id: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        CaseInput {
            id: id.into(),
            path: path.into(),
            sha256: None,
            mask: None,
            mask_sha256: None,
        }
    }

    /// The image and mask files.
    pub fn files(&self) -> crate::volume::VolumeFiles<'_> {
        crate::volume::VolumeFiles {
            image: &self.path,
            mask: self.mask.as_deref(),
        }
    }
}

/// A canonical cube and its brain mask.
#[derive(Debug, Clone)]
pub struct Cube {
    /// f32 `[S, S, S]`, `[z][y][x]`, values in `[0, 1]`, background 0.
    pub voxels: Array3<f32>,
    /// `[S, S, S]`, true inside the brain.
    pub mask: Array3<bool>,
}

/// A provider of canonical cubes (see the module doc).
pub trait CubeSource: Sync {
    /// The cases, sorted by id.
    fn cases(&self) -> Result<Vec<CaseInput>>;
    /// Loads one case as a cube of edge `size`; errors name the input file.
    fn load(&self, case: &CaseInput, size: usize) -> Result<Cube>;
    /// Everything besides the input file that determines the cube (part of the cache key).
    fn preprocessing(&self) -> serde_json::Value;
}

/// The pre-made source: `<case>.npy` cubes, already preprocessed.
#[derive(Debug, Clone)]
pub struct NpyCubes {
    pub dir: PathBuf,
}

impl NpyCubes {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        NpyCubes { dir: dir.into() }
    }
}

impl CubeSource for NpyCubes {
    fn cases(&self) -> Result<Vec<CaseInput>> {
        let dir = &self.dir;
        if !dir.is_dir() {
            return Err(Error::BadBatch {
                path: dir.clone(),
                problem: "not a folder (--input expects a folder of <case>.npy cubes)".into(),
            });
        }
        let mut cases = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
            let entry = entry.map_err(|e| Error::io(dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            if let Some(id) = crate::formats::case_id(&name, &[".npy"]) {
                cases.push(CaseInput::new(id, entry.path()));
            }
        }
        cases.sort_by(|a, b| a.id.cmp(&b.id));
        if cases.is_empty() {
            return Err(Error::BadBatch {
                path: dir.clone(),
                problem:
                    "no <case>.npy files in this folder (preprocessed float32 cubes [S, S, S], \
                          z, y, x order, values in [0, 1], background 0)"
                        .into(),
            });
        }
        Ok(cases)
    }

    fn load(&self, case: &CaseInput, size: usize) -> Result<Cube> {
        read_npy_cube(&case.path, size)
    }

    fn preprocessing(&self) -> serde_json::Value {
        serde_json::json!({
            "source": "npy",
            "description": "preprocessed cube read as is: float32 [S,S,S] (z,y,x), values in [0,1], background 0; mask = voxel > 0"
        })
    }
}

/// NIfTI volumes, preprocessed on the fly (see the module doc).
/// The volumes of `dir` (with their brain masks in `masks`, paired by the layout's mask patterns).
fn folder_cases(dir: &Path, masks: Option<&Path>) -> Result<Vec<CaseInput>> {
    let found = discover::discover(dir, None)?;
    let mask_files = match masks {
        Some(mdir) => discover::pair_masks(mdir, &found)?,
        None => Default::default(),
    };
    Ok(found
        .cases
        .iter()
        .map(|c| CaseInput {
            mask: mask_files.get(&c.id).cloned(),
            ..CaseInput::new(c.id.clone(), c.image.clone())
        })
        .collect())
}

#[derive(Debug, Clone)]
pub struct NiftiCubes {
    cases: Vec<CaseInput>,
    preprocessor: Preprocessor,
    nyul: NyulModel,
}

impl NiftiCubes {
    /// Discovers the volumes of `dir` (with their brain masks in `masks`, paired by the layout's mask
    /// patterns), reads every volume once to settle the batch's geometry ([`Preprocessor::for_batch`]: the
    /// skull-stripping check and, with `--crop batch`, the world space) and learns the Nyúl landmarks from
    /// all of them, unless `nyul` is given. Learning reads and prepares every volume once more (the
    /// tokenizer prepares each again on load: holding every cube in memory would cost `S³·4` bytes per
    /// case).
    pub fn new(
        dir: &Path,
        masks: Option<&Path>,
        config: PreprocessConfig,
        nyul: Option<NyulModel>,
        progress: &Progress,
    ) -> Result<Self> {
        let cases = folder_cases(dir, masks)?;
        let files: Vec<_> = cases.iter().map(CaseInput::files).collect();
        // One volume at a time: `extract` has no memory budget to size more workers by.
        let (preprocessor, _) = Preprocessor::for_batch(config, &files, 1, progress)?;
        let nyul = match nyul {
            Some(model) => model,
            None => NyulModel::fit(&preprocessor.nyul_landmarks(&files, 1, progress)?)?,
        };
        Ok(NiftiCubes {
            cases,
            preprocessor,
            nyul,
        })
    }

    /// The volumes of `dir` prepared in a given world space (`None`: `--crop volume`) with given Nyúl
    /// landmarks (a healthy bank's): nothing is planned or learned from the folder. Every volume is read
    /// once first; one that is evidently not skull-stripped (without a mask), or that cannot be placed in
    /// the space, is refused naming its file. Placement only: whether a brain lies inside the space's box
    /// is not checked (the bank's box is the union of its volumes' brains plus the margin).
    pub fn in_space(
        dir: &Path,
        masks: Option<&Path>,
        config: PreprocessConfig,
        space: Option<crate::volume::space::BatchSpace>,
        nyul: NyulModel,
        progress: &Progress,
    ) -> Result<Self> {
        let cases = folder_cases(dir, masks)?;
        let files: Vec<_> = cases.iter().map(CaseInput::files).collect();
        let mut preprocessor = Preprocessor::new(config)?;
        let surveys = preprocessor.survey_all(&files, 1, progress)?;
        for s in &surveys {
            if let Some(why) = crate::volume::space::not_skull_stripped(s) {
                return Err(Error::bad_input(&s.path, why));
            }
            if let Some(space) = &space {
                if space.placement(&s.grid).is_none() {
                    return Err(Error::bad_input(
                        &s.path,
                        "cannot be placed in the bank's world space (its affine is singular)",
                    ));
                }
            }
        }
        if let Some(space) = space {
            preprocessor = preprocessor.with_space(space);
        }
        Ok(NiftiCubes {
            cases,
            preprocessor,
            nyul,
        })
    }

    /// A source over given cases with a given preprocessor (with its batch space, if any) and Nyúl
    /// model (the pipeline learns both on the batch).
    pub fn from_cases(cases: Vec<CaseInput>, preprocessor: Preprocessor, nyul: NyulModel) -> Self {
        NiftiCubes {
            cases,
            preprocessor,
            nyul,
        }
    }

    /// The Nyúl model in use (learned or loaded).
    pub fn nyul(&self) -> &NyulModel {
        &self.nyul
    }
}

impl CubeSource for NiftiCubes {
    fn cases(&self) -> Result<Vec<CaseInput>> {
        Ok(self.cases.clone())
    }

    fn load(&self, case: &CaseInput, size: usize) -> Result<Cube> {
        if size != self.preprocessor.config.size {
            return Err(Error::bad_argument(
                "--size",
                format!(
                    "the cubes are prepared at {}, the tokenizer asks for {size}",
                    self.preprocessor.config.size
                ),
            ));
        }
        let (volume, mask) = case.files().read()?;
        let prepared = self.preprocessor.prepare(&volume, mask.as_ref())?;
        let voxels = self.preprocessor.backbone_input(&prepared, &self.nyul)?;
        Ok(Cube {
            voxels,
            mask: prepared.mask,
        })
    }

    fn preprocessing(&self) -> serde_json::Value {
        serde_json::json!({
            "source": "nifti",
            "size": self.preprocessor.config.size,
            "margin": self.preprocessor.config.margin,
            "crop": self.preprocessor.config.crop,
            "batch_box": self.preprocessor.space.as_ref().map(|s| s.crop),
            "space": self.preprocessor.space,
            "steps": "RAS+ orientation, brain mask voxel > 0 (or the case's mask, voxels outside it 0), crop to \
                      the brain box + margin (with crop = batch: the union of the brain boxes in world space, in \
                      the frame of the batch's reference grid; volumes on other grids resampled at the same world \
                      points), isotropic trilinear resize to S^3 with padding, Nyul standardisation, clip \
                      [0, 100] / 100 with background 0",
            "nyul": self.nyul,
        })
    }
}

/// A folder for `extract`: the volumes (NIfTI or `.npy` cubes), their brain masks, and the Nyúl
/// landmarks to use or to save.
#[derive(Debug, Clone)]
pub struct ExtractFolder {
    pub input: PathBuf,
    pub masks: Option<PathBuf>,
    /// Landmarks to use instead of learning them from the folder.
    pub nyul: Option<PathBuf>,
    /// Where to write the landmarks in use.
    pub save_nyul: Option<PathBuf>,
    pub preprocess: PreprocessConfig,
    /// A healthy bank's world space (with `--crop batch`) and Nyúl landmarks, used instead of planning
    /// and learning them from the folder (`extract --bank`).
    pub fixed: Option<(Option<crate::volume::space::BatchSpace>, NyulModel)>,
}

/// `extract` on a folder: the `.npy` cubes as they are, or the NIfTI volumes preprocessed (masks, Nyúl
/// landmarks learned or loaded, saved when asked), then tokenized into `cfg.out`.
pub fn extract_folder(
    cfg: &crate::extract::ExtractConfig,
    folder: &ExtractFolder,
) -> Result<crate::extract::ExtractSummary> {
    if holds_npy_cubes(&folder.input) {
        let input = folder.input.display();
        if folder.masks.is_some() {
            return Err(Error::bad_argument(
                "--masks",
                format!("{input} holds preprocessed .npy cubes, whose brain is voxel > 0: masks apply to NIfTI volumes"),
            ));
        }
        if folder.nyul.is_some() || folder.save_nyul.is_some() {
            return Err(Error::bad_argument(
                "--nyul",
                format!("{input} holds preprocessed .npy cubes, which are not standardised again"),
            ));
        }
        return crate::extract::run(cfg, &NpyCubes::new(&folder.input));
    }
    let progress = Progress::new(cfg.progress);
    if let Some((space, nyul)) = &folder.fixed {
        let source = NiftiCubes::in_space(
            &folder.input,
            folder.masks.as_deref(),
            folder.preprocess.clone(),
            space.clone(),
            nyul.clone(),
            &progress,
        )?;
        return crate::extract::run(cfg, &source);
    }
    let nyul = folder.nyul.as_deref().map(NyulModel::load).transpose()?;
    let source = NiftiCubes::new(
        &folder.input,
        folder.masks.as_deref(),
        folder.preprocess.clone(),
        nyul,
        &progress,
    )?;
    if let Some(path) = &folder.save_nyul {
        source.nyul().save(path)?;
    }
    crate::extract::run(cfg, &source)
}

/// True when `dir` holds `<case>.npy` cubes rather than NIfTI volumes.
pub fn holds_npy_cubes(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries.flatten().any(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                !name.starts_with('.') && name.ends_with(".npy")
            })
        })
        .unwrap_or(false)
}

/// Reads and checks one pre-made cube file.
pub fn read_npy_cube(path: &Path, size: usize) -> Result<Cube> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let voxels = Array3::<f32>::read_npy(file).map_err(|e| {
        Error::bad_input(
            path,
            format!("not a float32 3-D .npy array ({e}); expected a preprocessed cube float32 [S, S, S] in (z, y, x) order"),
        )
    })?;
    let voxels = if voxels.is_standard_layout() {
        voxels
    } else {
        voxels.as_standard_layout().into_owned()
    };
    let (a, b, c) = voxels.dim();
    if (a, b, c) != (size, size, size) {
        return Err(Error::bad_input(
            path,
            format!("the cube has shape [{a}, {b}, {c}], expected [{size}, {size}, {size}] (--size {size})"),
        ));
    }
    if let Some((idx, v)) = voxels
        .indexed_iter()
        .find(|(_, v)| !v.is_finite() || **v < 0.0 || **v > 1.0)
    {
        return Err(Error::bad_input(
            path,
            format!(
                "voxel (z, y, x) = {idx:?} is {v}; values must lie in [0, 1] with background 0"
            ),
        ));
    }
    let mask = voxels.mapv(|v| v > 0.0);
    Ok(Cube { voxels, mask })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray_npy::write_npy;

    #[test]
    fn lists_sorted_and_checks_content() {
        let dir = tempfile::tempdir().unwrap();
        let ok = Array3::from_shape_fn((14, 14, 14), |(z, _, _)| z as f32 / 14.0);
        write_npy(dir.path().join("b.npy"), &ok).unwrap();
        write_npy(dir.path().join("a.npy"), &ok).unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"x").unwrap();
        let src = NpyCubes::new(dir.path());
        let cases = src.cases().unwrap();
        assert_eq!(
            cases.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        let cube = src.load(&cases[0], 14).unwrap();
        assert!(!cube.mask[[0, 3, 3]] && cube.mask[[1, 3, 3]]);
        let e = src.load(&cases[0], 28).unwrap_err().to_string();
        assert!(
            e.contains("a.npy") && e.contains("[14, 14, 14]") && e.contains("[28, 28, 28]"),
            "{e}"
        );
        let mut bad = ok.clone();
        bad[[2, 3, 4]] = 1.5;
        write_npy(dir.path().join("c.npy"), &bad).unwrap();
        let e = read_npy_cube(&dir.path().join("c.npy"), 14).unwrap_err();
        assert!(
            e.to_string().contains("(2, 3, 4)") && e.to_string().contains("1.5"),
            "{e}"
        );
        write_npy(dir.path().join("d.npy"), &ok.mapv(|v| v as f64)).unwrap();
        let e = read_npy_cube(&dir.path().join("d.npy"), 14).unwrap_err();
        assert!(
            e.to_string().contains("float32") && e.exit_code() == 2,
            "{e}"
        );
        assert!(NpyCubes::new(dir.path().join("none")).cases().is_err());
    }
}
