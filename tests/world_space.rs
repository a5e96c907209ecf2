//! One batch grid in world space (issue 17), on the cohort of `scripts/data/make_world_cohort.py`: MNI152-derived
//! subjects registered to one atlas at 3 mm, and variants of h0 made by nibabel and SimpleITK (other storage
//! orientations, a coarser grid with another field of view, an oblique grid, unregistered copies, scans
//! that are not skull-stripped with their brain masks).

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::*;

/// The cohort, made once per test binary.
fn cohort() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        run_script("data/make_world_cohort.py", &["--out", s(dir.path())]);
        dir
    })
    .path()
}

/// A folder `dir/name` holding copies of `files` (source path, name in the folder).
fn folder(dir: &Path, name: &str, files: &[(PathBuf, &str)]) -> PathBuf {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    for (src, as_name) in files {
        std::fs::copy(src, d.join(as_name)).unwrap();
    }
    d
}

fn healthy(i: usize) -> (PathBuf, String) {
    (
        cohort().join(format!("healthy/h{i}.nii.gz")),
        format!("h{i}.nii.gz"),
    )
}

fn variant(name: &str) -> PathBuf {
    cohort().join(format!("variants/{name}.nii.gz"))
}

/// `mri-ad score` on healthy + the cohort's query cases and labels, tiny model at 56³.
fn score(healthy: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    score_with(
        healthy,
        &cohort().join("query"),
        &cohort().join("labels"),
        out,
        extra,
    )
}

/// `mri-ad score` on these folders, tiny model at 56³.
fn score_with(
    healthy: &Path,
    query: &Path,
    labels: &Path,
    out: &Path,
    extra: &[&str],
) -> std::process::Output {
    let model = tiny_model(0);
    let args: Vec<&str> = [
        "score",
        "--healthy",
        s(healthy),
        "--query",
        s(query),
        "--labels",
        s(labels),
        "--out",
        s(out),
        "--no-plots",
        "--no-progress",
    ]
    .into_iter()
    .chain(tiny_backbone(s(&model), "56"))
    .chain(extra.iter().copied())
    .collect();
    run_mri_ad(&args)
}

fn tokens(run: &Path, case: &str) -> (ndarray::Array3<f32>, Vec<bool>, Vec<i64>) {
    read_tokens(&run.join(format!("tokens/{case}.tokens.npz")))
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// `mri-ad eval` of a finished run gives the metrics the run reported: it rebuilds the same space (and
/// uses the same brain masks) from summary.json.
fn eval_agrees(run: &Path, labels: &Path) {
    ok(&run_mri_ad(&[
        "eval",
        "--run",
        s(run),
        "--labels",
        s(labels),
        "--no-progress",
    ]));
    let (summary, eval) = (
        json(&run.join("summary.json")),
        json(&run.join("eval.json")),
    );
    for key in [
        "patient_auroc",
        "voxel_auroc",
        "dice_mean",
        "dice_threshold",
        "voxel_ap_per_case",
    ] {
        assert_eq!(summary["metrics"][key], eval["metrics"][key], "{key}");
    }
}

#[test]
fn storage_orientations_give_identical_tokens_and_scores() {
    let work = tempfile::tempdir().unwrap();
    let plain: Vec<(PathBuf, String)> = (0..5).map(healthy).collect();
    let files = |swap: Option<&str>| -> Vec<(PathBuf, &str)> {
        plain
            .iter()
            .map(|(p, n)| match (swap, n.as_str()) {
                (Some(v), "h0.nii.gz") => (variant(v), n.as_str()),
                _ => (p.clone(), n.as_str()),
            })
            .collect()
    };
    let base = folder(work.path(), "ras", &files(None));
    let run = work.path().join("run_ras");
    ok(&score(&base, &run, &[]));
    let scores = std::fs::read_to_string(run.join("scores.csv")).unwrap();
    let reference = tokens(&run, "h0");
    for code in ["lps", "lia", "psr"] {
        let name = format!("h0_{code}");
        let dir = folder(work.path(), code, &files(Some(&name)));
        let other = work.path().join(format!("run_{code}"));
        let stderr = ok(&score(&dir, &other, &[]));
        assert!(!stderr.contains("resampled"), "{code}: {stderr}");
        let t = tokens(&other, "h0");
        assert!(
            t.0 == reference.0 && t.1 == reference.1 && t.2 == reference.2,
            "{code}: the token arrays differ from the RAS original's"
        );
        assert_eq!(
            std::fs::read(other.join("tokens/h0.tokens.npz")).unwrap(),
            std::fs::read(run.join("tokens/h0.tokens.npz")).unwrap(),
            "{code}: the token files differ"
        );
        assert_eq!(
            std::fs::read_to_string(other.join("scores.csv")).unwrap(),
            scores,
            "{code}"
        );
        // The map lies on the copy's own storage grid and is the original's map reoriented.
        let check = format!(
            "import nibabel as nib, numpy as np\n\
             a = nib.load({a:?}); b = nib.load({b:?}); c = nib.load({c:?})\n\
             assert np.allclose(b.affine, c.affine) and b.shape == c.shape, 'not on the copy grid'\n\
             ra, rb = nib.as_closest_canonical(a), nib.as_closest_canonical(b)\n\
             assert np.allclose(ra.affine, rb.affine, atol=1e-4)\n\
             assert np.array_equal(np.asarray(ra.dataobj), np.asarray(rb.dataobj)), 'maps differ'\n\
             import json\n\
             ha = json.load(open({sa:?}))['hottest_voxel']['h0']; hb = json.load(open({sb:?}))['hottest_voxel']['h0']\n\
             assert np.allclose(ha['world_mm'], hb['world_mm'], atol=0.01), ('same point in the world', ha, hb)\n\
             w = c.affine @ np.r_[hb['input_ijk'], 1]\n\
             half = np.abs(c.affine[:3, :3]).sum(1) / 2 + 1e-3\n\
             assert np.all(np.abs(w[:3] - hb['world_mm']) <= half), ('the input voxel holds the point', w, hb)\n\
             m = np.asarray(b.dataobj)\n\
             assert m[tuple(hb['input_ijk'])] >= 0.9 * m.max(), ('the map is hot there', m[tuple(hb['input_ijk'])], m.max())\n\
             print('ok')",
            a = s(&run.join("maps/h0_anomaly.nii.gz")),
            b = s(&other.join("maps/h0_anomaly.nii.gz")),
            c = s(&variant(&name)),
            sa = s(&run.join("summary.json")),
            sb = s(&other.join("summary.json")),
        );
        assert_eq!(run_python(&["-c", &check]).trim(), "ok", "{code}");
    }
}

/// Cosine similarity per token (layer, position) of two token sets, over the positions valid in both, after
/// subtracting `centre` (per layer and position) from both.
fn cosines(
    a: &ndarray::Array3<f32>,
    b: &ndarray::Array3<f32>,
    valid: &[bool],
    centre: Option<&ndarray::Array3<f64>>,
) -> Vec<f64> {
    let (l, m, d) = a.dim();
    let mut out = Vec::new();
    for layer in 0..l {
        for p in (0..m).filter(|&p| valid[p]) {
            let c = |k: usize| centre.map_or(0.0, |c| c[[layer, p, k]]);
            let x: Vec<f64> = (0..d).map(|k| a[[layer, p, k]] as f64 - c(k)).collect();
            let y: Vec<f64> = (0..d).map(|k| b[[layer, p, k]] as f64 - c(k)).collect();
            let dot: f64 = x.iter().zip(&y).map(|(u, v)| u * v).sum();
            let norm = |v: &[f64]| v.iter().map(|u| u * u).sum::<f64>().sqrt();
            out.push(dot / (norm(&x) * norm(&y)));
        }
    }
    out
}

fn mean_min(v: &[f64]) -> (f64, f64) {
    (
        v.iter().sum::<f64>() / v.len() as f64,
        v.iter().cloned().fold(f64::INFINITY, f64::min),
    )
}

#[test]
fn a_coarser_grid_with_another_field_of_view_joins_the_batch() {
    let work = tempfile::tempdir().unwrap();
    let mut files: Vec<(PathBuf, String)> = (0..5).map(healthy).collect();
    files.push((variant("h0_coarse"), "h0_coarse.nii.gz".into()));
    let refs: Vec<(PathBuf, &str)> = files.iter().map(|(p, n)| (p.clone(), n.as_str())).collect();
    let dir = folder(work.path(), "healthy", &refs);
    // A lesion case resampled likewise, with its label map (nearest neighbour), among the queries.
    let names = ["q0.nii.gz", "q1.nii.gz", "q2.nii.gz", "q0_coarse.nii.gz"];
    let in_cohort = |d: &str, i: usize| cohort().join(format!("{d}/q{i}.nii.gz"));
    let mut queries: Vec<(PathBuf, &str)> =
        (0..3).map(|i| (in_cohort("query", i), names[i])).collect();
    queries.push((variant("q0_coarse"), names[3]));
    let mut labels: Vec<(PathBuf, &str)> =
        (0..3).map(|i| (in_cohort("labels", i), names[i])).collect();
    labels.push((variant("q0_coarse_label"), names[3]));
    let query_dir = folder(work.path(), "query", &queries);
    let label_dir = folder(work.path(), "labels", &labels);
    let run = work.path().join("run");
    let stderr = ok(&score_with(&dir, &query_dir, &label_dir, &run, &[]));
    assert!(
        stderr.contains("resampled") && stderr.contains("h0_coarse"),
        "{stderr}"
    );
    let summary = json(&run.join("summary.json"));
    assert_eq!(
        summary["crop"]["resampled"],
        serde_json::json!(["h0_coarse", "q0_coarse"])
    );
    // Its label map reached the cube: the case counts as a lesion case (label 1) with a voxel AP.
    let csv = std::fs::read_to_string(run.join("scores.csv")).unwrap();
    let row = csv.lines().find(|l| l.contains(",q0_coarse,")).unwrap();
    assert_eq!(row.split(',').nth(4), Some("1"), "{row}");
    assert!(summary["metrics"]["voxel_ap_per_case"]["q0_coarse"].is_f64());
    // The hottest voxel of a resampled case is given on its own (coarser, shifted) grid: its affine maps
    // the reported input voxel to within half a voxel of the reported world point.
    let check = format!(
        "import json, nibabel as nib, numpy as np\n\
         h = json.load(open({sj:?}))['hottest_voxel']['q0_coarse']\n\
         a = nib.load({v:?}).affine\n\
         w = a @ np.r_[h['input_ijk'], 1]\n\
         assert np.all(np.abs(w[:3] - h['world_mm']) <= np.abs(a[:3, :3]).sum(1) / 2 + 1e-3), (w, h)\n\
         print('ok')",
        sj = s(&run.join("summary.json")),
        v = s(&variant("q0_coarse")),
    );
    assert_eq!(run_python(&["-c", &check]).trim(), "ok");
    eval_agrees(&run, &label_dir);
    // Its tokens agree with the 3 mm original's (SimpleITK resampled it to 4.5 mm). Negative control: another
    // subject's tokens. The tiny random model's tokens are alike everywhere (raw cosines of 0.98 between
    // subjects), so the comparison that tells subjects apart is made after subtracting the mean token of
    // three other subjects at each position.
    let (t0, v0, _) = tokens(&run, "h0");
    let (tc, vc, _) = tokens(&run, "h0_coarse");
    let (t1, v1, _) = tokens(&run, "h1");
    let valid: Vec<bool> = (0..v0.len()).map(|p| v0[p] && vc[p] && v1[p]).collect();
    let others: Vec<ndarray::Array3<f32>> =
        (2..5).map(|i| tokens(&run, &format!("h{i}")).0).collect();
    let centre = others
        .iter()
        .fold(ndarray::Array3::<f64>::zeros(t0.dim()), |acc, t| {
            acc + t.mapv(|v| v as f64 / others.len() as f64)
        });
    let same = mean_min(&cosines(&t0, &tc, &valid, None));
    let other = mean_min(&cosines(&t0, &t1, &valid, None));
    let same_c = mean_min(&cosines(&t0, &tc, &valid, Some(&centre)));
    let other_c = mean_min(&cosines(&t0, &t1, &valid, Some(&centre)));
    println!(
        "cosine over {} brain tokens: h0 vs h0_coarse mean {:.4}, min {:.4}; h0 vs h1 mean {:.4}, min {:.4}; \
         centred: h0 vs h0_coarse mean {:.3}, h0 vs h1 mean {:.3}",
        valid.iter().filter(|&&v| v).count(),
        same.0,
        same.1,
        other.0,
        other.1,
        same_c.0,
        other_c.0
    );
    assert!(same.0 > 0.98 && same.1 > 0.9, "{same:?}");
    assert!(
        same_c.0 > 0.5 && same_c.0 > other_c.0 + 0.3,
        "{same_c:?} vs {other_c:?}"
    );
    // Its map has its own geometry (SimpleITK).
    let check = format!(
        "import SimpleITK as sitk, numpy as np\n\
         a = sitk.ReadImage({a:?}); b = sitk.ReadImage({b:?})\n\
         assert a.GetSize() == b.GetSize(), (a.GetSize(), b.GetSize())\n\
         for f in ('GetSpacing', 'GetOrigin', 'GetDirection'):\n\
         \x20   assert np.allclose(getattr(a, f)(), getattr(b, f)(), atol=1e-4), f\n\
         m = sitk.GetArrayFromImage(b)\n\
         assert m.max() > 0, 'empty map'\n\
         print('ok', a.GetSize(), a.GetSpacing())",
        a = s(&variant("h0_coarse")),
        b = s(&run.join("maps/h0_coarse_anomaly.nii.gz")),
    );
    let out = run_python(&["-c", &check]);
    assert!(out.starts_with("ok (39, 43, 42)"), "{out}");
    let mask_check = check
        .replace(s(&variant("h0_coarse")), s(&variant("q0_coarse")))
        .replace(
            s(&run.join("maps/h0_coarse_anomaly.nii.gz")),
            s(&run.join("masks/q0_coarse_mask.nii.gz")),
        );
    let out = run_python(&["-c", &mask_check]);
    assert!(out.starts_with("ok (39, 43, 42)"), "{out}");
}

#[test]
fn volumes_that_are_not_registered_are_refused_before_the_run_folder_exists() {
    let work = tempfile::tempdir().unwrap();
    for (name, why) in [
        ("h0_rotated", "rotated by 20.0°"),
        ("h0_moved", "from the batch's median along x (R)"),
    ] {
        let mut files: Vec<(PathBuf, String)> = (1..5).map(healthy).collect();
        files.push((variant(name), format!("{name}.nii.gz")));
        let refs: Vec<(PathBuf, &str)> =
            files.iter().map(|(p, n)| (p.clone(), n.as_str())).collect();
        let dir = folder(work.path(), name, &refs);
        let run = work.path().join(format!("run_{name}"));
        let o = score(&dir, &run, &[]);
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{name}: {e}");
        assert!(
            e.contains(&format!("{name}.nii.gz")) && e.contains(why) && e.contains("register"),
            "{name}: {e}"
        );
        assert!(!run.exists(), "{name}: the run folder was created");
        // With --crop volume the same batch runs.
        let own = work.path().join(format!("own_{name}"));
        ok(&score(&dir, &own, &["--crop", "volume"]));
    }
}

#[test]
fn brain_masks_stand_in_for_skull_stripping() {
    let work = tempfile::tempdir().unwrap();
    let raw = cohort().join("raw");
    let model = tiny_model(0);
    let labels = cohort().join("labels");
    let run = |healthy: &Path, query: &Path, out: &Path, masks: Option<&Path>| match masks {
        Some(m) => score_with(healthy, query, &labels, out, &["--masks", s(m)]),
        None => score_with(healthy, query, &labels, out, &[]),
    };
    let masked = work.path().join("masked");
    ok(&run(
        &raw.join("healthy"),
        &raw.join("query"),
        &masked,
        Some(&raw.join("masks")),
    ));
    let stripped = work.path().join("stripped");
    ok(&run(
        &cohort().join("healthy"),
        &cohort().join("query"),
        &stripped,
        None,
    ));
    for case in ["h0", "h3", "q1"] {
        let (a, b) = (tokens(&masked, case), tokens(&stripped, case));
        assert!(
            a.0 == b.0 && a.1 == b.1,
            "{case}: masked raw tokens differ from the skull-stripped ones"
        );
    }
    assert_eq!(
        std::fs::read_to_string(masked.join("scores.csv")).unwrap(),
        std::fs::read_to_string(stripped.join("scores.csv")).unwrap()
    );
    assert_eq!(
        json(&masked.join("summary.json"))["metrics"],
        json(&stripped.join("summary.json"))["metrics"]
    );
    eval_agrees(&masked, &labels);
    // extract takes the masks too.
    let (tokens_masked, tokens_stripped) = (work.path().join("tm"), work.path().join("ts"));
    for (input, out, masks) in [
        (raw.join("healthy"), &tokens_masked, Some(raw.join("masks"))),
        (cohort().join("healthy"), &tokens_stripped, None),
    ] {
        let mut args = vec![
            "extract",
            "--input",
            s(&input),
            "--out",
            s(out),
            "--no-progress",
            "-q",
        ];
        if let Some(m) = &masks {
            args.extend(["--masks", s(m)]);
        }
        args.extend(tiny_backbone(s(&model), "56"));
        ok(&run_mri_ad(&args));
    }
    let h2 = |d: &Path| read_tokens(&d.join("h2.tokens.npz"));
    assert_eq!(h2(&tokens_masked).0, h2(&tokens_stripped).0);
    // The mask is part of each token file's cache key: with the Nyúl landmarks fixed (--nyul) and the batch
    // box unchanged, another mask for h2 (one voxel less, inside the brain) recomputes h2 alone.
    let side = json(&tokens_masked.join("h2.tokens.json"));
    assert_eq!(side["mask_sha256"].as_str().unwrap().len(), 64, "{side}");
    assert!(json(&tokens_stripped.join("h2.tokens.json"))
        .get("mask_sha256")
        .is_none());
    let names: Vec<String> = (0..5).map(|i| format!("h{i}_mask.nii.gz")).collect();
    let copies: Vec<(PathBuf, &str)> = names
        .iter()
        .map(|n| (raw.join("masks").join(n), n.as_str()))
        .collect();
    let masks = folder(work.path(), "masks", &copies);
    let (raw_healthy, nyul, cache) = (
        raw.join("healthy"),
        work.path().join("nyul.json"),
        work.path().join("cache"),
    );
    let extract = |more: &[&str]| {
        let mut args = vec!["extract", "--input", s(&raw_healthy), "--masks", s(&masks)];
        args.extend(["--out", s(&cache), "--no-progress"]);
        args.extend(tiny_backbone(s(&model), "56"));
        args.extend(more);
        ok(&run_mri_ad(&args))
    };
    extract(&["--save-nyul", s(&nyul)]);
    let edit = format!(
        "import nibabel as nib, numpy as np\n\
         m = nib.load({p:?}); d = np.asarray(m.dataobj).copy(); c = np.argwhere(d > 0).mean(0).astype(int)\n\
         assert d[tuple(c)] > 0; d[tuple(c)] = 0; nib.save(nib.Nifti1Image(d, m.affine), {p:?})",
        p = s(&masks.join("h2_mask.nii.gz"))
    );
    run_python(&["-c", &edit]);
    let log = extract(&["--nyul", s(&nyul)]);
    assert!(
        log.contains("h0: up to date") && !log.contains("h2: up to date"),
        "{log}"
    );
    // Without the masks the raw scans are refused, naming the first one.
    let refused = work.path().join("refused");
    let o = run(&raw.join("healthy"), &raw.join("query"), &refused, None);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(
        e.contains("raw/healthy/h0.nii.gz")
            && e.contains("skull-stripped")
            && e.contains("--masks"),
        "{e}"
    );
    assert!(!refused.exists());
}

#[test]
fn world_resampling_matches_an_independent_scipy_implementation() {
    use mri_ad::volume::{CropMode, PreprocessConfig, Preprocessor, VolumeFiles};
    let work = tempfile::tempdir().unwrap();
    let mut paths: Vec<PathBuf> = (0..5).map(|i| healthy(i).0).collect();
    paths.push(variant("h0_coarse"));
    paths.push(variant("h0_tilted"));
    paths.push(cohort().join("query/q0.nii.gz"));
    paths.push(variant("q0_coarse"));
    let files: Vec<VolumeFiles> = paths
        .iter()
        .map(|p| VolumeFiles {
            image: p,
            mask: None,
        })
        .collect();
    let config = PreprocessConfig {
        size: 56,
        margin: 2,
        crop: CropMode::Batch,
    };
    let progress = mri_ad::progress::Progress::new(false);
    let (pre, geometry) = Preprocessor::for_batch(config, &files, 2, &progress).unwrap();
    assert_eq!(
        geometry.resampled(),
        [5, 6, 8],
        "h0_coarse, h0_tilted, q0_coarse"
    );
    let labels = [
        (7, cohort().join("labels/q0.nii.gz")),
        (8, variant("q0_coarse_label")),
    ];
    let mut cases = Vec::new();
    let mut cubes = Vec::new();
    for (i, path) in paths
        .iter()
        .enumerate()
        .filter(|(i, _)| [0, 5, 6, 7, 8].contains(i))
    {
        let p = pre
            .prepare(&mri_ad::formats::nifti::read_volume(path).unwrap(), None)
            .unwrap();
        let npy = work.path().join(format!("cube{i}.npy"));
        ndarray_npy::write_npy(&npy, &p.cube).unwrap();
        cubes.push(npy.clone());
        let case = serde_json::json!({
            "image": path, "cube": npy, "cube_affine": p.transform.cube_affine(),
            "frame_affine": p.transform.frame.affine, "crop_lo": p.transform.crop.lo,
            "crop_hi": p.transform.crop.hi, "size": 56,
        });
        // The label map of a lesion case, nearest voxel, on the common grid and on the coarse one.
        if let Some((_, label)) = labels.iter().find(|(j, _)| *j == i) {
            let cube = p
                .transform
                .labels_to_cube(&mri_ad::formats::nifti::read_volume(label).unwrap())
                .unwrap();
            let npy = work.path().join(format!("labels{i}.npy"));
            ndarray_npy::write_npy(&npy, &cube).unwrap();
            let mut labelled = case.clone();
            labelled["image"] = serde_json::json!(label);
            labelled["cube"] = serde_json::json!(npy);
            labelled["nearest"] = serde_json::json!(true);
            cases.push(labelled);
        }
        cases.push(case);
    }
    let json = work.path().join("cases.json");
    std::fs::write(&json, serde_json::to_string(&cases).unwrap()).unwrap();
    let report = run_script("oracles/ref_world_resample.py", &[s(&json)]);
    println!("{report}");
    assert!(report.contains("cases=7 failed=0"), "{report}");
    // Negative control: h0's cube in place of h0_coarse's (as if the coarse volume were read on the frame
    // grid, without resampling) fails the check on its voxels.
    assert!(cases[1]["image"]
        .as_str()
        .unwrap()
        .ends_with("h0_coarse.nii.gz"));
    cases[1]["cube"] = serde_json::json!(cubes[0]);
    std::fs::write(&json, serde_json::to_string(&cases).unwrap()).unwrap();
    let out = std::process::Command::new(python())
        .args([
            root()
                .join("scripts/oracles/ref_world_resample.py")
                .as_path(),
            json.as_path(),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success() && text.contains("failed=1"), "{text}");
    let bad = text.lines().find(|l| l.contains("h0_coarse")).unwrap();
    assert!(
        bad.contains("affine max diff 0.00e+00") && bad.ends_with("FAIL"),
        "{bad}"
    );
}
