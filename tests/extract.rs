//! `mri-ad extract` end to end: the real binary, ONNX Runtime from the onnxruntime wheel, tiny random ViTs
//! made by scripts/fixtures/make_tiny_vit.py, and the independent Python reference scripts/oracles/ref_tokenizer.py.
//! Needs MRI_AD_PYTHON (scripts/test.sh sets it); fails loudly without it.

mod common;

use std::path::Path;
use std::time::SystemTime;

use common::*;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Common flags for a tiny run.
fn tiny_args<'a>(input: &'a str, out: &'a str, model: &'a str, size: &'a str) -> Vec<&'a str> {
    ["extract", "--input", input, "--out", out]
        .into_iter()
        .chain(tiny_backbone(model, size))
        .chain(["--seed", "3", "--threads", "1", "--no-progress"])
        .collect()
}

#[test]
fn parity_with_the_independent_python_reference() {
    let dir = tempfile::tempdir().unwrap();
    let (input, out) = (dir.path().join("in"), dir.path().join("out"));
    for seed in 0..2 {
        write_cube(&input, &format!("case{seed}"), &phantom(56, seed));
    }
    let model = tiny_model(0);
    let proj = dir.path().join("projection.npy");
    let mut args = tiny_args(s(&input), s(&out), s(&model), "56");
    args.extend(["--batch", "5", "--save-projection", s(&proj)]);
    let log = ok(&run_mri_ad(&args));
    assert!(log.contains("2 computed"), "{log}");
    for seed in 0..2 {
        let case = format!("case{seed}");
        let reference = dir.path().join(format!("{case}.ref.npz"));
        run_python(&[
            "scripts/oracles/ref_tokenizer.py",
            "--model",
            s(&model),
            "--input",
            s(&input.join(format!("{case}.npy"))),
            "--layers",
            "2,4",
            "--projection",
            s(&proj),
            "--out",
            s(&reference),
        ]);
        let (t, v, g) = read_tokens(&out.join(format!("{case}.tokens.npz")));
        let (rt, rv, rg) = read_tokens(&reference);
        assert_eq!(t.dim(), (2, 64, 48));
        assert_eq!(t.dim(), rt.dim());
        let diff = (&t - &rt).iter().fold(0f32, |m, x| m.max(x.abs()));
        println!("{case}: max abs diff Rust vs Python reference = {diff:.3e}");
        assert!(diff <= 1e-4, "{case}: max abs diff {diff}");
        assert_eq!(v, rv);
        assert_eq!(g, rg);
        assert_eq!(g, vec![4, 4, 4]);
        assert!(
            v.iter().any(|&x| x) && v.iter().any(|&x| !x),
            "the phantom has both brain and void tokens"
        );
    }
}

fn mtimes(out: &Path, cases: &[&str]) -> Vec<SystemTime> {
    cases
        .iter()
        .map(|c| {
            std::fs::metadata(out.join(format!("{c}.tokens.npz")))
                .unwrap()
                .modified()
                .unwrap()
        })
        .collect()
}

#[test]
fn cache_reuses_and_recomputes_exactly_the_affected_cases() {
    let dir = tempfile::tempdir().unwrap();
    let (input, out) = (dir.path().join("in"), dir.path().join("out"));
    let cases = ["a", "b", "c"];
    for (i, c) in cases.iter().enumerate() {
        write_cube(&input, c, &phantom(28, i as u64));
    }
    let model = tiny_model(0);
    let base = tiny_args(s(&input), s(&out), s(&model), "28");
    let log = ok(&run_mri_ad(&base));
    assert!(log.contains("3 computed, 0 reused"), "{log}");
    let before = mtimes(&out, &cases);
    std::thread::sleep(std::time::Duration::from_millis(20));

    // second run: no inference at all — it even succeeds without any ONNX Runtime library
    let log = ok(&mri_ad_env(
        &base,
        &[("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so")],
    ));
    assert!(
        log.contains("0 computed, 3 reused; 0 slices inferred"),
        "{log}"
    );
    assert!(
        !log.contains("device:"),
        "the model must not be loaded: {log}"
    );
    assert_eq!(
        mtimes(&out, &cases),
        before,
        "reused token files must not be rewritten"
    );

    let with = |extra: &[&str], model: Option<&str>| {
        let mut a: Vec<&str> = base.clone();
        if let Some(m) = model {
            let i = a.iter().position(|x| *x == "--model").unwrap();
            a[i + 1] = m;
        }
        for pair in extra.chunks(2) {
            let i = a.iter().position(|x| *x == pair[0]).unwrap();
            a[i + 1] = pair[1];
        }
        ok(&run_mri_ad(&a))
    };
    // every change of model, layer, d' or seed recomputes every case; running it again reuses them
    let other_model = tiny_model(1);
    for (extra, m) in [
        (vec!["--seed", "4"], None),
        (vec!["--layers", "2,3"], None),
        (vec!["--proj-dim", "8"], None),
        (vec![], Some(s(&other_model))),
    ] {
        let log = with(&extra, m);
        assert!(
            log.contains("3 computed, 0 reused"),
            "{extra:?} {m:?}: {log}"
        );
        let log = with(&extra, m);
        assert!(
            log.contains("0 computed, 3 reused"),
            "{extra:?} {m:?} again: {log}"
        );
    }
    // back to the base settings: all recomputed once (the files hold the last settings)
    assert!(with(&[], None).contains("3 computed"));
    let before = mtimes(&out, &cases);
    std::thread::sleep(std::time::Duration::from_millis(20));
    // a changed input file recomputes exactly that case
    write_cube(&input, "b", &phantom(28, 9));
    let log = with(&[], None);
    assert!(log.contains("1 computed, 2 reused"), "{log}");
    assert!(
        log.contains("b: computed")
            && log.contains("a: up to date")
            && log.contains("c: up to date"),
        "{log}"
    );
    let after = mtimes(&out, &cases);
    assert_eq!((after[0], after[2]), (before[0], before[2]));
    assert_ne!(after[1], before[1]);
}

#[test]
fn shards_together_write_the_same_files_as_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    let names = ["p1", "p2", "p3", "p4", "p5"];
    for (i, c) in names.iter().enumerate() {
        write_cube(&input, c, &phantom(28, 10 + i as u64));
    }
    let model = tiny_model(0);
    let (single, sharded) = (dir.path().join("single"), dir.path().join("sharded"));
    ok(&run_mri_ad(&tiny_args(
        s(&input),
        s(&single),
        s(&model),
        "28",
    )));
    let mut seen = 0;
    for shard in ["1/3", "2/3", "3/3"] {
        let mut a = tiny_args(s(&input), s(&sharded), s(&model), "28");
        a.extend(["--shard", shard]);
        let log = ok(&run_mri_ad(&a));
        let n: usize = log
            .split("extract: ")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        seen += n;
    }
    assert_eq!(seen, names.len(), "every case in exactly one shard");
    for c in names {
        let a = read_tokens(&single.join(format!("{c}.tokens.npz")));
        let b = read_tokens(&sharded.join(format!("{c}.tokens.npz")));
        assert_eq!(a.0, b.0, "{c}: tokens");
        assert_eq!((a.1, a.2), (b.1, b.2), "{c}: valid, grid");
        let side = |d: &Path| -> serde_json::Value {
            serde_json::from_str(
                &std::fs::read_to_string(d.join(format!("{c}.tokens.json"))).unwrap(),
            )
            .unwrap()
        };
        let (x, y) = (side(&single), side(&sharded));
        for k in mri_ad::extract::KEY_FIELDS {
            assert_eq!(x[k], y[k], "{c}: sidecar {k}");
        }
    }
    // and the sharded folder is a complete cache for the single run
    let rerun = || {
        ok(&run_mri_ad(&tiny_args(
            s(&input),
            s(&sharded),
            s(&model),
            "28",
        )))
    };
    let log = rerun();
    assert!(log.contains("0 computed, 5 reused"), "{log}");
    assert!(!log.contains("one execution provider"), "{log}");
    // a cache made partly elsewhere (here: one sidecar says CUDA) is reused, and the mix is reported
    let path = sharded.join(format!("{}.tokens.json", names[0]));
    let mut side: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    side["provider"] = "CUDAExecutionProvider".into();
    std::fs::write(&path, side.to_string()).unwrap();
    let log = rerun();
    assert!(log.contains("0 computed, 5 reused"), "{log}");
    assert!(
        log.contains(
            "do not all come from one execution provider (CPUExecutionProvider: 4, CUDAExecutionProvider: 1)"
        ),
        "{log}"
    );
}

#[test]
fn device_cuda_fails_loudly_and_auto_names_the_provider() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    write_cube(&input, "x", &phantom(28, 0));
    let model = tiny_model(0);
    let out = dir.path().join("cuda");
    let mut a = tiny_args(s(&input), s(&out), s(&model), "28");
    let i = a.iter().position(|x| *x == "cuda" || *x == "cpu").unwrap();
    a[i] = "cuda";
    let o = run_mri_ad(&a);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{e}");
    // the provider's own words, and which flag to change
    assert!(
        e.contains("--device") && e.contains("CUDA execution provider"),
        "{e}"
    );
    // and the fix
    assert!(
        e.contains("--device cpu") && e.contains("onnxruntime-gpu"),
        "{e}"
    );
    assert!(!out.join("x.tokens.npz").exists());
    let out = dir.path().join("auto");
    let mut a = tiny_args(s(&input), s(&out), s(&model), "28");
    a[i] = "auto";
    let e = ok(&run_mri_ad(&a));
    assert!(e.contains("device: CPUExecutionProvider"), "{e}");
    assert!(e.contains("CUDA is not available"), "{e}");
    assert!(
        e.contains("onnxruntime-gpu") && !e.contains("not enabled in this build"),
        "the notice names the library, not a rebuild: {e}"
    );
    let side: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("x.tokens.json")).unwrap()).unwrap();
    assert_eq!(side["provider"], "CPUExecutionProvider");
}

#[test]
fn bad_inputs_exit_2_naming_the_file_without_partial_output() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(0);
    let run = |name: &str, cube: ndarray::Array3<f32>, extra: &[&str]| {
        let input = dir.path().join(format!("in_{name}"));
        let out = dir.path().join(format!("out_{name}"));
        write_cube(&input, name, &cube);
        let mut a = tiny_args(s(&input), s(&out), s(&model), "28");
        for pair in extra.chunks(2) {
            let i = a.iter().position(|x| *x == pair[0]).unwrap();
            a[i + 1] = pair[1];
        }
        let o = run_mri_ad(&a);
        let leftovers = std::fs::read_dir(&out).map(|d| d.count()).unwrap_or(0);
        (o.status.code(), stderr(&o), leftovers)
    };
    let mut nan = phantom(28, 0);
    nan[[3, 4, 5]] = f32::NAN;
    let (code, e, left) = run("nan", nan, &[]);
    assert_eq!((code, left), (Some(2), 0), "{e}");
    assert!(
        e.contains("nan.npy") && e.contains("(3, 4, 5)") && !e.contains("panicked"),
        "{e}"
    );
    let (code, e, left) = run("small", phantom(14, 0), &[]);
    assert_eq!((code, left), (Some(2), 0), "{e}");
    assert!(e.contains("small.npy") && e.contains("[14, 14, 14]"), "{e}");
    let (code, e, left) = run("empty", ndarray::Array3::zeros((28, 28, 28)), &[]);
    assert_eq!((code, left), (Some(2), 0), "{e}");
    assert!(e.contains("empty.npy") && e.contains("void"), "{e}");
    let (code, e, _) = run("layer", phantom(28, 0), &["--layers", "2,7"]);
    assert_eq!(code, Some(2), "{e}");
    assert!(e.contains("block 7") && e.contains("layer_4"), "{e}");
    let (code, e, _) = run("size", phantom(28, 0), &["--size", "30"]);
    assert_eq!(code, Some(2), "{e}");
    assert!(e.contains("--size"), "{e}");
    // float64 input
    let input = dir.path().join("in_f64");
    std::fs::create_dir_all(&input).unwrap();
    ndarray_npy::write_npy(input.join("d.npy"), &phantom(28, 0).mapv(|v| v as f64)).unwrap();
    let out = dir.path().join("out_f64");
    let o = run_mri_ad(&tiny_args(s(&input), s(&out), s(&model), "28"));
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("d.npy") && stderr(&o).contains("float32"),
        "{}",
        stderr(&o)
    );
    // no ONNX Runtime library
    let input = dir.path().join("in_nan");
    let o = mri_ad_env(
        &tiny_args(s(&input), s(&dir.path().join("o1")), s(&model), "28"),
        &[],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("ORT_DYLIB_PATH") && stderr(&o).contains("--ort-lib"),
        "{}",
        stderr(&o)
    );
    // a file that is not an ONNX model
    let garbage = dir.path().join("garbage.onnx");
    std::fs::write(&garbage, b"not a model").unwrap();
    let o = run_mri_ad(&tiny_args(
        s(&input),
        s(&dir.path().join("o3")),
        s(&garbage),
        "28",
    ));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("garbage.onnx") && !stderr(&o).contains("panicked"),
        "{}",
        stderr(&o)
    );
    // no model
    let missing = dir.path().join("missing.onnx");
    let o = run_mri_ad(&tiny_args(
        s(&input),
        s(&dir.path().join("o2")),
        s(&missing),
        "28",
    ));
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("missing.onnx") && stderr(&o).contains("build_default_model"),
        "{}",
        stderr(&o)
    );
}

/// NIfTI input: volumes are preprocessed on the fly; the Nyúl landmarks learned from the folder are part of
/// the cache key (a changed volume changes them, so every case is recomputed), and saved landmarks passed
/// back with --nyul reproduce the same token files without recomputation.
#[test]
fn nifti_input_is_preprocessed_and_nyul_landmarks_are_in_the_cache_key() {
    use mri_ad::formats::nifti::{write_volume, Affine};
    let dir = tempfile::tempdir().unwrap();
    let (input, out) = (dir.path().join("nii"), dir.path().join("out"));
    std::fs::create_dir_all(&input).unwrap();
    // LPS-like, anisotropic voxels, non-cubic volumes (about 36 mm on every side) with an intensity range
    // of an MRI scanner.
    let affine: Affine = [
        [-1.3, 0.0, 0.0, 90.0],
        [0.0, -1.1, 0.0, 110.0],
        [0.0, 0.0, 1.0, -60.0],
        [0.0, 0.0, 0.0, 1.0],
    ];
    let write = |name: &str, seed: u64, gain: f32| {
        // Arrays are [k][j][i]: 36 slices of 32 rows of 28 voxels (i spacing 1.3 mm, j 1.1, k 1.0).
        let cube = phantom(36, seed);
        let vol = cube
            .slice(ndarray::s![.., 2..34, 4..32])
            .mapv(|v| v * 900.0 * gain);
        write_volume(&input.join(format!("{name}.nii.gz")), &vol, &affine).unwrap();
    };
    for (i, c) in ["a", "b", "c"].iter().enumerate() {
        write(c, i as u64, 1.0 + i as f32 * 0.1);
    }
    let model = tiny_model(0);
    let landmarks = dir.path().join("nyul.json");
    let mut args = tiny_args(s(&input), s(&out), s(&model), "28");
    args.extend(["--save-nyul", s(&landmarks)]);
    let log = ok(&run_mri_ad(&args));
    assert!(log.contains("3 computed, 0 reused"), "{log}");
    let sidecar: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("a.tokens.json")).unwrap()).unwrap();
    let pre = sidecar["preprocessing"].to_string();
    assert!(
        pre.contains("nifti") && pre.contains("standard"),
        "{sidecar}"
    );
    let (tokens, valid, grid) = read_tokens(&out.join("a.tokens.npz"));
    assert_eq!(grid, vec![2, 2, 2]);
    assert_eq!(tokens.dim(), (2, 8, 48));
    assert!(valid.iter().any(|&v| v));

    // The saved landmarks reproduce the cache key: nothing is recomputed.
    let mut again = tiny_args(s(&input), s(&out), s(&model), "28");
    again.extend(["--nyul", s(&landmarks)]);
    let log = ok(&run_mri_ad(&again));
    assert!(log.contains("0 computed, 3 reused"), "{log}");

    // A changed volume: with the landmarks pinned, only that case is recomputed...
    write("c", 7, 1.6);
    let log = ok(&run_mri_ad(&again));
    assert!(log.contains("1 computed, 2 reused"), "{log}");
    // ...while learning them again from the changed folder changes every case's key.
    let log = ok(&run_mri_ad(&tiny_args(s(&input), s(&out), s(&model), "28")));
    assert!(log.contains("3 computed, 0 reused"), "{log}");
}

#[test]
fn a_bad_nifti_volume_stops_extract_with_exit_2_naming_it() {
    use mri_ad::formats::nifti::write_volume;
    let dir = tempfile::tempdir().unwrap();
    let (input, out) = (dir.path().join("nii"), dir.path().join("out"));
    std::fs::create_dir_all(&input).unwrap();
    let eye = [
        [1.0, 0.0, 0.0, 0.0],
        [0.0, 1.0, 0.0, 0.0],
        [0.0, 0.0, 1.0, 0.0],
        [0.0, 0.0, 0.0, 1.0],
    ];
    write_volume(
        &input.join("good.nii.gz"),
        &phantom(30, 1).mapv(|v| v * 500.0),
        &eye,
    )
    .unwrap();
    write_volume(
        &input.join("zero.nii.gz"),
        &ndarray::Array3::zeros((30, 30, 30)),
        &eye,
    )
    .unwrap();
    let model = tiny_model(0);
    let o = run_mri_ad(&tiny_args(s(&input), s(&out), s(&model), "28"));
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("zero.nii.gz") && !err.contains("panicked"),
        "{err}"
    );
    assert!(
        !out.exists() || std::fs::read_dir(&out).unwrap().count() == 0,
        "{err}"
    );
}
