//! `mri-ad check`: lists what the input folders hold and checks it before a long run
//! ([`crate::pipeline::inventory`]), printing one line per case, the batch's world space and every problem;
//! when there is any, exits 2 with the first as its error line. With `--out`, the inventory is written to
//! `<out>/check.json` (only when there is no problem; never into a non-empty folder without --force).

use std::path::PathBuf;

use crate::pipeline::inventory::{self, CaseReport, CheckConfig, Event, FolderReport};
use crate::volume::space::{self, Fit};
use crate::{Error, Result};

/// Arguments of `mri-ad check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub inputs: super::InputArgs,
    /// Folder layout (data-manifest/): auto, brats-mets-2025, ixi, demo or generic. `score` always
    /// detects it (auto); naming one here checks what that layout would find.
    #[arg(long, default_value = "auto", value_name = "NAME")]
    pub layout: String,
    /// The cube settings `score` will use (for the batch's space and the cube's voxel size).
    #[command(flatten)]
    pub cube: super::settings::Given<crate::volume::CubeSettings>,
    /// Also write the inventory as <DIR>/check.json.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub common: super::CommonArgs,
}

impl CheckArgs {
    /// The library configuration.
    pub fn config(&self) -> Result<CheckConfig> {
        Ok(CheckConfig {
            healthy: self.inputs.healthy.clone(),
            query: self.inputs.query.clone(),
            labels: self.inputs.labels.clone(),
            masks: self.inputs.masks.clone(),
            layout: (self.layout != "auto").then(|| self.layout.clone()),
            cube: self.cube.settings()?,
            report: self.common.reporter(),
        })
    }
}

fn fmt3<T: std::fmt::Display>(v: [T; 3], sep: &str) -> String {
    format!("{}{sep}{}{sep}{}", v[0], v[1], v[2])
}

fn print_folder(f: &FolderReport) {
    println!(
        "{}: {} ({} layout): {} cases{}",
        f.group,
        f.dir.display(),
        f.layout,
        f.cases,
        if f.ignored == 0 {
            String::new()
        } else {
            format!(", {} other NIfTI files ignored", f.ignored)
        }
    );
}

fn print_case(r: &CaseReport) {
    println!(
        "  {:<8} {:<28} {:>13}  {:>17} mm  {} ({}, NIfTI-{})  brain {} voxels, {:.0} ml, corners {:.0} % > 0{}",
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

/// Runs `mri-ad check`.
pub fn run(args: CheckArgs) -> Result<()> {
    let cfg = args.config()?;
    if let Some(out) = &args.out {
        inventory::claim_check_folder(out, args.common.force)?;
    }
    let quiet = args.common.quiet;
    let mut inv = inventory::inventory(&cfg, &mut |event| match event {
        _ if quiet => {}
        Event::Folder(f) => print_folder(f),
        Event::Case(r) => print_case(r),
    })?;
    if let (Some(plan), false) = (&inv.plan, quiet) {
        print_space(plan, &inv.cases, cfg.cube.size);
    }
    if (1..3).contains(&inv.cases.len()) && !quiet {
        println!(
            "note: {} case(s) here; `score` needs at least 3 in its batch (--healthy and --query together)",
            inv.cases.len()
        );
    }
    let n = inv.problems.len();
    if n > 0 {
        // One problem is the error itself; several are listed, and the error names the first.
        let first = inv.problems.swap_remove(0);
        if n == 1 {
            return Err(first);
        }
        eprintln!("{n} problems:");
        eprintln!("  {first}");
        for p in &inv.problems {
            eprintln!("  {p}");
        }
        return Err(Error::BadBatch {
            path: args
                .inputs
                .query
                .clone()
                .or_else(|| args.inputs.healthy.clone())
                .unwrap_or_else(|| PathBuf::from("input")),
            problem: format!("{n} problems, listed above; the first: {first}"),
        });
    }
    if !quiet {
        println!("no problems found ({} cases)", inv.cases.len());
    }
    if let Some(out) = &args.out {
        inventory::write_check_json(out, args.common.force, &inv)?;
    }
    Ok(())
}
