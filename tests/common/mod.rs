//! Helpers shared by the integration tests: the Python reference interpreter (MRI_AD_PYTHON), running
//! scripts and the real binary, the ONNX Runtime library, tiny models made by scripts/fixtures/make_tiny_vit.py and
//! phantom cubes.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, OnceLock};

use mri_ad::formats::nifti::{write_volume, Affine};
use ndarray::Array3;

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Python interpreter with numpy, nibabel and SimpleITK (from `MRI_AD_PYTHON`). Fails loudly when it is
/// not set or cannot import the packages: these checks must never be skipped silently.
pub fn python() -> PathBuf {
    let py = std::env::var_os("MRI_AD_PYTHON").unwrap_or_else(|| {
        panic!(
            "MRI_AD_PYTHON is not set: run the tests with scripts/test.sh (it creates .venv and exports \
             MRI_AD_PYTHON), or export MRI_AD_PYTHON=$PWD/.venv/bin/python after scripts/setup/python.sh"
        )
    });
    let py = PathBuf::from(py);
    let out = Command::new(&py)
        .args(["-c", "import numpy, nibabel, SimpleITK, scipy"])
        .output()
        .unwrap_or_else(|e| panic!("MRI_AD_PYTHON={} cannot be run: {e}", py.display()));
    assert!(
        out.status.success(),
        "MRI_AD_PYTHON={} cannot import numpy, nibabel, SimpleITK and scipy (run scripts/setup/python.sh):\n{}",
        py.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    py
}

/// Runs Python with arguments from the repository root; returns stdout, panicking with stdout and stderr
/// on failure.
pub fn run_python(args: &[&str]) -> String {
    let out = Command::new(python())
        .args(args)
        .current_dir(root())
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "python {args:?} failed:\n--- stdout\n{stdout}\n--- stderr\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Runs `scripts/<script>` with arguments; returns stdout.
pub fn run_script(script: &str, args: &[&str]) -> String {
    let path = root().join("scripts").join(script);
    let mut all = vec![path.to_str().expect("utf-8 path")];
    all.extend_from_slice(args);
    run_python(&all)
}

/// The `mri-ad` binary under test.
pub fn mri_ad() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mri-ad"))
}

/// Path as `&str` (tests use UTF-8 temporary paths).
pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// The ONNX Runtime shared library: ORT_DYLIB_PATH, else the one of MRI_AD_PYTHON's onnxruntime wheel.
pub fn ort_lib() -> PathBuf {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| {
        if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
            return PathBuf::from(p);
        }
        let code = "import glob, os, onnxruntime; \
                    d = os.path.join(os.path.dirname(onnxruntime.__file__), 'capi'); \
                    print(sorted(glob.glob(os.path.join(d, 'libonnxruntime.so.*')))[0])";
        PathBuf::from(run_python(&["-c", code]).trim())
    })
    .clone()
}

fn scratch() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("temp dir"))
        .path()
}

/// A tiny random ViT (depth 4, width 32, blocks 1..4 exported) made by scripts/fixtures/make_tiny_vit.py.
pub fn tiny_model(seed: u64) -> PathBuf {
    static MODELS: OnceLock<Mutex<HashMap<u64, PathBuf>>> = OnceLock::new();
    let mut map = MODELS
        .get_or_init(|| Mutex::new(HashMap::new()))
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    map.entry(seed)
        .or_insert_with(|| {
            let path = scratch().join(format!("tiny_{seed}.onnx"));
            run_script(
                "fixtures/make_tiny_vit.py",
                &["--out", path.to_str().unwrap(), "--seed", &seed.to_string()],
            );
            path
        })
        .clone()
}

/// A deterministic phantom: an ellipsoidal "brain" with texture, values in (0, 1], background 0.
pub fn phantom(size: usize, seed: u64) -> Array3<f32> {
    let c = size as f32 / 2.0;
    let s = seed as f32;
    Array3::from_shape_fn((size, size, size), |(z, y, x)| {
        let (fz, fy, fx) = (z as f32 + 0.5 - c, y as f32 + 0.5 - c, x as f32 + 0.5 - c);
        // a rounded box (superellipsoid, power 4): most tokens are brain, the corners are void
        let r = (fz / (0.47 * size as f32)).powi(4)
            + (fy / (0.49 * size as f32)).powi(4)
            + (fx / (0.45 * size as f32)).powi(4);
        if r >= 1.0 {
            return 0.0;
        }
        let texture = 0.5
            + 0.25 * (x as f32 * 0.37 + s).sin() * (y as f32 * 0.23 - s).cos()
            + 0.15 * (z as f32 * 0.51 + 0.3 * s).sin();
        let lesion = if (fz - 0.1 * c).powi(2) + (fy + 0.2 * c).powi(2) + (fx - 0.15 * c).powi(2)
            < (0.12 * size as f32 + s).powi(2)
        {
            0.3
        } else {
            0.0
        };
        (texture + lesion).clamp(0.05, 1.0)
    })
}

/// Writes `<dir>/<name>.npy`.
pub fn write_cube(dir: &Path, name: &str, cube: &Array3<f32>) {
    std::fs::create_dir_all(dir).unwrap();
    ndarray_npy::write_npy(dir.join(format!("{name}.npy")), cube).unwrap();
}

/// Runs the real `mri-ad` binary with ORT_DYLIB_PATH pointing at the test library.
/// The backbone flags of a tiny run: the tiny random ViT `model` at `size`³, blocks 2 and 4, d' = 16, CPU.
pub fn tiny_backbone<'a>(model: &'a str, size: &'a str) -> [&'a str; 10] {
    [
        "--model",
        model,
        "--size",
        size,
        "--layers",
        "2,4",
        "--proj-dim",
        "16",
        "--device",
        "cpu",
    ]
}

pub fn run_mri_ad(args: &[&str]) -> Output {
    mri_ad_env(args, &[("ORT_DYLIB_PATH", ort_lib().to_str().unwrap())])
}

/// Runs `mri-ad` with the given environment overrides.
pub fn mri_ad_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mri-ad"));
    cmd.args(args).env_remove("ORT_DYLIB_PATH");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("cannot run mri-ad")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts success and returns stderr.
pub fn ok(o: &Output) -> String {
    let e = stderr(o);
    assert!(
        o.status.success(),
        "mri-ad failed ({:?}):\n{e}",
        o.status.code()
    );
    e
}

/// Reads tokens, valid and grid of a token file.
pub fn read_tokens(path: &Path) -> (ndarray::Array3<f32>, Vec<bool>, Vec<i64>) {
    let mut npz = ndarray_npy::NpzReader::new(std::fs::File::open(path).unwrap()).unwrap();
    let t: ndarray::Array3<f32> = npz.by_name("tokens").unwrap();
    let v: ndarray::Array1<bool> = npz.by_name("valid").unwrap();
    let g: ndarray::Array1<i64> = npz.by_name("grid").unwrap();
    (t, v.to_vec(), g.to_vec())
}

/// Headless Chromium (from `MRI_AD_CHROMIUM`, which scripts/test.sh sets up). Fails loudly when it is not
/// set: the browser check must never be skipped silently.
pub fn chromium() -> PathBuf {
    let path = std::env::var_os("MRI_AD_CHROMIUM").unwrap_or_else(|| {
        panic!(
            "MRI_AD_CHROMIUM is not set: run the tests with scripts/test.sh (it installs Debian's chromium \
             when it can and exports MRI_AD_CHROMIUM), or export MRI_AD_CHROMIUM=/usr/bin/chromium"
        )
    });
    PathBuf::from(path)
}

/// `scripts/oracles/check_page.py` on a run folder, with a full-page screenshot: its JSON report (panics
/// with the report when a check fails).
pub fn check_page(run: &Path, screenshot: &Path) -> serde_json::Value {
    let out = run_script(
        "oracles/check_page.py",
        &[
            s(run),
            "--screenshot",
            s(screenshot),
            "--chromium",
            s(&chromium()),
        ],
    );
    serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("check_page.py printed no JSON ({e}):\n{out}"))
}

pub const AFFINE: Affine = [
    [-1.3, 0.0, 0.0, 90.0],
    [0.0, -1.1, 0.0, 110.0],
    [0.0, 0.0, 1.0, -60.0],
    [0.0, 0.0, 0.0, 1.0],
];

/// A phantom volume [k][j][i] = 36×32×28, with an optional bright lesion; returns the lesion mask too.
/// The lesion is central for even seeds and in one corner of the brain for odd ones, so that at 28³ (2³
/// tokens) it touches only some tokens and the token labels' order matters.
pub fn volume(seed: u64, lesion: bool) -> (ndarray::Array3<f32>, ndarray::Array3<f32>) {
    let centre = if seed.is_multiple_of(2) {
        (18.0, 14.0, 12.0)
    } else {
        (11.0, 9.0, 8.0)
    };
    let cube = phantom(36, seed);
    let mut vol = cube
        .slice(ndarray::s![.., 2..34, 4..32])
        .mapv(|v| v * 800.0);
    let mut mask = ndarray::Array3::<f32>::zeros(vol.dim());
    if lesion {
        for ((k, j, i), v) in vol.indexed_iter_mut() {
            let d2 = (k as f32 - centre.0).powi(2)
                + (j as f32 - centre.1).powi(2)
                + (i as f32 - centre.2).powi(2);
            if d2 < 25.0 && *v > 0.0 {
                *v = 2000.0;
                mask[[k, j, i]] = 1.0;
            }
        }
    }
    (vol, mask)
}

/// Writes healthy phantoms h0.. (seeds 0..n_healthy) and lesion phantoms q0.. (seeds `query_seeds`) with
/// their label maps, creating the three folders.
pub fn write_cohort(
    healthy: &Path,
    query: &Path,
    labels: &Path,
    n_healthy: u64,
    query_seeds: std::ops::Range<u64>,
) {
    for d in [healthy, query, labels] {
        std::fs::create_dir_all(d).unwrap();
    }
    for i in 0..n_healthy {
        write_volume(
            &healthy.join(format!("h{i}.nii.gz")),
            &volume(i, false).0,
            &AFFINE,
        )
        .unwrap();
    }
    for (i, seed) in query_seeds.enumerate() {
        let (vol, mask) = volume(seed, true);
        write_volume(&query.join(format!("q{i}.nii.gz")), &vol, &AFFINE).unwrap();
        write_volume(&labels.join(format!("q{i}.nii.gz")), &mask, &AFFINE).unwrap();
    }
}

/// The planted token batch of scripts/fixtures/make_tokens.py (40 cases on a 6³ grid, one recurring
/// anomaly) written to `out` with `seed`.
pub fn planted_tokens(out: &Path, seed: u64) {
    run_script(
        "fixtures/make_tokens.py",
        &[
            "--out",
            s(out),
            "--kind",
            "planted",
            "--n",
            "40",
            "--grid",
            "6",
            "6",
            "6",
            "--seed",
            &seed.to_string(),
        ],
    );
}
