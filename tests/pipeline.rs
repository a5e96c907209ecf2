//! `mri-ad score --healthy --query --labels` end to end on tiny NIfTI phantoms with the tiny random ViT:
//! outputs, geometry of the written maps, metrics present, and a rerun that resumes from the token cache
//! with identical results.

mod common;

use std::path::Path;

use common::*;
use mri_ad::formats::nifti::{read_volume, write_volume};

fn read_npy_f32(path: &Path) -> Vec<f32> {
    let file = std::fs::File::open(path).unwrap();
    let a: ndarray::Array1<f32> = ndarray_npy::ReadNpyExt::read_npy(file).unwrap();
    a.to_vec()
}

/// Decodes a PNG and returns (width, height, RGB bytes); panics with the file name when it does not decode.
fn png_rgb(path: &Path) -> (u32, u32, Vec<u8>) {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut reader = png::Decoder::new(std::io::BufReader::new(file))
        .read_info()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    buf.truncate(info.buffer_size());
    (info.width, info.height, buf)
}

/// The plots and the index page of a volume run: every file decodes, has a plausible size and is not blank,
/// and the page names every case and links its QC montage and map.
fn check_plots(out: &Path, ids: &[&str], with_labels: bool) {
    let mut files = vec!["histogram.png", "scaling.png", "graph.png"];
    if with_labels {
        files.push("roc.png");
    }
    let mut pngs: Vec<std::path::PathBuf> =
        files.iter().map(|f| out.join("plots").join(f)).collect();
    pngs.extend(ids.iter().map(|id| out.join(format!("plots/qc/{id}.png"))));
    for p in &pngs {
        let (w, h, px) = png_rgb(p);
        assert!(w >= 300 && h >= 200, "{}: {w}×{h}", p.display());
        let distinct: std::collections::BTreeSet<&[u8]> = px.chunks(3).collect();
        assert!(
            distinct.len() > 20,
            "{}: {} colours",
            p.display(),
            distinct.len()
        );
    }
    assert_eq!(out.join("plots/roc.png").exists(), with_labels);
    let page = std::fs::read_to_string(out.join("index.html")).unwrap();
    for id in ids {
        assert!(
            page.contains(&format!("<td>{id}</td>")),
            "{id} in index.html"
        );
        assert!(page.contains(&format!("plots/qc/{id}.png")));
        assert!(page.contains(&format!("maps/{id}_anomaly.nii.gz")));
    }
    for f in &files {
        assert!(
            page.contains(&format!("src=\"plots/{f}\"")),
            "{f} in index.html"
        );
    }
}

#[test]
fn score_on_volumes_writes_maps_on_the_input_grid_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let (healthy, query, labels) = (
        dir.path().join("h"),
        dir.path().join("q"),
        dir.path().join("l"),
    );
    write_cohort(&healthy, &query, &labels, 4, 10..13);
    let model = tiny_model(0);
    let out = dir.path().join("run");
    let args: Vec<&str> = [
        "score",
        "--healthy",
        s(&healthy),
        "--query",
        s(&query),
        "--labels",
        s(&labels),
        "--out",
        s(&out),
    ]
    .into_iter()
    .chain(tiny_backbone(s(&model), "28"))
    .chain(["--threads", "1", "--no-progress"])
    .collect();
    ok(&run_mri_ad(&args));

    let csv = std::fs::read_to_string(out.join("scores.csv")).unwrap();
    let rows: Vec<&str> = csv.lines().skip(1).collect();
    assert_eq!(rows.len(), 7, "{csv}");
    assert!(
        rows.iter()
            .filter(|r| r.contains(",healthy,"))
            .all(|r| r.split(',').nth(4) == Some("0")),
        "{csv}"
    );
    assert!(
        rows.iter()
            .filter(|r| r.contains(",query,"))
            .all(|r| r.split(',').nth(4) == Some("1")),
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
    // Every written map and mask opens in SimpleITK with its input's size, spacing, origin and direction.
    let code = format!(
        "import SimpleITK as sitk, numpy as np, glob, os\n\
         n = 0\n\
         for d in [{h:?}, {q:?}]:\n\
         \x20   for f in sorted(glob.glob(os.path.join(d, '*.nii.gz'))):\n\
         \x20       case = os.path.basename(f)[:-7]\n\
         \x20       a = sitk.ReadImage(f)\n\
         \x20       for o in [os.path.join({o:?}, 'maps', case + '_anomaly.nii.gz'), os.path.join({o:?}, 'masks', case + '_mask.nii.gz')]:\n\
         \x20           b = sitk.ReadImage(o)\n\
         \x20           assert a.GetSize() == b.GetSize(), o\n\
         \x20           for x, y in [(a.GetSpacing(), b.GetSpacing()), (a.GetOrigin(), b.GetOrigin()), (a.GetDirection(), b.GetDirection())]:\n\
         \x20               assert np.allclose(x, y, atol=1e-4), (o, x, y)\n\
         \x20           n += 1\n\
         print(n)\n",
        h = s(&healthy),
        q = s(&query),
        o = s(&out)
    );
    assert_eq!(
        run_python(&["-c", &code]).trim(),
        "14",
        "maps and masks checked in SimpleITK"
    );

    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    let m = &summary["metrics"];
    for key in [
        "patient_auroc",
        "patient_f1_max",
        "voxel_auroc",
        "dice_mean",
        "dice_threshold",
        "hottest_voxel_in_lesion_fraction",
    ] {
        assert!(m[key].as_f64().is_some(), "{key} missing: {m}");
    }
    assert_eq!(m["dice_per_case"].as_object().unwrap().len(), 7);
    // The supplementary Dice at the voxel-level F1-max threshold: one per case, their mean reported.
    let dv = m["dice_at_voxel_threshold_per_case"].as_object().unwrap();
    assert_eq!(dv.len(), 7, "{m}");
    let mean = dv.values().map(|v| v.as_f64().unwrap()).sum::<f64>() / 7.0;
    assert!((m["dice_at_voxel_threshold_mean"].as_f64().unwrap() - mean).abs() < 1e-12);
    assert!(
        (0.0..=1.0).contains(&m["voxel_f1_max"].as_f64().unwrap()),
        "{m}"
    );
    assert!(m["voxel_f1_threshold"].as_f64().is_some(), "{m}");
    let td = m["token_dice_per_case"].as_object().unwrap();
    assert_eq!(td.len(), 7, "{m}");
    let mean = td.values().map(|v| v.as_f64().unwrap()).sum::<f64>() / 7.0;
    assert!((m["token_dice_mean"].as_f64().unwrap() - mean).abs() < 1e-12);
    // The cube-space metrics recomputed from the inputs and token scores by scripts/oracles/ref_run_metrics.py
    // (numpy/scipy/nibabel/scikit-learn; mri-ad's cube geometry, exact voxel F1-max).
    let reference: serde_json::Value =
        serde_json::from_str(run_script("oracles/ref_run_metrics.py", &["--run", s(&out)]).trim())
            .unwrap();
    let near = |a: &serde_json::Value, b: &serde_json::Value, tol: f64, what: &str| {
        let (a, b) = (a.as_f64().unwrap(), b.as_f64().unwrap());
        assert!((a - b).abs() <= tol, "{what}: mri-ad {a}, reference {b}");
    };
    near(
        &m["dice_threshold"],
        &reference["dice_threshold"],
        1e-6,
        "t*",
    );
    for id in ["h0", "h1", "h2", "h3", "q0", "q1", "q2"] {
        if id.starts_with('q') {
            assert!(
                reference["lesion_voxels"][id].as_u64().unwrap() > 0,
                "{id}: {reference}"
            );
        }
        for key in ["dice_per_case", "token_dice_per_case"] {
            near(
                &m[key][id],
                &reference[key][id],
                1e-6,
                &format!("{key} {id}"),
            );
        }
        // The run's voxel threshold is the lower edge of a 2^20-bin histogram bin, the reference's exact.
        near(
            &m["dice_at_voxel_threshold_per_case"][id],
            &reference["dice_at_voxel_threshold_per_case"][id],
            1e-3,
            &format!("Dice at the voxel threshold {id}"),
        );
    }
    near(
        &m["voxel_f1_threshold"],
        &reference["voxel_f1_threshold"],
        1e-5,
        "voxel F1 threshold",
    );
    near(
        &m["voxel_f1_max"],
        &reference["voxel_f1_max"],
        1e-3,
        "voxel F1-max",
    );
    // A healthy case's Dice is 1 exactly when nothing is predicted, i.e. when its largest token score is
    // below the threshold (at 28³ the token values are the maps' corner voxels, so the map's maximum is the
    // largest token score): the §8.3 and token Dice at t*, the other at the voxel threshold.
    let (t_star, t_voxel) = (
        m["dice_threshold"].as_f64().unwrap(),
        m["voxel_f1_threshold"].as_f64().unwrap(),
    );
    for id in ["h0", "h1", "h2", "h3"] {
        let top = read_npy_f32(&out.join(format!("token_scores/{id}.npy")))
            .into_iter()
            .fold(f32::MIN, f32::max) as f64;
        let clean = |t: f64| if top < t { 1.0 } else { 0.0 };
        assert_eq!(m["dice_per_case"][id].as_f64(), Some(clean(t_star)), "{id}");
        assert_eq!(
            m["token_dice_per_case"][id].as_f64(),
            Some(clean(t_star)),
            "{id}"
        );
        assert_eq!(
            m["dice_at_voxel_threshold_per_case"][id].as_f64(),
            Some(clean(t_voxel)),
            "{id}"
        );
    }
    // Per-case voxel AP: one per lesion case (the three query cases), a probability.
    let ap = m["voxel_ap_per_case"].as_object().unwrap();
    assert_eq!(ap.keys().collect::<Vec<_>>(), ["q0", "q1", "q2"], "{m}");
    assert!(ap
        .values()
        .all(|v| (0.0..=1.0).contains(&v.as_f64().unwrap())));
    let mean = ap.values().map(|v| v.as_f64().unwrap()).sum::<f64>() / 3.0;
    assert!((m["voxel_ap_mean_lesion_cases"].as_f64().unwrap() - mean).abs() < 1e-12);
    // The hottest voxel's distance to the lesion (in cube voxels, within the 28³ cube's diagonal), one per
    // lesion case; "in the lesion" is defined from it (distance 0), and eval::distance_to_mask is unit-tested.
    let dist = m["hottest_voxel_distance"].as_object().unwrap();
    assert_eq!(dist.keys().collect::<Vec<_>>(), ["q0", "q1", "q2"], "{m}");
    for (case, d) in dist {
        let d = d.as_f64().unwrap();
        assert!((0.0..28.0 * 3f64.sqrt()).contains(&d), "{case}: {d}");
    }
    assert_eq!(summary["backbone"]["computed"], 7);
    assert_eq!(
        summary["backbone"]["token_providers"],
        serde_json::json!({"CPUExecutionProvider": 7})
    );
    assert_eq!(summary["crop"]["mode"], "batch");
    assert!(
        summary["crop"]["batch_box"]["lo"].is_array(),
        "{}",
        summary["crop"]
    );
    assert_eq!(
        summary["backbone"]["model_sha256"].as_str().map(str::len),
        Some(64)
    );
    let ids = ["h0", "h1", "h2", "h3", "q0", "q1", "q2"];
    check_plots(&out, &ids, true);
    // No label contour (green) on the healthy cases' montages. (Whether a lesion case shows one depends on
    // the slices through its hottest voxel meeting the lesion, which the tiny random ViT does not ensure
    // here; the contour itself is checked in report::plots::qc's unit test.)
    for id in &ids[..4] {
        let (_, _, px) = png_rgb(&out.join(format!("plots/qc/{id}.png")));
        assert!(!px.chunks(3).any(|p| p == [0, 230, 0]), "{id}");
    }
    let scaling = &summary["scoring"]["similarity_scaling"];
    assert_eq!(scaling["ranks"].as_array().unwrap().len(), 5, "{scaling}");
    let before = std::fs::read(out.join("scores.csv")).unwrap();
    let first_metrics = summary["metrics"].clone();

    // `eval` recomputes the same metrics from the finished run.
    let eval = |run: &Path| -> serde_json::Value {
        ok(&run_mri_ad(&[
            "eval",
            "--run",
            s(run),
            "--labels",
            s(&labels),
            "--quiet",
        ]));
        serde_json::from_slice(&std::fs::read(run.join("eval.json")).unwrap()).unwrap()
    };
    assert_eq!(eval(&out)["metrics"], summary["metrics"]);
    // One volume at a time gives the same metrics; a zero memory budget is refused, naming the flag.
    let eval_with = |extra: &[&str]| {
        run_mri_ad(
            &[
                &["eval", "--run", s(&out), "--labels", s(&labels), "--quiet"],
                extra,
            ]
            .concat(),
        )
    };
    ok(&eval_with(&["--threads", "1"]));
    let one: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("eval.json")).unwrap()).unwrap();
    assert_eq!(one["metrics"], summary["metrics"]);
    let o = eval_with(&["--memory-budget", "0"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--memory-budget"), "{}", stderr(&o));
    // The maps put each token's score at its block's centre by default, and eval reads that back. A run
    // from before the setting existed (no `maps` in summary.json) was made with align-corners, and eval
    // evaluates it so: other per-case voxel APs from the same token scores.
    assert_eq!(summary["maps"]["upsample"], "centres");
    assert!(std::fs::read_to_string(out.join("config.toml"))
        .unwrap()
        .contains("upsample = \"centres\""));
    let old_dir = dir.path().join("run-before-upsample");
    std::fs::create_dir(&old_dir).unwrap();
    let mut old = summary.clone();
    old.as_object_mut().unwrap().remove("maps");
    std::fs::write(old_dir.join("summary.json"), old.to_string()).unwrap();
    std::fs::create_dir(old_dir.join("token_scores")).unwrap();
    for f in std::fs::read_dir(out.join("token_scores")).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(
            &f,
            old_dir.join("token_scores").join(f.file_name().unwrap()),
        )
        .unwrap();
    }
    let corners = eval(&old_dir);
    assert_eq!(
        corners["metrics"]["patient_auroc"],
        summary["metrics"]["patient_auroc"]
    );
    assert_ne!(
        corners["metrics"]["voxel_ap_per_case"],
        summary["metrics"]["voxel_ap_per_case"]
    );

    // The run's config.toml, given back as --config with no backbone or scoring flag, reproduces the run:
    // it holds the backbone and preprocessing keys (size 28, layers 2,4, proj-dim 16, the model) too.
    let config = std::fs::read_to_string(out.join("config.toml")).unwrap();
    assert!(
        config.contains("size = 28") && config.contains("proj-dim = 16"),
        "{config}"
    );
    let again_out = dir.path().join("run-from-config");
    let config_path = out.join("config.toml");
    // The inputs of the first run (up to its --out), then only the config file.
    assert_eq!(args[7], "--out");
    let from_config = [
        &args[..7],
        &[
            "--out",
            s(&again_out),
            "--config",
            s(&config_path),
            "--no-progress",
            "--no-plots",
        ],
    ]
    .concat();
    ok(&run_mri_ad(&from_config));
    for id in ["h0", "q0", "q2"] {
        let f = format!("token_scores/{id}.npy");
        assert_eq!(
            std::fs::read(out.join(&f)).unwrap(),
            std::fs::read(again_out.join(&f)).unwrap(),
            "{f}"
        );
    }

    // Without --labels the masks come from the label-free GMM threshold (ALGORITHM.md §9), one per volume.
    let out3 = dir.path().join("run3");
    // With align-corners maps: on this test's 2³ token grid, centres leaves a 7³-voxel plateau at each
    // token's value, and the top plateau can lie wholly in the 5 % tail that §9 truncates, which puts τ
    // above the map's maximum (an empty mask, correctly) and would make the check below moot.
    let unlabeled: Vec<&str> = args
        .iter()
        .copied()
        .filter(|a| *a != "--labels" && *a != s(&labels))
        .map(|a| if a == s(&out) { s(&out3) } else { a })
        .chain(["--upsample", "corners"])
        .collect();
    ok(&run_mri_ad(&unlabeled));
    let free: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out3.join("summary.json")).unwrap()).unwrap();
    assert_eq!(free["maps"]["upsample"], "corners");
    let per_case = free["masks"]["per_case"]
        .as_object()
        .expect("GMM thresholds per case");
    assert_eq!(per_case.len(), 7, "{}", free["masks"]);
    for (case, fit) in per_case {
        let tau = fit["tau"].as_f64().unwrap();
        let token_scores = read_npy_f32(&out3.join(format!("token_scores/{case}.npy")));
        let max = token_scores.iter().copied().fold(f32::MIN, f32::max) as f64;
        assert!(
            tau.is_finite() && tau < max,
            "{case}: tau {tau}, max score {max}"
        );
        let mask = read_volume(&out3.join(format!("masks/{case}_mask.nii.gz"))).unwrap();
        let on = mask.data.iter().filter(|&&v| v > 0.0).count();
        assert!(on > 0 && on < mask.data.len() / 2, "{case}: {on} voxels on");
    }

    // The same command again, with three worker threads instead of one, resumes: no token is recomputed,
    // and the results, maps, masks and QC montages are byte-identical (the volume stages work on cases in
    // parallel).
    let mut files = vec!["nyul.json".to_string()];
    for id in ["h0", "h1", "h2", "h3", "q0", "q1", "q2"] {
        files.push(format!("maps/{id}_anomaly.nii.gz"));
        files.push(format!("masks/{id}_mask.nii.gz"));
        files.push(format!("plots/qc/{id}.png"));
    }
    let outputs = |dir: &Path| -> Vec<Vec<u8>> {
        files
            .iter()
            .map(|f| std::fs::read(dir.join(f)).unwrap())
            .collect()
    };
    let one_thread = outputs(&out);
    // Removed first, so that a file the second run failed to write cannot pass as the first run's.
    for f in &files {
        std::fs::remove_file(out.join(f)).unwrap();
    }
    let threads = args.iter().position(|a| *a == "--threads").unwrap() + 1;
    assert_eq!(args[threads], "1");
    let mut three_threads = args.to_vec();
    three_threads[threads] = "3";
    ok(&run_mri_ad(&three_threads));
    assert!(
        outputs(&out) == one_thread,
        "outputs differ with --threads 3"
    );
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["backbone"]["computed"], 0);
    assert_eq!(summary["backbone"]["reused"], 7);
    // reused token files still report the provider that made them (recorded in their sidecars)
    assert_eq!(summary["backbone"]["provider"], serde_json::Value::Null);
    assert_eq!(
        summary["backbone"]["token_providers"],
        serde_json::json!({"CPUExecutionProvider": 7})
    );
    assert_eq!(std::fs::read(out.join("scores.csv")).unwrap(), before);
    assert_eq!(summary["metrics"], first_metrics);
    check_plots(&out, &ids, true);

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

    // A missing model is refused before the run folder exists.
    let mut no_model = bad.clone();
    let pos = no_model.iter().position(|a| *a == s(&model)).unwrap();
    no_model[pos] = "/nonexistent/model.onnx";
    std::fs::remove_file(query.join("q9.nii.gz")).unwrap();
    let o = run_mri_ad(&no_model);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--model") && err.contains("/nonexistent/model.onnx"),
        "{err}"
    );
    assert!(!out2.exists(), "{err}");
    write_volume(&query.join("q9.nii.gz"), &volume(19, true).0, &AFFINE).unwrap();

    // A `score --tokens` run folder is a run folder too: the same command again needs no --force.
    let tok_run = dir.path().join("tokens-run");
    for _ in 0..2 {
        ok(&run_mri_ad(&[
            "score",
            "--tokens",
            s(&out.join("tokens")),
            "--out",
            s(&tok_run),
            "--no-progress",
            "--no-plots",
        ]));
    }

    // A volume on another grid cannot share the batch crop box: exit 2, naming it and `--crop volume`.
    std::fs::remove_file(query.join("q9.nii.gz")).unwrap();
    let mut other = AFFINE;
    other[0][3] += 7.0;
    write_volume(&healthy.join("h9.nii.gz"), &volume(9, false).0, &other).unwrap();
    let o = run_mri_ad(&bad);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("h9") && err.contains("--crop volume"), "{err}");
    assert!(!out2.exists(), "{err}");
}

/// A run killed during extraction, rerun with the same arguments, resumes from the token cache and gives
/// the same results as an uninterrupted run.
#[test]
fn an_interrupted_run_resumes_with_identical_results() {
    let dir = tempfile::tempdir().unwrap();
    let query = dir.path().join("q");
    std::fs::create_dir_all(&query).unwrap();
    for i in 0..6 {
        write_volume(
            &query.join(format!("v{i}.nii.gz")),
            &volume(30 + i, i % 2 == 0).0,
            &AFFINE,
        )
        .unwrap();
    }
    let model = tiny_model(0);
    let args = |out: &Path| -> Vec<String> {
        ["score", "--query", s(&query), "--out", s(out)]
            .into_iter()
            .chain(tiny_backbone(s(&model), "112"))
            .chain(["--threads", "1", "--no-progress"])
            .map(String::from)
            .collect()
    };
    let full = dir.path().join("full");
    let full_args = args(&full);
    ok(&run_mri_ad(
        &full_args.iter().map(String::as_str).collect::<Vec<_>>(),
    ));
    check_plots(&full, &["v0", "v1", "v2", "v3", "v4", "v5"], false);

    let cut = dir.path().join("cut");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mri-ad"))
        .args(args(&cut))
        .env("ORT_DYLIB_PATH", ort_lib())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let tokens = cut.join("tokens");
    // Complete cases: a token file and its sidecar (the sidecar is written second).
    let count = || {
        std::fs::read_dir(&tokens)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".tokens.json"))
                    .count()
            })
            .unwrap_or(0)
    };
    let start = std::time::Instant::now();
    while count() == 0 && start.elapsed().as_secs() < 60 {
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let done = count();
    assert!(
        (1..6).contains(&done),
        "the kill must land during extraction ({done} of 6 token files)"
    );
    assert!(!cut.join("scores.csv").exists());

    let mut resume = args(&cut);
    resume.push("--no-plots".into());
    let log = ok(&run_mri_ad(
        &resume.iter().map(String::as_str).collect::<Vec<_>>(),
    ));
    // --no-plots: no plots/, and index.html links none.
    assert!(!cut.join("plots").exists());
    let page = std::fs::read_to_string(cut.join("index.html")).unwrap();
    assert!(
        page.contains("<td>v3</td>") && !page.contains("plots/"),
        "{page}"
    );
    // The complete cases are reused (a case killed between its token file and its sidecar is recomputed).
    assert!(
        log.contains(&format!("{} computed, {done} reused", 6 - done)),
        "{log}"
    );
    for file in ["scores.csv", "graph.json"] {
        assert_eq!(
            std::fs::read(cut.join(file)).unwrap(),
            std::fs::read(full.join(file)).unwrap(),
            "{file} differs from the uninterrupted run"
        );
    }
    for i in 0..6 {
        let f = format!("maps/v{i}_anomaly.nii.gz");
        assert_eq!(
            std::fs::read(cut.join(&f)).unwrap(),
            std::fs::read(full.join(&f)).unwrap(),
            "{f}"
        );
    }
}

/// Runs `mri-ad` in the folder `cwd`.
fn run_in(cwd: &Path, args: &[&str]) -> std::process::Output {
    mri_ad()
        .args(args)
        .current_dir(cwd)
        .env("ORT_DYLIB_PATH", ort_lib())
        .output()
        .expect("cannot run mri-ad")
}

/// Mistakes are caught before the run folder exists; a run folder is not overwritten by a run of other
/// inputs or settings without --force, and with it keeps nothing stale; `eval` finds a run's inputs from
/// any folder; label maps that match no case are named.
#[test]
fn mistakes_stop_before_the_run_folder_and_other_runs_are_not_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("elsewhere")).unwrap();
    write_cohort(&root.join("h"), &root.join("q"), &root.join("l"), 3, 20..22);
    let model = tiny_model(0);
    let base: Vec<&str> = [
        "score",
        "--healthy",
        "h",
        "--query",
        "q",
        "--labels",
        "l",
        "--out",
        "run",
    ]
    .into_iter()
    .chain(tiny_backbone(s(&model), "28"))
    .chain(["--no-progress", "--no-plots"])
    .collect();
    let with = |extra: &[&'static str]| -> Vec<&str> {
        let mut a: Vec<&str> = base.to_vec();
        a.extend_from_slice(extra);
        a
    };
    let refused = |args: &[&str], needles: &[&str]| {
        let o = run_in(root, args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        for n in needles {
            assert!(err.contains(n), "{n:?} not in: {err}");
        }
        err
    };

    // A block the model does not export, and a file that is not a model: refused, nothing written.
    let mut bad_layers = base.to_vec();
    let pos = bad_layers.iter().position(|a| *a == "2,4").unwrap();
    bad_layers[pos] = "2,7";
    refused(&bad_layers, &["--layers", "block 7"]);
    std::fs::write(root.join("not-a-model.onnx"), b"not a model").unwrap();
    let mut bad_model = base.to_vec();
    let pos = bad_model.iter().position(|a| *a == s(&model)).unwrap();
    bad_model[pos] = "not-a-model.onnx";
    refused(&bad_model, &["not-a-model.onnx", "cannot load the model"]);
    assert!(!root.join("run").exists());

    // A label map on another grid, then a truncated one: refused before any token is computed.
    let good_label = std::fs::read(root.join("l/q1.nii.gz")).unwrap();
    write_volume(
        &root.join("l/q1.nii.gz"),
        &volume(21, true)
            .1
            .slice(ndarray::s![..35, .., ..])
            .to_owned(),
        &AFFINE,
    )
    .unwrap();
    refused(&base, &["l/q1.nii.gz", "voxel grid", "q/q1.nii.gz"]);
    let plain = mri_ad::formats::nifti::read_volume(&root.join("l/q0.nii.gz")).unwrap();
    write_volume(&root.join("l/q1.nii"), &plain.data, &AFFINE).unwrap();
    std::fs::remove_file(root.join("l/q1.nii.gz")).unwrap();
    let bytes = std::fs::read(root.join("l/q1.nii")).unwrap();
    std::fs::write(root.join("l/q1.nii"), &bytes[..bytes.len() / 2]).unwrap();
    refused(&base, &["l/q1.nii", "truncated"]);
    assert!(!root.join("run").exists());
    std::fs::remove_file(root.join("l/q1.nii")).unwrap();
    std::fs::write(root.join("l/q1.nii.gz"), &good_label).unwrap();
    // --labels naming the query folder itself says so.
    let mut same = base.to_vec();
    let pos = same.iter().position(|a| *a == "l").unwrap();
    same[pos] = "q";
    refused(&same, &["--labels names the --query folder itself"]);

    // An image given as a label map is named (every value > 0 would count as lesion).
    let mut image_labels = base.to_vec();
    let pos = image_labels.iter().position(|a| *a == "l").unwrap();
    std::fs::create_dir_all(root.join("limg")).unwrap();
    for i in 0..2 {
        let (vol, _) = volume(20 + i, true);
        write_volume(
            &root.join(format!("limg/q{i}.nii.gz")),
            &(vol * 1.37),
            &AFFINE,
        )
        .unwrap();
    }
    image_labels[pos] = "limg";
    let pos = image_labels.iter().position(|a| *a == "run").unwrap();
    image_labels[pos] = "run-limg";
    let err = ok(&run_in(root, &image_labels));
    assert!(
        err.contains("limg/q0.nii.gz") && err.contains("rather than a label map"),
        "{err}"
    );

    // A label map that matches no case is named; the run goes on.
    std::fs::copy(root.join("l/q0.nii.gz"), root.join("l/q7.nii.gz")).unwrap();
    let err = ok(&run_in(root, &base));
    assert!(
        err.contains("l/q7.nii.gz") && err.contains("no case's label map"),
        "{err}"
    );
    assert!(
        !err.contains("rather than a label map"),
        "real labels: {err}"
    );
    std::fs::remove_file(root.join("l/q7.nii.gz")).unwrap();
    let run = root.join("run");
    let summary = std::fs::read(run.join("summary.json")).unwrap();
    let scores = std::fs::read(run.join("scores.csv")).unwrap();

    // Another setting into the same folder: refused, naming it, and the run is left as it was.
    let err = refused(
        &with(&["--method", "musc"]),
        &["--method", "codegraph", "musc", "--force"],
    );
    assert!(err.contains("another run"), "{err}");
    assert!(std::fs::read(run.join("summary.json")).unwrap() == summary);
    // A mistake given with --force costs nothing: every check comes before the earlier results go.
    for (bad, needle) in [
        (&["--force", "--graph-views", "5"][..], "--graph-views"),
        (&["--force", "--divide", "4"], "--divide"),
        (
            &["--force", "--nyul", "l/q0.nii.gz"],
            "not a Nyúl landmarks file",
        ),
        (&["--force", "--layers", "2,7"], "block 7"),
        (
            &["--force", "--crop", "volume", "--labels", "run/masks"],
            "lies in masks",
        ),
    ] {
        let mut args = with(bad);
        if bad.contains(&"--layers") {
            // the token cache exists, so the backbone is loaded only when the cache key differs
            let pos = args.iter().position(|a| *a == "2,4").unwrap();
            args.remove(pos);
            args.remove(pos - 1);
        }
        if bad.contains(&"--labels") {
            // an input inside the outputs this run would remove
            let pos = args.iter().position(|a| *a == "l").unwrap();
            args.remove(pos);
            args.remove(pos - 1);
        }
        let o = run_in(root, &args);
        assert_eq!(o.status.code(), Some(2), "{bad:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(needle), "{bad:?}: {}", stderr(&o));
        assert!(
            std::fs::read(run.join("summary.json")).unwrap() == summary,
            "{bad:?}: summary.json changed"
        );
    }
    // Settings that change no result still resume.
    let err = ok(&run_in(
        root,
        &with(&["--threads", "1", "--memory-budget", "4096"]),
    ));
    assert!(err.contains("up to date, reused"), "{err}");
    assert_eq!(std::fs::read(run.join("scores.csv")).unwrap(), scores);
    // Inputs are compared by content: the same files elsewhere resume; a file replaced in place does not.
    for d in ["h", "q", "l"] {
        std::fs::create_dir_all(root.join("moved").join(d)).unwrap();
        for e in std::fs::read_dir(root.join(d)).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), root.join("moved").join(d).join(e.file_name())).unwrap();
        }
    }
    let mut moved = base.to_vec();
    for (flag, d) in [
        ("--healthy", "moved/h"),
        ("--query", "moved/q"),
        ("--labels", "moved/l"),
    ] {
        let pos = moved.iter().position(|a| *a == flag).unwrap() + 1;
        moved[pos] = d;
    }
    let err = ok(&run_in(root, &moved));
    assert!(err.contains("up to date, reused"), "{err}");
    assert_eq!(std::fs::read(run.join("scores.csv")).unwrap(), scores);
    let h0 = std::fs::read(root.join("moved/h/h0.nii.gz")).unwrap();
    write_volume(
        &root.join("moved/h/h0.nii.gz"),
        &volume(5, false).0,
        &AFFINE,
    )
    .unwrap();
    refused(&moved, &["other file contents", "h0"]);
    std::fs::write(root.join("moved/h/h0.nii.gz"), h0).unwrap();
    // With --crop volume every volume is still read whole before the earlier results can go.
    let q1 = std::fs::read(root.join("moved/q/q1.nii.gz")).unwrap();
    std::fs::write(root.join("moved/q/q1.nii.gz"), &q1[..q1.len() / 2]).unwrap();
    let mut cropped = moved.clone();
    cropped.extend(["--crop", "volume", "--force"]);
    let before = std::fs::read(run.join("summary.json")).unwrap();
    refused(&cropped, &["moved/q/q1.nii.gz", "truncated"]);
    assert!(std::fs::read(run.join("summary.json")).unwrap() == before);
    std::fs::write(root.join("moved/q/q1.nii.gz"), q1).unwrap();

    // An unfinished run of other settings has no results to lose: the corrected command needs no --force.
    let unfinished = root.join("unfinished");
    std::fs::create_dir_all(&unfinished).unwrap();
    std::fs::write(
        unfinished.join(".mri-ad-run"),
        r#"{"request": {"inputs": [], "settings": {"method": "musc"}}}"#,
    )
    .unwrap();
    std::fs::write(unfinished.join("scores.csv"), "stale").unwrap();
    std::fs::create_dir_all(unfinished.join("maps")).unwrap();
    std::fs::write(unfinished.join("maps/zz_anomaly.nii.gz"), "stale").unwrap();
    let mut to_unfinished = base.to_vec();
    let pos = to_unfinished.iter().position(|a| *a == "run").unwrap();
    to_unfinished[pos] = "unfinished";
    ok(&run_in(root, &to_unfinished));
    assert!(!unfinished.join("maps/zz_anomaly.nii.gz").exists());
    // A finished run that recorded no request (an earlier mri-ad, or score2d) needs --force.
    std::fs::write(unfinished.join(".mri-ad-run"), "mri-ad run folder\n").unwrap();
    refused(&to_unfinished, &["not recorded", "--force"]);
    let mut forced = to_unfinished.clone();
    forced.push("--force");
    ok(&run_in(root, &forced));

    // Eval from another folder: the run recorded absolute paths.
    let o = run_in(
        &root.join("elsewhere"),
        &[
            "eval",
            "--run",
            s(&run),
            "--labels",
            s(&root.join("l")),
            "--no-progress",
        ],
    );
    ok(&o);
    let o = run_in(
        root,
        &["eval", "--run", "h", "--labels", "l", "--no-progress"],
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--run") && err.contains("not a run folder"),
        "{err}"
    );

    // Other inputs with --force: the earlier run's outputs go first, so no map of a case that left the
    // batch remains; the token cache stays.
    assert!(run.join("maps/q1_anomaly.nii.gz").is_file());
    std::fs::remove_file(root.join("q/q1.nii.gz")).unwrap();
    write_volume(&root.join("h/h3.nii.gz"), &volume(3, false).0, &AFFINE).unwrap();
    refused(
        &base,
        &["cases no longer given: q1; new cases: h3", "--force"],
    );
    ok(&run_in(root, &with(&["--force"])));
    assert!(!run.join("maps/q1_anomaly.nii.gz").exists());
    assert!(run.join("maps/h3_anomaly.nii.gz").is_file());
    assert!(
        run.join("tokens/q1.tokens.npz").is_file(),
        "token cache kept"
    );
    let csv = std::fs::read_to_string(run.join("scores.csv")).unwrap();
    assert!(csv.contains("h3") && !csv.contains("q1"), "{csv}");
}

/// A labelled phantom cohort in `dir` (h/, q/, l/) and the arguments of `score` on it into an output folder,
/// with the tiny random ViT at cube edge `size`.
struct TinyCohort {
    healthy: std::path::PathBuf,
    query: std::path::PathBuf,
    labels: std::path::PathBuf,
    model: std::path::PathBuf,
    size: &'static str,
}

impl TinyCohort {
    fn new(
        dir: &Path,
        n_healthy: u64,
        query_seeds: std::ops::Range<u64>,
        size: &'static str,
    ) -> Self {
        let c = TinyCohort {
            healthy: dir.join("h"),
            query: dir.join("q"),
            labels: dir.join("l"),
            model: tiny_model(0),
            size,
        };
        write_cohort(&c.healthy, &c.query, &c.labels, n_healthy, query_seeds);
        c
    }

    /// `score` on the cohort into `out`, then `extra`.
    fn args(&self, out: &Path, extra: &[&str]) -> Vec<String> {
        [
            "score",
            "--healthy",
            s(&self.healthy),
            "--query",
            s(&self.query),
            "--labels",
            s(&self.labels),
            "--out",
            s(out),
        ]
        .into_iter()
        .chain(tiny_backbone(s(&self.model), self.size))
        .chain(["--threads", "1", "--no-progress"])
        .chain(extra.iter().copied())
        .map(String::from)
        .collect()
    }

    /// Runs `score` (see [`TinyCohort::args`]); returns its stderr, panicking when it fails.
    fn run(&self, out: &Path, extra: &[&str]) -> String {
        let args = self.args(out, extra);
        ok(&run_mri_ad(
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
        ))
    }
}

/// The run's page in headless Chromium (`scripts/oracles/check_page.py`): no console error, every image
/// decodes and is shown at its drawn size, every linked file exists, the command that ran and the glossary
/// are there. Negative control: a QC montage that does not decode fails the check, naming it.
#[test]
fn the_page_reads_in_a_browser_and_another_method_reuses_the_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let cohort = TinyCohort::new(dir.path(), 3, 10..12, "28");
    let run = |out: &Path, extra: &[&str]| cohort.run(out, extra);
    let first = dir.path().join("codegraph");
    run(&first, &[]);
    let shot = dir.path().join("page.png");
    let report = check_page(&first, &shot);
    assert!(report["images"].as_u64().unwrap() >= 5 + 4, "{report}");
    assert!(std::fs::metadata(&shot).unwrap().len() > 10_000);
    let page = std::fs::read_to_string(first.join("index.html")).unwrap();
    assert!(
        page.contains("--labels") && page.contains("Glossary"),
        "the command and glossary"
    );

    std::fs::write(first.join("plots/qc/q0.png"), b"not a png").unwrap();
    let out = std::process::Command::new(python())
        .arg(root().join("scripts/oracles/check_page.py"))
        .args([s(&first), "--chromium", s(&chromium())])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("plots/qc/q0.png did not load or decode"),
        "{text}"
    );

    // MuSc on the same batch takes every token file from the first run (copied, not recomputed).
    let second = dir.path().join("musc");
    let log = run(&second, &["--method", "musc", "--reuse-tokens", s(&first)]);
    assert_eq!(log.matches("up to date, reused").count(), 5, "{log}");
    for case in ["h0", "h1", "h2", "q0", "q1"] {
        let f = format!("tokens/{case}.tokens.npz");
        assert_eq!(
            std::fs::read(first.join(&f)).unwrap(),
            std::fs::read(second.join(&f)).unwrap(),
            "{f}"
        );
    }
    // A folder without token files is refused, naming the flag.
    let o = run_mri_ad(&[
        "score",
        "--query",
        s(&cohort.query),
        "--out",
        s(&dir.path().join("third")),
        "--reuse-tokens",
        s(&cohort.healthy),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--reuse-tokens"), "{}", stderr(&o));
}

/// Two runs into one folder at once: the second is refused at once (exit 2, naming the first's process)
/// and the first finishes with the outputs of a lone run. A lock left by a killed run is taken over.
#[test]
fn a_second_run_into_a_folder_in_use_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let cohort = TinyCohort::new(dir.path(), 4, 10..13, "56");
    let args = |out: &Path| cohort.args(out, &[]);
    let shared = dir.path().join("shared");
    let ort = ort_lib();
    let mut first = mri_ad()
        .args(args(&shared))
        .env("ORT_DYLIB_PATH", &ort)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let lock = shared.join(".mri-ad-lock");
    let t0 = std::time::Instant::now();
    while !lock.exists() {
        assert!(
            first.try_wait().unwrap().is_none(),
            "the first run ended before it locked"
        );
        assert!(t0.elapsed().as_secs() < 60, "no lock after 60 s");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let t1 = std::time::Instant::now();
    let second = mri_ad()
        .args(args(&shared))
        .env("ORT_DYLIB_PATH", &ort)
        .output()
        .unwrap();
    let refused_in = t1.elapsed();
    let still_running = first.try_wait().unwrap().is_none();
    let err = stderr(&second);
    assert_eq!(second.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("in use by process {}", first.id())),
        "{err}"
    );
    assert!(
        still_running,
        "the first run must still hold the folder when the second is refused"
    );
    assert!(
        refused_in.as_secs_f64() < 5.0,
        "refused after {refused_in:?}"
    );
    assert!(first.wait().unwrap().success());
    assert!(!lock.exists(), "the lock is removed when the run ends");

    let lone = dir.path().join("lone");
    cohort.run(&lone, &[]);
    for f in ["scores.csv", "graph.json", "maps/q0_anomaly.nii.gz"] {
        assert_eq!(
            std::fs::read(shared.join(f)).unwrap(),
            std::fs::read(lone.join(f)).unwrap(),
            "{f}"
        );
    }
    // A lock whose process is gone (a killed run) is taken over, with a notice.
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let pid = gone.id();
    gone.wait().unwrap();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    std::fs::write(
        &lock,
        serde_json::json!({"pid": pid, "start_ticks": 1, "host": host.trim()}).to_string(),
    )
    .unwrap();
    let log = cohort.run(&shared, &[]);
    assert!(log.contains("taking over the lock of process"), "{log}");
}

#[test]
fn extract_with_a_bank_prepares_new_volumes_as_the_banks_were() {
    let dir = tempfile::tempdir().unwrap();
    let cohort = TinyCohort::new(dir.path(), 4, 10..12, "28");
    let model = s(&cohort.model);
    let extract = |input: &Path, out: &Path, extra: &[&str]| {
        let mut args = vec!["extract", "--input", s(input), "--out", s(out), "--quiet"];
        args.extend_from_slice(extra);
        run_mri_ad(&args)
    };
    let (bank_tokens, bank) = (dir.path().join("ht"), dir.path().join("bank"));
    ok(&extract(
        &cohort.healthy,
        &bank_tokens,
        &tiny_backbone(model, cohort.size),
    ));
    ok(&run_mri_ad(&[
        "bank",
        "--tokens",
        s(&bank_tokens),
        "--out",
        s(&bank),
        "-q",
    ]));
    let with_bank = ["--bank", s(&bank), "--model", model, "--device", "cpu"];
    // A bank case extracted alone with --bank gets exactly the bank's tokens (same space, same Nyúl).
    let one = dir.path().join("one");
    std::fs::create_dir_all(&one).unwrap();
    std::fs::copy(cohort.healthy.join("h1.nii.gz"), one.join("h1.nii.gz")).unwrap();
    let one_tokens = dir.path().join("one-tokens");
    ok(&extract(&one, &one_tokens, &with_bank));
    assert_eq!(
        read_tokens(&one_tokens.join("h1.tokens.npz")),
        read_tokens(&bank_tokens.join("h1.tokens.npz"))
    );
    // New cases extracted with --bank are accepted by score --bank...
    let (query_tokens, run) = (dir.path().join("qt"), dir.path().join("run"));
    ok(&extract(&cohort.query, &query_tokens, &with_bank));
    ok(&run_mri_ad(&[
        "score",
        "--bank",
        s(&bank),
        "--tokens",
        s(&query_tokens),
        "--out",
        s(&run),
        "-q",
    ]));
    // ...while the same cases extracted on their own (their own batch box and Nyúl) are refused.
    let own = dir.path().join("own");
    ok(&extract(
        &cohort.query,
        &own,
        &tiny_backbone(model, cohort.size),
    ));
    let o = run_mri_ad(&[
        "score",
        "--bank",
        s(&bank),
        "--tokens",
        s(&own),
        "--out",
        s(&dir.path().join("r2")),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("`preprocessing`"), "{}", stderr(&o));
    // The bank sets the preparation: a flag for it, or another model, is refused naming the flag.
    let o = extract(
        &cohort.query,
        &dir.path().join("x"),
        &[&with_bank[..], &["--size", "56"]].concat(),
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--size"), "{}", stderr(&o));
    let other = tiny_model(1);
    let o = extract(
        &cohort.query,
        &dir.path().join("y"),
        &["--bank", s(&bank), "--model", s(&other)],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("--model") && stderr(&o).contains("SHA-256"),
        "{}",
        stderr(&o)
    );
}
