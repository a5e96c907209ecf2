//! Helpers shared by the integration tests: the Python reference interpreter and running scripts.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

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
             MRI_AD_PYTHON), or export MRI_AD_PYTHON=$PWD/.venv/bin/python after scripts/setup-python.sh"
        )
    });
    let py = PathBuf::from(py);
    let out = Command::new(&py)
        .args(["-c", "import numpy, nibabel, SimpleITK, scipy"])
        .output()
        .unwrap_or_else(|e| panic!("MRI_AD_PYTHON={} cannot be run: {e}", py.display()));
    assert!(
        out.status.success(),
        "MRI_AD_PYTHON={} cannot import numpy, nibabel, SimpleITK and scipy (run scripts/setup-python.sh):\n{}",
        py.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    py
}

/// Runs `scripts/<script>` with arguments; returns stdout, panicking with stdout and stderr on failure.
pub fn run_script(script: &str, args: &[&str]) -> String {
    let out = Command::new(python())
        .arg(root().join("scripts").join(script))
        .args(args)
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "scripts/{script} {args:?} failed:\n--- stdout\n{stdout}\n--- stderr\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The `mri-ad` binary under test.
pub fn mri_ad() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mri-ad"))
}

/// Path as `&str` (tests use UTF-8 temporary paths).
pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}
