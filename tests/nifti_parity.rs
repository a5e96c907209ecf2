//! Acceptance 1 of the I/O issue: our NIfTI reader agrees with nibabel on every `.nii`/`.nii.gz` shipped in the
//! nibabel wheel's test data, and on edge-case files written with nibabel headers (every datatype, both byte
//! orders, scaling, qform/sform combinations, NIfTI-2, pairs, gzip), or refuses the file with a clear error.
//! The comparison is done by `scripts/oracles/ref_nifti.py compare`, which prints the counts read / refused / wrong.

mod common;

use std::path::{Path, PathBuf};

use mri_ad::formats::nifti;
use ndarray_npy::WriteNpyExt;

fn nifti_files(dir: &Path, suffixes: &[&str]) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            suffixes.iter().any(|s| n.ends_with(s))
        })
        .collect();
    v.sort();
    v
}

/// Reads each file with our reader, dumps values and affine, and asks nibabel to judge.
fn judge(files: &[PathBuf], work: &Path) -> String {
    let mut manifest = Vec::new();
    for (n, f) in files.iter().enumerate() {
        match nifti::read_volume(f) {
            Ok(v) => {
                let npy = work.join(format!("{n}.npy"));
                v.data
                    .write_npy(std::fs::File::create(&npy).unwrap())
                    .unwrap();
                manifest.push(serde_json::json!({
                    "file": f, "status": "read", "npy": npy, "affine": v.affine,
                }));
            }
            Err(e) => {
                assert_eq!(e.exit_code(), 2, "{}: {e}", f.display());
                manifest.push(serde_json::json!({
                    "file": f, "status": "refused", "message": e.to_string(),
                }));
            }
        }
    }
    let mpath = work.join("manifest.json");
    std::fs::write(&mpath, serde_json::to_string(&manifest).unwrap()).unwrap();
    common::run_script("oracles/ref_nifti.py", &["compare", common::s(&mpath)])
}

#[test]
fn reader_matches_nibabel_on_wheel_test_data() {
    let data = common::run_script("oracles/ref_nifti.py", &["nibabel-data"]);
    let files = nifti_files(Path::new(data.trim()), &[".nii", ".nii.gz"]);
    assert!(
        files.len() >= 8,
        "expected the nibabel wheel's test images in {}",
        data.trim()
    );
    let work = tempfile::tempdir().unwrap();
    let report = judge(&files, work.path());
    println!("nibabel wheel test data ({} files):\n{report}", files.len());
    let summary = report.lines().last().unwrap();
    assert!(summary.contains("wrong=0"), "{summary}");
    // The wheel holds 3D volumes we must read, not only refuse.
    assert!(!summary.contains("read=0 "), "{summary}");
}

#[test]
fn reader_matches_nibabel_on_generated_edge_cases() {
    let work = tempfile::tempdir().unwrap();
    let gen = work.path().join("gen");
    common::run_script("oracles/ref_nifti.py", &["make", common::s(&gen)]);
    let files = nifti_files(&gen, nifti::NIFTI_SUFFIXES);
    let report = judge(&files, work.path());
    println!("generated edge cases ({} files):\n{report}", files.len());
    let summary = report.lines().last().unwrap();
    assert!(summary.contains("wrong=0"), "{summary}");
    let count = |key: &str| -> usize {
        summary
            .split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .unwrap()
            .parse()
            .unwrap()
    };
    // Exactly the seven files made to be refused are refused; everything else is read.
    assert_eq!(count("refused="), 7, "{summary}");
    assert_eq!(count("read="), files.len() - 7, "{summary}");
}
