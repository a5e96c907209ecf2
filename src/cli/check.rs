//! `mri-ad check`: lists what the input folders hold and checks it before a long run.
//!
//! For every case: the image file, its shape, voxel spacing, orientation code and the affine's source, the
//! paired label map (lesion voxels) and brain mask. Problems (unreadable or malformed files, 4D/2D/complex
//! data, NaN/Inf voxels, all-zero volumes, label maps or masks on another grid, cases without a label when
//! --labels is given, duplicate case ids, empty folders, and with the default `--crop batch` volumes that are
//! not all on one voxel grid) are all listed; then the command exits with code 2
//! and the first problem as the error. With `--out`, the inventory is written to `<out>/check.json` (only
//! when there is no problem; never into a non-empty folder without --force).

use std::path::{Path, PathBuf};

use crate::io::discover::{self, Discovered};
use crate::io::nifti::{self, Volume};
use crate::volume::GRID_TOLERANCE_MM;
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
    /// Folder of brain masks (mask > 0), one per case, checked (grid, not empty) and counted instead of
    /// the `voxel > 0` rule. For other tools: `score` takes no brain masks, its brain is `voxel > 0`
    /// (skull-stripped volumes with a zero background).
    #[arg(long, value_name = "DIR")]
    pub masks: Option<PathBuf>,
    /// Folder layout (data-manifest/): auto, brats-mets-2025, ixi, demo or generic. `score` always
    /// detects it (auto); naming one here checks what that layout would find.
    #[arg(long, default_value = "auto", value_name = "NAME")]
    pub layout: String,
    /// The crop mode `score` will use: batch (its default) needs every volume on one voxel grid (size and
    /// affine), which is then checked; volume crops each volume on its own, on any grid.
    #[arg(long, default_value = "batch", value_parser = ["batch", "volume"])]
    pub crop: String,
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

/// Problems of the batch as a whole: for `--crop batch`, volumes that are not on the first volume's grid.
fn batch_problems(reports: &[CaseReport], crop: &str) -> Vec<Error> {
    let mut problems = Vec::new();
    if crop == "batch" {
        if let Some(first) = reports.first() {
            for r in &reports[1..] {
                if !nifti::same_grid(
                    r.shape,
                    &r.affine,
                    first.shape,
                    &first.affine,
                    GRID_TOLERANCE_MM,
                ) {
                    problems.push(Error::Mismatch {
                        path: r.image.clone(),
                        what: "the voxel grid (size, affine; --crop batch, score's default, needs one grid for \
                               every volume, --crop volume does not)"
                            .into(),
                        expected: format!("size {:?}, affine {:?}", first.shape, first.affine),
                        actual: format!("size {:?}, affine {:?}", r.shape, r.affine),
                        reference: first.image.display().to_string(),
                    });
                }
            }
        }
    }
    problems
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
            crate::io::outdir::prepare(out, args.common.force || only_check_json)?;
        }
    }
    let quiet = args.common.quiet;
    let mut problems: Vec<Error> = Vec::new();
    let mut reports: Vec<CaseReport> = Vec::new();
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
            let mut brain = image.data.iter().filter(|&&v| v > 0.0).count();
            let mask = masks.get(&case.id).cloned();
            if let Some(mdir) = &args.masks {
                match &mask {
                    None => problems.push(Error::bad_input(
                        &case.image,
                        format!("no brain mask for case {:?} in {}", case.id, mdir.display()),
                    )),
                    Some(mp) => match nifti::read_volume(mp) {
                        Err(e) => problems.push(as_input_problem(e)),
                        Ok(m) if !image.same_grid(&m, GRID_TOLERANCE_MM) => {
                            problems.push(grid_problem(mp, &m, &image, "brain mask"))
                        }
                        Ok(m) => brain = m.data.iter().filter(|&&v| v > 0.0).count(),
                    },
                }
            }
            if brain == 0 {
                problems.push(Error::bad_input(
                    mask.as_ref().unwrap_or(&case.image),
                    "the brain mask is empty (no voxel > 0): an all-zero volume, or a background that is not \
                     zero (give brain masks with --masks)",
                ));
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
                brain_voxels: brain,
                label,
                lesion_voxels,
                mask,
            };
            if !quiet {
                println!(
                    "  {:<8} {:<28} {:>13}  {:>17} mm  {} ({}, NIfTI-{})  brain {} voxels{}",
                    r.group,
                    r.case,
                    fmt3(r.shape, "×"),
                    fmt3(r.spacing_mm.map(|s| format!("{s:.2}")), "×"),
                    r.orientation,
                    r.affine_from,
                    r.nifti_version,
                    r.brain_voxels,
                    match r.lesion_voxels {
                        Some(n) => format!(", lesion {n} voxels"),
                        None => String::new(),
                    }
                );
            }
            reports.push(r);
        }
    }
    problems.extend(batch_problems(&reports, &args.crop));
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
        crate::io::outdir::prepare(out, args.common.force)?;
        crate::io::atomic::write_json(&out.join("check.json"), &reports)?;
    }
    Ok(())
}
