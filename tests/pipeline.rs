//! `mri-ad score --healthy --query --labels` end to end on tiny NIfTI phantoms with the tiny random ViT:
//! outputs, geometry of the written maps, metrics present, and a rerun that resumes from the token cache
//! with identical results.

mod common;

use std::path::Path;

use common::*;
use mri_ad::io::nifti::{read_volume, write_volume, Affine};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

const AFFINE: Affine = [
    [-1.3, 0.0, 0.0, 90.0],
    [0.0, -1.1, 0.0, 110.0],
    [0.0, 0.0, 1.0, -60.0],
    [0.0, 0.0, 0.0, 1.0],
];

/// A phantom volume [k][j][i] = 36×32×28, with an optional bright lesion; returns the lesion mask too.
fn volume(seed: u64, lesion: bool) -> (ndarray::Array3<f32>, ndarray::Array3<f32>) {
    let cube = phantom(36, seed);
    let mut vol = cube
        .slice(ndarray::s![.., 2..34, 4..32])
        .mapv(|v| v * 800.0);
    let mut mask = ndarray::Array3::<f32>::zeros(vol.dim());
    if lesion {
        for ((k, j, i), v) in vol.indexed_iter_mut() {
            let d2 =
                (k as f32 - 18.0).powi(2) + (j as f32 - 14.0).powi(2) + (i as f32 - 12.0).powi(2);
            if d2 < 25.0 && *v > 0.0 {
                *v = 2000.0;
                mask[[k, j, i]] = 1.0;
            }
        }
    }
    (vol, mask)
}

#[test]
fn score_on_volumes_writes_maps_on_the_input_grid_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let (healthy, query, labels) = (
        dir.path().join("h"),
        dir.path().join("q"),
        dir.path().join("l"),
    );
    for d in [&healthy, &query, &labels] {
        std::fs::create_dir_all(d).unwrap();
    }
    for i in 0..4 {
        write_volume(
            &healthy.join(format!("h{i}.nii.gz")),
            &volume(i, false).0,
            &AFFINE,
        )
        .unwrap();
    }
    for i in 0..3 {
        let (vol, mask) = volume(10 + i, true);
        write_volume(&query.join(format!("q{i}.nii.gz")), &vol, &AFFINE).unwrap();
        write_volume(&labels.join(format!("q{i}.nii.gz")), &mask, &AFFINE).unwrap();
    }
    let model = tiny_model(0);
    let out = dir.path().join("run");
    let args = [
        "score",
        "--healthy",
        s(&healthy),
        "--query",
        s(&query),
        "--labels",
        s(&labels),
        "--out",
        s(&out),
        "--model",
        s(&model),
        "--size",
        "28",
        "--layers",
        "2,4",
        "--proj-dim",
        "16",
        "--device",
        "cpu",
        "--threads",
        "1",
        "--no-progress",
    ];
    ok(&run_mri_ad(&args));

    let csv = std::fs::read_to_string(out.join("scores.csv")).unwrap();
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    assert_eq!(rows.len(), 7, "{csv}");
    assert!(
        rows.iter()
            .filter(|r| r.contains(",healthy,"))
            .all(|r| r.split(',').nth(3) == Some("0")),
        "{csv}"
    );
    assert!(
        rows.iter()
            .filter(|r| r.contains(",query,"))
            .all(|r| r.split(',').nth(3) == Some("1")),
        "{csv}"
    );
    for id in ["h0", "h1", "h2", "h3", "q0", "q1", "q2"] {
        let input_dir = if id.starts_with('h') {
            &healthy
        } else {
            &query
        };
        let input = read_volume(&input_dir.join(format!("{id}.nii.gz"))).unwrap();
        for file in [
            format!("maps/{id}_anomaly.nii.gz"),
            format!("masks/{id}_mask.nii.gz"),
        ] {
            let written = read_volume(&out.join(&file)).unwrap();
            assert_eq!(written.data.dim(), input.data.dim(), "{file}");
            assert_eq!(written.affine, input.affine, "{file}");
        }
        assert!(out.join(format!("token_scores/{id}.npy")).exists());
    }
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    let m = &summary["metrics"];
    for key in [
        "patient_auroc",
        "patient_f1_max",
        "voxel_auroc",
        "dice_mean",
        "dice_threshold",
    ] {
        assert!(m[key].as_f64().is_some(), "{key} missing: {m}");
    }
    assert_eq!(m["dice_per_case"].as_object().unwrap().len(), 7);
    assert_eq!(summary["backbone"]["computed"], 7);
    let before = std::fs::read(out.join("scores.csv")).unwrap();

    // `eval` recomputes the same metrics from the finished run.
    ok(&run_mri_ad(&[
        "eval",
        "--run",
        s(&out),
        "--labels",
        s(&labels),
        "--quiet",
    ]));
    let again: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("eval.json")).unwrap()).unwrap();
    assert_eq!(again["metrics"], summary["metrics"]);

    // The same command again resumes: no token is recomputed, the results are identical.
    ok(&run_mri_ad(&args));
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["backbone"]["computed"], 0);
    assert_eq!(summary["backbone"]["reused"], 7);
    assert_eq!(std::fs::read(out.join("scores.csv")).unwrap(), before);

    // A query case without its label is refused before anything is computed.
    write_volume(&query.join("q9.nii.gz"), &volume(19, true).0, &AFFINE).unwrap();
    let out2 = dir.path().join("run2");
    let mut bad: Vec<&str> = args.to_vec();
    let pos = bad.iter().position(|a| *a == s(&out)).unwrap();
    bad[pos] = s(&out2);
    let o = run_mri_ad(&bad);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("q9") && err.contains("label"), "{err}");
    assert!(!out2.exists(), "{err}");
}
