//! `mri-ad check`: lists what the input folders hold and checks it before a long run.
//!
//! For every case: the image file, its shape, voxel spacing, orientation code and the affine's source, the
//! brain's volume and the background in the corners of the field of view, the paired label map (lesion
//! voxels) and brain mask. With the default `--crop batch`, the batch's world space `score` would use (its
//! reference grid, the box in mm, the cube's voxel size) and, per volume, whether it lies on the common
//! grid, is resampled into it, or is refused and why ([`crate::volume::space`]). Problems (unreadable or
//! malformed files, 4D/2D/complex data, NaN/Inf voxels, all-zero volumes, volumes that are evidently not
//! skull-stripped and have no mask, label maps or masks on another grid, cases without a label when
//! --labels is given, duplicate case ids, empty folders, and volumes evidently not in one space) are all
//! listed; then the command exits with code 2 and the first problem as the error. With `--out`, the
//! inventory is written to `<out>/check.json` (only when there is no problem; never into a non-empty
//! folder without --force).

use std::path::{Path, PathBuf};

use crate::formats::nifti::{self, Volume};
use crate::pipeline::discover::{self, Discovered};
use crate::volume::space::{self, Fit, Membership, Survey};
use crate::volume::{PreprocessConfig, Preprocessor, GRID_TOLERANCE_MM};
use crate::{Error, Result};

/// Arguments of `mri-ad check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Folder of healthy (reference) volumes.
    #[arg(long, value_name = "DIR")]
    pub healthy: Option<PathBuf>,
    /// Folder of query volumes (the cases to score).
    #[arg(long, value_name = "DIR")]
    pub query: Option<PathBuf>,
    /// Folder of lesion label maps for the query cases (lesion = label > 0); every query case needs one.
    #[arg(long, value_name = "DIR")]
    pub labels: Option<PathBuf>,
    /// Folder of brain masks (mask > 0), one per case, checked (grid, not empty) and used instead of the
    /// `voxel > 0` rule, as `score --masks` uses them.
    #[arg(long, value_name = "DIR")]
    pub masks: Option<PathBuf>,
    /// Folder layout (data-manifest/): auto, brats-mets-2025, ixi, demo or generic. `score` always
    /// detects it (auto); naming one here checks what that layout would find.
    #[arg(long, default_value = "auto", value_name = "NAME")]
    pub layout: String,
    /// The crop mode `score` will use: batch (its default) places every volume in one world space, which is
    /// then planned and printed (volumes evidently not registered to one atlas are problems); volume crops
    /// each volume on its own.
    #[arg(long, default_value = "batch", value_parser = ["batch", "volume"])]
    pub crop: String,
    /// The cube edge `score` will use (for the cube's voxel size in the space report).
    #[arg(long, default_value_t = 224)]
    pub size: usize,
    /// The margin `score` will use around the brain boxes, in voxels of the reference grid.
    #[arg(long, default_value_t = 2)]
    pub margin: usize,
    /// Also write the inventory as <DIR>/check.json.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub common: super::CommonArgs,
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

/// Turns any error about an input into a bad-input error (exit code 2) that names the file.
fn as_input_problem(e: Error) -> Error {
    match e {
        Error::Io { path, source } => {
            Error::bad_input(path, format!("cannot read the file: {source}"))
        }
        other => other,
    }
}

fn grid_problem(file: &Path, v: &Volume, image: &Volume, what: &str) -> Error {
    nifti::grid_mismatch(
        file,
        what,
        (v.size_ijk(), &v.affine),
        (image.size_ijk(), &image.affine),
        &image.path,
    )
}

/// The batch's space for the surveyed volumes (printed unless `quiet`), each report's fit, and a problem per
/// refused volume.
fn batch_space(
    surveys: &[Survey],
    reports: &mut [CaseReport],
    args: &CheckArgs,
    quiet: bool,
) -> (Option<space::Plan>, Vec<Error>) {
    if args.crop != "batch" || surveys.is_empty() {
        return (None, Vec::new());
    }
    let plan = space::plan(surveys, args.margin);
    let problems = plan
        .refusals(surveys)
        .map(|(s, why)| Error::bad_input(&s.path, space::refusal_message(why)))
        .collect();
    if !quiet {
        print_space(&plan, reports, args.size);
    }
    for (r, m) in reports.iter_mut().zip(&plan.members) {
        r.space = Some(m.clone());
    }
    (Some(plan), problems)
}

fn print_space(plan: &space::Plan, reports: &[CaseReport], size: usize) {
    let reference = &reports[plan.reference];
    match &plan.space {
        Some(sp) => {
            let (lo, hi) = sp.box_mm();
            let cube = crate::volume::resize::CubeGrid::fit(&sp.crop, sp.frame.spacing(), size);
            let ranges: Vec<String> = ["R", "A", "S"]
                .iter()
                .enumerate()
                .map(|(a, axis)| format!("{:.1}…{:.1} mm ({axis})", lo[a], hi[a]))
                .collect();
            println!(
                "batch space (--crop batch): the canonical grid of {} ({}, {} mm); box {}; cube {size}³ of {:.3} mm",
                reference.case,
                fmt3(sp.frame.size, "×"),
                fmt3(sp.frame.spacing().map(|s| format!("{s:.2}")), "×"),
                ranges.join(", "),
                cube.voxel_mm
            );
        }
        None => println!("batch space (--crop batch): none, every volume is refused"),
    }
    for (r, m) in reports.iter().zip(&plan.members) {
        let fit = match &m.fit {
            Fit::Common => "common grid".to_string(),
            Fit::Resampled => "resampled".to_string(),
            Fit::Refused { why } => format!("refused: {why}"),
        };
        let worst_offset = m.centre_offset.iter().fold(0.0f64, |a, v| a.max(v.abs()));
        let (small, large) = m
            .size_ratio
            .iter()
            .fold((f64::INFINITY, 0.0f64), |(lo, hi), &v| {
                (lo.min(v), hi.max(v))
            });
        println!(
            "  {:<28} {fit} (rotation {:.1}°, centre offset {:.0} %, size {:.2}–{:.2} of the median)",
            r.case,
            m.rotation_deg,
            100.0 * worst_offset,
            small,
            large
        );
    }
}

fn fmt3<T: std::fmt::Display>(v: [T; 3], sep: &str) -> String {
    format!("{}{sep}{}{sep}{}", v[0], v[1], v[2])
}

/// Runs `mri-ad check`.
pub fn run(args: CheckArgs) -> Result<()> {
    if args.healthy.is_none() && args.query.is_none() {
        return Err(Error::bad_argument(
            "--healthy/--query",
            "give at least one folder of volumes",
        ));
    }
    if args.labels.is_some() && args.query.is_none() {
        return Err(Error::bad_argument(
            "--labels",
            "label maps belong to the query cases: give --query too",
        ));
    }
    let layout = (args.layout != "auto").then_some(args.layout.as_str());
    if let Some(name) = layout {
        discover::manifest(name)?;
    }
    if let Some(out) = &args.out {
        if out.exists() {
            // A folder holding nothing but an earlier check.json is this command's own: rewritten freely.
            let only_check_json = std::fs::read_dir(out).is_ok_and(|entries| {
                entries
                    .filter_map(|e| e.ok())
                    .all(|e| e.file_name() == "check.json")
            });
            crate::run::outdir::prepare(out, args.common.force || only_check_json)?;
        }
    }
    let quiet = args.common.quiet;
    let mut problems: Vec<Error> = Vec::new();
    let mut reports: Vec<CaseReport> = Vec::new();
    let mut surveys: Vec<Survey> = Vec::new();
    let preprocessor = Preprocessor::new(PreprocessConfig {
        size: args.size,
        margin: args.margin,
        ..Default::default()
    })?;
    let mut seen: std::collections::BTreeMap<String, PathBuf> = Default::default();
    let generic = discover::manifest("generic")?;
    for (group, dir) in [("healthy", &args.healthy), ("query", &args.query)] {
        let Some(dir) = dir else { continue };
        let mut found: Discovered = match discover::discover(dir, layout) {
            Ok(d) => d,
            Err(e) => {
                problems.push(e);
                continue;
            }
        };
        let manifest = discover::manifest(&found.layout)?;
        let cases = found.cases.clone();
        let mut labels = Default::default();
        if let (Some(ldir), "query") = (&args.labels, group) {
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
                if let Some(notice) = crate::pipeline::unpaired_notice(ldir, &unpaired) {
                    if !quiet {
                        eprintln!("{notice}");
                    }
                }
            }
        }
        let mut masks = Default::default();
        if let Some(mdir) = &args.masks {
            match discover::pair(mdir, &cases, &manifest.masks, &generic.masks) {
                Ok((m, _)) => masks = m,
                Err(e) => problems.push(e),
            }
            discover::drop_paired_files(&mut found, &masks);
        }
        if !quiet {
            println!(
                "{group}: {} ({} layout): {} cases{}",
                dir.display(),
                found.layout,
                found.cases.len(),
                if found.ignored.is_empty() {
                    String::new()
                } else {
                    format!(", {} other NIfTI files ignored", found.ignored.len())
                }
            );
        }
        for case in &found.cases {
            if let Some(prev) = seen.insert(case.id.clone(), case.image.clone()) {
                problems.push(Error::BadBatch {
                    path: case.image.clone(),
                    problem: format!(
                        "case id {:?} is also used by {}; case ids must be unique across --healthy and --query",
                        case.id,
                        prev.display()
                    ),
                });
            }
            let image = match nifti::read_volume(&case.image) {
                Ok(v) => v,
                Err(e) => {
                    problems.push(as_input_problem(e));
                    continue;
                }
            };
            let mask = masks.get(&case.id).cloned();
            let mut mask_volume = None;
            if let Some(mdir) = &args.masks {
                match &mask {
                    None => problems.push(Error::bad_input(
                        &case.image,
                        format!(
                            "no brain mask for case {:?} in {} (--masks)",
                            case.id,
                            mdir.display()
                        ),
                    )),
                    Some(mp) => match nifti::read_volume(mp) {
                        Err(e) => problems.push(as_input_problem(e)),
                        Ok(m) if !image.same_grid(&m, GRID_TOLERANCE_MM) => {
                            problems.push(grid_problem(mp, &m, &image, "brain mask"))
                        }
                        Ok(m) => mask_volume = Some(m),
                    },
                }
            }
            // The brain as `score` sees it: the mask, else voxel > 0 (an empty one is a problem).
            let survey = match preprocessor.survey(&image, mask_volume.as_ref()) {
                Ok(s) => s,
                Err(e) => {
                    problems.push(e);
                    continue;
                }
            };
            if let Some(why) = space::not_skull_stripped(&survey) {
                problems.push(Error::bad_input(&case.image, why));
            }
            let label = labels.get(&case.id).cloned();
            let mut lesion_voxels = None;
            if let (Some(ldir), "query") = (&args.labels, group) {
                match &label {
                    None => {
                        let mut looked: Vec<String> = Vec::new();
                        for p in manifest.labels.iter().chain(&generic.labels) {
                            let name = p.replace("{case}", &case.id);
                            if !looked.contains(&name) {
                                looked.push(name);
                            }
                        }
                        problems.push(Error::bad_input(
                            &case.image,
                            format!(
                                "case {:?} has no label map in {} (looked for {}){}",
                                case.id,
                                ldir.display(),
                                looked.join(", "),
                                crate::pipeline::labels_folder_hint(ldir, dir, labels.is_empty())
                            ),
                        ))
                    }
                    Some(lp) => match nifti::read_volume(lp) {
                        Err(e) => problems.push(as_input_problem(e)),
                        Ok(l) if !image.same_grid(&l, GRID_TOLERANCE_MM) => {
                            problems.push(grid_problem(lp, &l, &image, "label map"))
                        }
                        Ok(l) => {
                            if let Some(o) = crate::pipeline::label_oddity(&l).filter(|_| !quiet) {
                                eprintln!("{}", crate::pipeline::label_oddity_notice(lp, &o));
                            }
                            lesion_voxels = Some(l.data.iter().filter(|&&v| v > 0.0).count())
                        }
                    },
                }
            }
            let (_, from) = image.header.best_affine();
            let r = CaseReport {
                group: group.into(),
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
            if !quiet {
                println!(
                    "  {:<8} {:<28} {:>13}  {:>17} mm  {} ({}, NIfTI-{})  brain {} voxels, {:.0} ml, \
                     corners {:.0} % > 0{}",
                    r.group,
                    r.case,
                    fmt3(r.shape, "×"),
                    fmt3(r.spacing_mm.map(|s| format!("{s:.2}")), "×"),
                    r.orientation,
                    r.affine_from,
                    r.nifti_version,
                    r.brain_voxels,
                    r.brain_ml,
                    100.0 * r.corner_fraction,
                    match r.lesion_voxels {
                        Some(n) => format!(", lesion {n} voxels"),
                        None => String::new(),
                    }
                );
            }
            reports.push(r);
            surveys.push(survey);
        }
    }
    let (plan, space_problems) = batch_space(&surveys, &mut reports, &args, quiet);
    problems.extend(space_problems);
    if (1..3).contains(&reports.len()) && !quiet {
        println!(
            "note: {} case(s) here; `score` needs at least 3 in its batch (--healthy and --query together)",
            reports.len()
        );
    }
    if !problems.is_empty() {
        eprintln!("{} problem(s):", problems.len());
        for p in &problems {
            eprintln!("  {p}");
        }
        let n = problems.len();
        let first = problems.swap_remove(0);
        return Err(if n == 1 {
            first
        } else {
            Error::BadBatch {
                path: args
                    .query
                    .clone()
                    .or_else(|| args.healthy.clone())
                    .unwrap_or_else(|| PathBuf::from("input")),
                problem: format!("{n} problems, listed above; the first: {first}"),
            }
        });
    }
    if !quiet {
        println!("no problems found ({} cases)", reports.len());
    }
    if let Some(out) = &args.out {
        crate::run::outdir::prepare(out, args.common.force)?;
        let inventory = serde_json::json!({
            "cases": reports,
            "batch_space": plan.as_ref().and_then(|p| p.space.as_ref()),
        });
        crate::formats::atomic::write_json(&out.join("check.json"), &inventory)?;
    }
    Ok(())
}
