//! Acceptance 3 of the I/O issue: every kind of bad input makes `mri-ad check` exit with code 2 and a message
//! that names the file and the problem, without a panic, without writing anything, and without touching the
//! inputs (every file's bytes are compared before and after).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use mri_ad::formats::nifti;
use ndarray::Array3;

/// A small brain-like volume (positive inside a box, zero outside).
fn brain() -> Array3<f32> {
    Array3::from_shape_fn((12, 14, 16), |(k, j, i)| {
        if (2..10).contains(&k) && (3..11).contains(&j) && (2..14).contains(&i) {
            (10 + i + j + k) as f32
        } else {
            0.0
        }
    })
}

fn affine() -> nifti::Affine {
    let mut a = nifti::identity();
    a[0][0] = -1.2;
    a[2][2] = 2.0;
    a[0][3] = 30.0;
    a
}

fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Option<Vec<u8>>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p.clone());
                out.insert(p, None);
            } else {
                out.insert(p.clone(), std::fs::read(&p).ok());
            }
        }
    }
    out
}

/// `mri-ad check` with `args`.
fn check(args: &[&str]) -> std::process::Output {
    common::mri_ad().arg("check").args(args).output().unwrap()
}

/// Runs `mri-ad check` with `args` on the prepared folder and checks the failure contract.
fn expect_failure(root: &Path, args: &[&str], file: &str, problem: &str) {
    let before = snapshot(root);
    let out = check(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap_or("");
    assert_eq!(out.status.code(), Some(2), "{file}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        last.starts_with("mri-ad: error: ") && last.contains(file) && last.contains(problem),
        "expected an error naming {file:?} and {problem:?}, got:\n{stderr}"
    );
    assert_eq!(
        snapshot(root),
        before,
        "{file}: files were changed or written"
    );
}

/// A folder `q` with one good case `good`, plus whatever `add` puts there.
fn setup(add: impl FnOnce(&Path)) -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    let q = t.path().join("q");
    std::fs::create_dir(&q).unwrap();
    nifti::write_volume(&q.join("good.nii.gz"), &brain(), &affine()).unwrap();
    add(&q);
    t
}

fn good_bytes(gz: bool) -> Vec<u8> {
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join(if gz { "x.nii.gz" } else { "x.nii" });
    nifti::write_volume(&p, &brain(), &affine()).unwrap();
    std::fs::read(p).unwrap()
}

fn patched(f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut b = good_bytes(false);
    f(&mut b);
    b
}

fn q(t: &tempfile::TempDir) -> String {
    common::s(&t.path().join("q")).to_string()
}

#[test]
fn malformed_files_exit_2_naming_file_and_problem() {
    let half = {
        let b = good_bytes(true);
        b[..b.len() / 2].to_vec()
    };
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("truncated.nii.gz", half, "truncated or corrupt gzip"),
        (
            "magic.nii",
            patched(|b| b[344..348].copy_from_slice(b"abc\0")),
            "wrong magic",
        ),
        (
            "notes.nii",
            b"this is not an image\n".to_vec(),
            "not a NIfTI file",
        ),
        (
            "fourd.nii",
            patched(|b| {
                b[40..42].copy_from_slice(&4i16.to_le_bytes());
                b[48..50].copy_from_slice(&3i16.to_le_bytes());
            }),
            "3 volumes",
        ),
        (
            "flat.nii",
            patched(|b| b[40..42].copy_from_slice(&2i16.to_le_bytes())),
            "2D image",
        ),
        (
            "nan.nii",
            patched(|b| {
                let n = b.len();
                b[n - 400..n - 396].copy_from_slice(&f32::NAN.to_le_bytes());
            }),
            "NaN or infinite",
        ),
        (
            "inf.nii",
            patched(|b| b[352..356].copy_from_slice(&f32::INFINITY.to_le_bytes())),
            "NaN or infinite",
        ),
        (
            "complex.nii",
            patched(|b| b[70..72].copy_from_slice(&32i16.to_le_bytes())),
            "complex",
        ),
    ];
    for (name, bytes, problem) in cases {
        let t = setup(|d| std::fs::write(d.join(name), &bytes).unwrap());
        expect_failure(t.path(), &["--query", &q(&t)], name, problem);
    }
}

#[test]
fn all_zero_volume_and_unreadable_file() {
    let t = setup(|d| {
        nifti::write_volume(
            &d.join("zero.nii.gz"),
            &Array3::zeros((12, 14, 16)),
            &affine(),
        )
        .unwrap()
    });
    expect_failure(
        t.path(),
        &["--healthy", &q(&t)],
        "zero.nii.gz",
        "brain mask is empty",
    );
    // A dangling link (works for any user, root included).
    let t = setup(|d| {
        std::os::unix::fs::symlink(d.join("missing-target"), d.join("gone.nii.gz")).unwrap()
    });
    expect_failure(
        t.path(),
        &["--query", &q(&t)],
        "gone.nii.gz",
        "cannot read the file",
    );
    // A file without read permission (root reads it anyway, so only for other users).
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .unwrap()
        .stdout
        == b"0\n";
    if !root {
        use std::os::unix::fs::PermissionsExt;
        let t = setup(|d| {
            let p = d.join("locked.nii.gz");
            nifti::write_volume(&p, &brain(), &affine()).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o000)).unwrap();
        });
        expect_failure(
            t.path(),
            &["--query", &q(&t)],
            "locked.nii.gz",
            "cannot read the file",
        );
    }
}

#[test]
fn label_problems() {
    // A label map on another grid.
    let t = setup(|d| {
        let l = d.parent().unwrap().join("labels");
        std::fs::create_dir(&l).unwrap();
        let mut a = affine();
        a[1][3] = 4.0;
        nifti::write_volume(
            &l.join("good.nii.gz"),
            &brain().mapv(|v| (v > 20.0) as u8 as f32),
            &a,
        )
        .unwrap();
    });
    let labels = common::s(&t.path().join("labels")).to_string();
    expect_failure(
        t.path(),
        &["--query", &q(&t), "--labels", &labels],
        "labels/good.nii.gz",
        "voxel grid",
    );
    // The affines are printed as stored (f32 in the header) without float noise: -1.2, not
    // -1.2000000476837158.
    let err = String::from_utf8_lossy(&check(&["--query", &q(&t), "--labels", &labels]).stderr)
        .into_owned();
    assert!(
        err.contains("[-1.2, 0, 0,") && !err.contains("00000"),
        "{err}"
    );
    // A label map of another shape.
    let t = setup(|d| {
        let l = d.parent().unwrap().join("labels");
        std::fs::create_dir(&l).unwrap();
        nifti::write_volume(
            &l.join("good_seg.nii.gz"),
            &Array3::zeros((12, 14, 15)),
            &affine(),
        )
        .unwrap();
    });
    let labels = common::s(&t.path().join("labels")).to_string();
    expect_failure(
        t.path(),
        &["--query", &q(&t), "--labels", &labels],
        "good_seg.nii.gz",
        "voxel grid",
    );
    // A case without its label map.
    let t = setup(|d| {
        std::fs::create_dir(d.parent().unwrap().join("labels")).unwrap();
    });
    let labels = common::s(&t.path().join("labels")).to_string();
    expect_failure(
        t.path(),
        &["--query", &q(&t), "--labels", &labels],
        "good.nii.gz",
        "has no label map",
    );
}

#[test]
fn empty_folder_and_output_folder_rules() {
    let t = tempfile::tempdir().unwrap();
    let empty = t.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    expect_failure(
        t.path(),
        &["--query", common::s(&empty)],
        "empty",
        "no volumes found",
    );
    expect_failure(
        t.path(),
        &["--query", common::s(&t.path().join("absent"))],
        "absent",
        "--query",
    );
    // A mistyped folder stops at once: no volume of the other folder is read or listed, and the error is
    // said once.
    let good = setup(|_| {});
    let o = check(&[
        "--healthy",
        &q(&good),
        "--query",
        common::s(&t.path().join("absent")),
    ]);
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(out.is_empty(), "{out}");
    assert_eq!(err.matches("no such folder").count(), 1, "{err}");

    let t = setup(|_| {});
    let out = t.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("keep.txt"), b"user file").unwrap();
    let args = ["--query", &q(&t), "--out", common::s(&out)];
    expect_failure(t.path(), &args, "out", "--force");
    // With --force the inventory is written and other files are kept.
    let ok = check(&[&args[..], &["--force"]].concat());
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let inv: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("check.json")).unwrap()).unwrap();
    assert_eq!(inv["cases"][0]["case"], "good");
    assert_eq!(inv["cases"][0]["shape"], serde_json::json!([16, 14, 12]));
    assert_eq!(inv["cases"][0]["space"]["fit"], "common");
    assert_eq!(
        inv["batch_space"]["frame"]["size"],
        serde_json::json!([16, 14, 12])
    );
    assert_eq!(std::fs::read(out.join("keep.txt")).unwrap(), b"user file");
    // A failing check never creates its output folder.
    let t = setup(|d| std::fs::write(d.join("bad.nii"), b"junk").unwrap());
    let fresh = t.path().join("fresh");
    expect_failure(
        t.path(),
        &["--query", &q(&t), "--out", common::s(&fresh)],
        "bad.nii",
        "not a NIfTI file",
    );
    assert!(!fresh.exists());
}

#[test]
fn check_lists_cases_of_a_brats_layout() {
    let t = tempfile::tempdir().unwrap();
    let b = t.path().join("brats");
    for c in ["BraTS-MET-00007-000", "BraTS-MET-00003-000"] {
        let d = b.join(c);
        std::fs::create_dir_all(&d).unwrap();
        nifti::write_volume(&d.join(format!("{c}-t2w.nii.gz")), &brain(), &affine()).unwrap();
        nifti::write_volume(&d.join(format!("{c}-t1n.nii.gz")), &brain(), &affine()).unwrap();
        nifti::write_volume(
            &d.join(format!("{c}-seg.nii.gz")),
            &brain().mapv(|v| if v > 30.0 { 3.0 } else { 0.0 }),
            &affine(),
        )
        .unwrap();
    }
    let out = check(&["--query", common::s(&b), "--labels", common::s(&b)]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("brats-mets-2025 layout): 2 cases"),
        "{stdout}"
    );
    assert!(
        stdout.contains("BraTS-MET-00003-000") && stdout.contains("16×14×12"),
        "{stdout}"
    );
    assert!(
        stdout.contains("LAS") && stdout.contains("lesion"),
        "{stdout}"
    );
}

#[test]
fn a_size_that_is_no_multiple_of_14_names_the_two_nearest() {
    let t = setup(|_| {});
    let out = check(&["--query", &q(&t), "--size", "200"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--size") && err.contains("use 196 or 210"),
        "{err}"
    );
}

#[test]
fn check_refuses_volumes_on_different_grids_unless_crop_volume() {
    let t = setup(|d| {
        let mut shifted = affine();
        shifted[1][3] = 5.0;
        nifti::write_volume(&d.join("moved.nii.gz"), &brain(), &shifted).unwrap();
        nifti::write_volume(&d.join("same.nii.gz"), &brain(), &affine()).unwrap();
    });
    // "good" is the first case in discovery order; "moved" is off its grid, "same" is not.
    expect_failure(
        t.path(),
        &["--query", &q(&t)],
        "moved.nii.gz",
        "--crop volume",
    );
    let stderr = String::from_utf8_lossy(&check(&["--query", &q(&t)]).stderr).into_owned();
    assert!(!stderr.contains("same.nii.gz"), "{stderr}");
    assert_eq!(
        stderr.matches("moved.nii.gz").count(),
        1,
        "said once: {stderr}"
    );
    let ok = check(&["--query", &q(&t), "--crop", "volume"]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    // Fewer than 3 cases is a note (the batch may get more from the other folder), not a problem.
    let t = setup(|_| {});
    let one = check(&["--query", &q(&t)]);
    assert!(one.status.success());
    assert!(String::from_utf8_lossy(&one.stdout).contains("at least 3"));
}
