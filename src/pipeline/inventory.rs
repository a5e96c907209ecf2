//! The inventory of `mri-ad check`: what the input folders hold, checked as `score` would check it, with
//! every problem collected rather than the first one stopping the run.
//!
//! Input: a [`CheckConfig`]. Output: an [`Inventory`]: per folder what discovery found, per case its
//! image (shape, spacing, orientation, the affine's source), its brain (volume, background in the corners
//! of the field of view), its label map and brain mask, and with `--crop batch` the batch's world space
//! and how every volume fits it ([`crate::volume::space`]); and the problems (unreadable or malformed
//! files, all-zero volumes, volumes not skull-stripped without a mask, label maps or masks on another grid,
//! cases without a label map, duplicate case ids, empty folders, volumes not in one space).
//!
//! Traps: both folders are discovered before any volume is read, so a mistyped folder fails at once; every
//! case is reported to `on_event` as soon as it is checked (a long inventory shows its progress).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::discover::{self, Discovered, Manifest};
use crate::formats::nifti::{self, Volume};
use crate::messages::Reporter;
use crate::volume::space::{self, Membership, Plan, Survey};
use crate::volume::{CropMode, Preprocessor, GRID_TOLERANCE_MM};
use crate::{Error, Result};

/// What `check` is asked to check.
#[derive(Debug, Clone)]
pub struct CheckConfig {
    pub healthy: Option<PathBuf>,
    pub query: Option<PathBuf>,
    pub labels: Option<PathBuf>,
    pub masks: Option<PathBuf>,
    /// A layout of `data-manifest/` to use instead of detecting one.
    pub layout: Option<String>,
    /// The cube settings `score` will use (for the batch space).
    pub cube: crate::volume::CubeSettings,
    /// Notices (label maps that pair with no case, label maps that look like images).
    pub report: Reporter,
}

/// What was found for one case.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CaseReport {
    pub group: String,
    pub case: String,
    pub image: PathBuf,
    /// `(nx, ny, nz)`.
    pub shape: [usize; 3],
    pub spacing_mm: [f64; 3],
    pub orientation: String,
    pub affine_from: String,
    pub affine: nifti::Affine,
    pub nifti_version: u8,
    pub datatype: i16,
    pub brain_voxels: usize,
    pub brain_ml: f64,
    /// Fraction of voxels > 0 in the corners of the field of view (0 when skull-stripped).
    pub corner_fraction: f64,
    /// With `--crop batch`: how the volume fits the batch's space.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub space: Option<Membership>,
    pub label: Option<PathBuf>,
    pub lesion_voxels: Option<usize>,
    pub mask: Option<PathBuf>,
}

/// What discovery found in one folder.
#[derive(Debug, Clone)]
pub struct FolderReport {
    pub group: &'static str,
    pub dir: PathBuf,
    pub layout: String,
    pub cases: usize,
    /// NIfTI files that are no case under the layout.
    pub ignored: usize,
}

/// What `check` reports as it goes.
pub enum Event<'a> {
    Folder(&'a FolderReport),
    Case(&'a CaseReport),
}

/// The whole inventory.
#[derive(Debug)]
pub struct Inventory {
    pub folders: Vec<FolderReport>,
    pub cases: Vec<CaseReport>,
    /// With `--crop batch` and at least one readable volume.
    pub plan: Option<Plan>,
    pub problems: Vec<Error>,
}

/// One folder of volumes, discovered, with the label maps and brain masks paired to its cases.
struct Folder<'a> {
    group: &'static str,
    dir: &'a Path,
    found: Discovered,
    manifest: Manifest,
    labels: BTreeMap<String, PathBuf>,
    masks: BTreeMap<String, PathBuf>,
}

/// Checks everything `cfg` names (see the module doc); `Err` only for arguments that make no inventory
/// possible (no folder, an unknown layout, an invalid size).
pub fn inventory(cfg: &CheckConfig, on_event: &mut dyn FnMut(Event)) -> Result<Inventory> {
    if cfg.healthy.is_none() && cfg.query.is_none() {
        return Err(Error::bad_argument(
            "--healthy/--query",
            "give at least one folder of volumes",
        ));
    }
    if cfg.labels.is_some() && cfg.query.is_none() {
        return Err(Error::bad_argument(
            "--labels",
            "label maps belong to the query cases: give --query too",
        ));
    }
    if let Some(name) = &cfg.layout {
        discover::manifest(name)?;
    }
    // A folder that does not exist is a mistyped flag: said at once, before any volume is read.
    for (flag, dir) in [
        ("--healthy", &cfg.healthy),
        ("--query", &cfg.query),
        ("--labels", &cfg.labels),
        ("--masks", &cfg.masks),
    ] {
        if let Some(d) = dir.as_ref().filter(|d| !d.is_dir()) {
            return Err(Error::bad_argument(
                flag,
                format!("{}: no such folder", d.display()),
            ));
        }
    }
    let preprocessor = Preprocessor::new(cfg.cube.preprocess())?;
    let mut inv = Inventory {
        folders: Vec::new(),
        cases: Vec::new(),
        plan: None,
        problems: Vec::new(),
    };
    // Every folder first: a mistyped folder is found before any volume is read.
    let mut folders = Vec::new();
    for (group, dir) in [("healthy", &cfg.healthy), ("query", &cfg.query)] {
        let Some(dir) = dir else { continue };
        match discover_folder(cfg, group, dir, &mut inv.problems) {
            Ok(f) => folders.push(f),
            Err(e) => inv.problems.push(e),
        }
    }
    let mut surveys = Vec::new();
    let mut seen: BTreeMap<String, PathBuf> = BTreeMap::new();
    for folder in &folders {
        let report = FolderReport {
            group: folder.group,
            dir: folder.dir.to_path_buf(),
            layout: folder.found.layout.clone(),
            cases: folder.found.cases.len(),
            ignored: folder.found.ignored.len(),
        };
        on_event(Event::Folder(&report));
        inv.folders.push(report);
        for case in &folder.found.cases {
            if let Some(prev) = seen.insert(case.id.clone(), case.image.clone()) {
                inv.problems.push(Error::BadBatch {
                    path: case.image.clone(),
                    problem: format!(
                        "case id {:?} is also used by {}; case ids must be unique across --healthy and --query",
                        case.id,
                        prev.display()
                    ),
                });
            }
            if let Some((report, survey)) =
                check_case(cfg, &preprocessor, folder, case, &mut inv.problems)
            {
                on_event(Event::Case(&report));
                inv.cases.push(report);
                surveys.push(survey);
            }
        }
    }
    if cfg.cube.crop == CropMode::Batch && !surveys.is_empty() {
        let plan = space::plan(&surveys, cfg.cube.margin);
        inv.problems.extend(
            plan.refusals(&surveys)
                .map(|(s, why)| Error::bad_input(&s.path, space::refusal_message(why))),
        );
        for (r, m) in inv.cases.iter_mut().zip(&plan.members) {
            r.space = Some(m.clone());
        }
        inv.plan = Some(plan);
    }
    Ok(inv)
}

/// Discovers one folder and pairs its label maps (query) and brain masks; pairing problems go to
/// `problems`.
fn discover_folder<'a>(
    cfg: &CheckConfig,
    group: &'static str,
    dir: &'a Path,
    problems: &mut Vec<Error>,
) -> Result<Folder<'a>> {
    let mut found = discover::discover(dir, cfg.layout.as_deref())?;
    let manifest = discover::manifest(&found.layout)?;
    let generic = discover::manifest("generic")?;
    let cases = found.cases.clone();
    let mut labels = BTreeMap::new();
    if let (Some(ldir), "query") = (&cfg.labels, group) {
        match discover::pair(ldir, &cases, &manifest.labels, &generic.labels) {
            Ok((l, _)) => labels = l,
            Err(e) => problems.push(e),
        }
        discover::drop_paired_files(&mut found, &labels);
        let images: Vec<&Path> = cases.iter().map(|c| c.image.as_path()).collect();
        let ids: Vec<&str> = cases.iter().map(|c| c.id.as_str()).collect();
        if let Ok(unpaired) =
            discover::unpaired_files(ldir, &labels, &images, &manifest.labels, &ids)
        {
            if let Some(notice) = super::unpaired_notice(ldir, &unpaired) {
                cfg.report.say(notice);
            }
        }
    }
    let mut masks = BTreeMap::new();
    if let Some(mdir) = &cfg.masks {
        match discover::pair(mdir, &cases, &manifest.masks, &generic.masks) {
            Ok((m, _)) => masks = m,
            Err(e) => problems.push(e),
        }
        discover::drop_paired_files(&mut found, &masks);
    }
    Ok(Folder {
        group,
        dir,
        found,
        manifest,
        labels,
        masks,
    })
}

/// Reads one case's image, brain mask and label map; its report and survey, or `None` when the image
/// cannot be read or its brain is empty (the problems go to `problems`).
fn check_case(
    cfg: &CheckConfig,
    preprocessor: &Preprocessor,
    folder: &Folder,
    case: &discover::Case,
    problems: &mut Vec<Error>,
) -> Option<(CaseReport, Survey)> {
    let image = match nifti::read_volume(&case.image) {
        Ok(v) => v,
        Err(e) => {
            problems.push(as_input_problem(e));
            return None;
        }
    };
    let mask = folder.masks.get(&case.id).cloned();
    let mut mask_volume = None;
    if let Some(mdir) = &cfg.masks {
        match &mask {
            None => problems.push(Error::bad_input(
                &case.image,
                format!(
                    "no brain mask for case {:?} in {} (--masks)",
                    case.id,
                    mdir.display()
                ),
            )),
            Some(mp) => match read_on_grid(mp, &image, "brain mask") {
                Ok(m) => mask_volume = Some(m),
                Err(e) => problems.push(e),
            },
        }
    }
    // The brain as `score` sees it: the mask, else voxel > 0 (an empty one is a problem).
    let survey = match preprocessor.survey(&image, mask_volume.as_ref()) {
        Ok(s) => s,
        Err(e) => {
            problems.push(e);
            return None;
        }
    };
    if let Some(why) = space::not_skull_stripped(&survey) {
        problems.push(Error::bad_input(&case.image, why));
    }
    let label = folder.labels.get(&case.id).cloned();
    let lesion_voxels = match (&cfg.labels, folder.group, &label) {
        (Some(ldir), "query", None) => {
            problems.push(missing_label(folder, ldir, case));
            None
        }
        (Some(_), "query", Some(lp)) => match read_on_grid(lp, &image, "label map") {
            Ok(l) => {
                if let Some(o) = super::label_oddity(&l) {
                    cfg.report.say(super::label_oddity_notice(lp, &o));
                }
                Some(l.data.iter().filter(|&&v| v > 0.0).count())
            }
            Err(e) => {
                problems.push(e);
                None
            }
        },
        _ => None,
    };
    let (_, from) = image.header.best_affine();
    let report = CaseReport {
        group: folder.group.into(),
        case: case.id.clone(),
        image: case.image.clone(),
        shape: image.size_ijk(),
        spacing_mm: image.spacing(),
        orientation: image.orientation_code(),
        affine_from: from.into(),
        affine: image.affine,
        nifti_version: image.header.version,
        datatype: image.header.datatype,
        brain_voxels: survey.brain_voxels,
        brain_ml: survey.brain_ml,
        corner_fraction: survey.corner_fraction,
        space: None,
        label,
        lesion_voxels,
        mask,
    };
    Some((report, survey))
}

/// A label map or mask, read and checked against its image's grid.
fn read_on_grid(path: &Path, image: &Volume, what: &str) -> Result<Volume> {
    let v = nifti::read_volume(path).map_err(as_input_problem)?;
    if !image.same_grid(&v, GRID_TOLERANCE_MM) {
        return Err(nifti::grid_mismatch(
            path,
            what,
            (v.size_ijk(), &v.affine),
            (image.size_ijk(), &image.affine),
            &image.path,
        ));
    }
    Ok(v)
}

/// The problem of a query case without a label map: the names looked for, and the hint when `--labels`
/// names the query folder itself.
fn missing_label(folder: &Folder, ldir: &Path, case: &discover::Case) -> Error {
    let generic = discover::manifest("generic")
        .map(|m| m.labels)
        .unwrap_or_default();
    let mut looked: Vec<String> = Vec::new();
    for p in folder.manifest.labels.iter().chain(&generic) {
        let name = p.replace("{case}", &case.id);
        if !looked.contains(&name) {
            looked.push(name);
        }
    }
    Error::bad_input(
        &case.image,
        format!(
            "case {:?} has no label map in {} (looked for {}){}",
            case.id,
            ldir.display(),
            looked.join(", "),
            super::labels_folder_hint(ldir, folder.dir, folder.labels.is_empty())
        ),
    )
}

/// Turns any error about an input into a bad-input error (exit code 2) that names the file.
fn as_input_problem(e: Error) -> Error {
    match e {
        Error::Io { path, source } => {
            Error::bad_input(path, format!("cannot read the file: {source}"))
        }
        other => other,
    }
}

/// Refuses an output folder for `check --out` that holds other files (unless `force`); a folder holding
/// nothing but an earlier `check.json` is this command's own and is rewritten freely.
pub fn claim_check_folder(out: &Path, force: bool) -> Result<()> {
    if !out.exists() {
        return Ok(());
    }
    let only_check_json = std::fs::read_dir(out).is_ok_and(|entries| {
        entries
            .filter_map(|e| e.ok())
            .all(|e| e.file_name() == "check.json")
    });
    crate::run::outdir::prepare(out, force || only_check_json)
}

/// Writes the inventory as `<out>/check.json` (the cases and the batch space).
pub fn write_check_json(out: &Path, force: bool, inv: &Inventory) -> Result<()> {
    crate::run::outdir::prepare(out, force)?;
    let document = serde_json::json!({
        "cases": inv.cases,
        "batch_space": inv.plan.as_ref().and_then(|p| p.space.as_ref()),
    });
    crate::formats::atomic::write_json(&out.join("check.json"), &document)
}
