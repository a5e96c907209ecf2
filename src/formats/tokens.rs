//! Token files: `<case>.tokens.npz` with `tokens` f32 `[L, M, D]`, `valid` bool `[M]`, `grid` i64 `[3]`,
//! and an optional JSON sidecar `<case>.tokens.json` (model hash, layers, seed, input hash, group, ...).
//!
//! Traps: numpy may store arrays in Fortran order (we convert to C order); `grid` may come as int32 from
//! some writers (accepted); tokens must be float32 (float64 is refused rather than silently cast, so that
//! a pipeline mistake is visible). Files are read, never modified.
//!
//! Provenance: a sidecar written by `extract` records the execution provider that made the tokens (and the
//! `--batch`). CUDA and CPU tokens of the same input differ slightly (onnx/README.md), and so do CUDA tokens
//! made with different batch sizes; the provider is not part of the cache key, so a folder can hold a mix.
//! [`count_providers`] and [`mixed_providers_notice`] make such a mix visible.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use ndarray::{Array1, Array3};
use ndarray_npy::{NpzReader, NpzWriter};

use crate::{Error, Result, TokenSet};

/// File name suffix of token files.
pub const TOKEN_SUFFIX: &str = ".tokens.npz";
/// File name suffix of token sidecars.
pub const SIDECAR_SUFFIX: &str = ".tokens.json";

/// A token set read from disk, with where it came from and its optional sidecar.
#[derive(Debug, Clone)]
pub struct TokenFile {
    pub path: PathBuf,
    pub set: TokenSet,
    /// The parsed sidecar, when `<case>.tokens.json` exists.
    pub sidecar: Option<serde_json::Value>,
}

impl TokenFile {
    /// The `group` field of the sidecar (e.g. "healthy" or "query"), if any.
    pub fn group(&self) -> Option<&str> {
        self.sidecar.as_ref()?.get("group")?.as_str()
    }
}

/// The name counted for a token file whose sidecar records no provider (or that has no sidecar).
pub const UNRECORDED_PROVIDER: &str = "unrecorded";

/// Counts one token file under the provider that made it (`None`: [`UNRECORDED_PROVIDER`]).
pub fn count_provider(counts: &mut BTreeMap<String, usize>, provider: Option<&str>) {
    *counts
        .entry(provider.unwrap_or(UNRECORDED_PROVIDER).to_string())
        .or_insert(0) += 1;
}

/// How many token files each execution provider made, from the providers their sidecars record.
pub fn count_providers<'a>(
    providers: impl IntoIterator<Item = Option<&'a str>>,
) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for p in providers {
        count_provider(&mut counts, p);
    }
    counts
}

/// The provider a sidecar records, if any.
pub fn sidecar_provider(sidecar: Option<&serde_json::Value>) -> Option<&str> {
    sidecar?.get("provider")?.as_str()
}

/// The notice for a batch whose token files do not all come from one recorded provider, `None` otherwise.
pub fn mixed_providers_notice(providers: &BTreeMap<String, usize>) -> Option<String> {
    if providers.len() < 2 {
        return None;
    }
    let list: Vec<String> = providers.iter().map(|(p, n)| format!("{p}: {n}")).collect();
    let unrecorded = if providers.contains_key(UNRECORDED_PROVIDER) {
        " (unrecorded: sidecars that name no provider)"
    } else {
        ""
    };
    Some(format!(
        "the token files in use do not all come from one execution provider ({}){unrecorded}. CUDA and CPU \
         tokens differ slightly, so these results are not bit-identical to a run whose tokens all come from one \
         provider (and, on CUDA, one --batch). To get such a run, extract into a new folder with one --device \
         (score on volumes: a new --out)",
        list.join(", ")
    ))
}

/// Lists the token files of a folder, sorted by case id (so every run sees the same order).
pub fn discover(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    if !dir.is_dir() {
        return Err(Error::BadBatch {
            path: dir.into(),
            problem: "not a folder (--tokens expects a folder of <case>.tokens.npz files)".into(),
        });
    }
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(id) = super::case_id(&name, &[TOKEN_SUFFIX]) {
            found.push((id, entry.path()));
        }
    }
    found.sort();
    if found.is_empty() {
        return Err(Error::BadBatch {
            path: dir.into(),
            problem: format!("no token files (*{TOKEN_SUFFIX}) in this folder"),
        });
    }
    Ok(found)
}

fn npz_problem(path: &Path, what: &str, e: impl std::fmt::Display) -> Error {
    Error::bad_input(path, format!("{what}: {e}"))
}

/// Reads one token file (and its sidecar when present).
pub fn read_token_file(case: &str, path: &Path) -> Result<TokenFile> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut npz =
        NpzReader::new(file).map_err(|e| npz_problem(path, "not a readable .npz archive", e))?;
    let names = npz
        .names()
        .map_err(|e| npz_problem(path, "cannot list the arrays of the .npz archive", e))?;
    for required in ["tokens", "valid", "grid"] {
        if !names.iter().any(|n| n == required) {
            return Err(Error::bad_input(
                path,
                format!(
                    "array `{required}` is missing (the file has: {})",
                    names.join(", ")
                ),
            ));
        }
    }
    let tokens: Array3<f32> = npz.by_name("tokens").map_err(|e| {
        npz_problem(
            path,
            "array `tokens` must be float32 with shape [L, M, D]",
            e,
        )
    })?;
    let valid: Array1<bool> = npz
        .by_name("valid")
        .map_err(|e| npz_problem(path, "array `valid` must be bool with shape [M]", e))?;
    let grid: Vec<i64> = match npz.by_name::<ndarray::OwnedRepr<i64>, ndarray::Ix1>("grid") {
        Ok(g) => g.to_vec(),
        Err(_) => npz
            .by_name::<ndarray::OwnedRepr<i32>, ndarray::Ix1>("grid")
            .map_err(|e| npz_problem(path, "array `grid` must be int64 with shape [3]", e))?
            .iter()
            .map(|&v| v as i64)
            .collect(),
    };
    if grid.len() != 3 || grid.iter().any(|&g| g < 1) {
        return Err(Error::bad_input(
            path,
            format!("array `grid` must hold 3 positive sizes, found {grid:?}"),
        ));
    }
    let grid = [grid[0] as usize, grid[1] as usize, grid[2] as usize];
    let tokens = if tokens.is_standard_layout() {
        tokens
    } else {
        tokens.as_standard_layout().into_owned()
    };
    let set = TokenSet::new(case, tokens, valid.to_vec(), grid).map_err(|e| match e {
        Error::BadInput { problem, .. } => Error::bad_input(path, problem),
        other => other,
    })?;
    let sidecar_path = sidecar_path(path);
    let sidecar = if sidecar_path.exists() {
        let text =
            std::fs::read_to_string(&sidecar_path).map_err(|e| Error::io(&sidecar_path, e))?;
        Some(serde_json::from_str(&text).map_err(|e| {
            Error::bad_input(&sidecar_path, format!("sidecar is not valid JSON: {e}"))
        })?)
    } else {
        None
    };
    Ok(TokenFile {
        path: path.into(),
        set,
        sidecar,
    })
}

/// The sidecar path of a token file: `x.tokens.npz` → `x.tokens.json`.
pub fn sidecar_path(token_file: &Path) -> PathBuf {
    let name = token_file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = name.strip_suffix(TOKEN_SUFFIX).unwrap_or(&name);
    token_file.with_file_name(format!("{stem}{SIDECAR_SUFFIX}"))
}

/// Reads every token file of a folder and checks they form one batch: same L, M, D and grid.
pub fn read_batch(dir: &Path) -> Result<Vec<TokenFile>> {
    let files = discover(dir)?;
    let mut out: Vec<TokenFile> = Vec::with_capacity(files.len());
    for (case, path) in &files {
        let tf = read_token_file(case, path)?;
        if let Some(first) = out.first() {
            check_same_shape(first, &tf)?;
        }
        out.push(tf);
    }
    Ok(out)
}

/// Checks that `other` has the layout (L, M, D, grid) of `reference`.
pub fn check_same_shape(reference: &TokenFile, other: &TokenFile) -> Result<()> {
    let (a, b) = (&reference.set, &other.set);
    let checks = [
        ("the number of layers L", a.n_views(), b.n_views()),
        (
            "the number of positions M",
            a.n_positions(),
            b.n_positions(),
        ),
        ("the feature dimension D", a.dim(), b.dim()),
    ];
    for (what, expected, actual) in checks {
        if expected != actual {
            return Err(Error::Mismatch {
                path: other.path.clone(),
                what: what.into(),
                expected: expected.to_string(),
                actual: actual.to_string(),
                reference: reference.path.display().to_string(),
            });
        }
    }
    if a.grid != b.grid {
        return Err(Error::Mismatch {
            path: other.path.clone(),
            what: "the grid".into(),
            expected: format!("{:?}", a.grid),
            actual: format!("{:?}", b.grid),
            reference: reference.path.display().to_string(),
        });
    }
    Ok(())
}

/// Writes a token file atomically (the sidecar is written separately by the caller).
pub fn write_token_file(path: &Path, set: &TokenSet) -> Result<()> {
    let valid = Array1::from(set.valid.clone());
    let grid = Array1::from(set.grid.iter().map(|&g| g as i64).collect::<Vec<_>>());
    super::atomic::write_with(path, |w| {
        let mut npz = NpzWriter::new(w);
        npz.add_array("tokens", &set.tokens)
            .and_then(|_| npz.add_array("valid", &valid))
            .and_then(|_| npz.add_array("grid", &grid))
            .map_err(|e| e.to_string())?;
        npz.finish().map(|_| ()).map_err(|e| e.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(name: &str, l: usize, m: usize, d: usize) -> TokenSet {
        let t = Array3::from_shape_fn((l, m, d), |(a, b, c)| (a + 2 * b + 3 * c) as f32);
        let g = [1, 1, m];
        TokenSet::new(name, t, vec![true; m], g).unwrap()
    }

    #[test]
    fn round_trip_and_mismatch() {
        let dir = tempfile::tempdir().unwrap();
        write_token_file(&dir.path().join("a.tokens.npz"), &set("a", 2, 4, 3)).unwrap();
        write_token_file(&dir.path().join("b.tokens.npz"), &set("b", 2, 4, 3)).unwrap();
        let batch = read_batch(dir.path()).unwrap();
        assert_eq!(batch.len(), 2);
        assert_eq!(batch[1].set.tokens, set("b", 2, 4, 3).tokens);
        write_token_file(&dir.path().join("c.tokens.npz"), &set("c", 2, 4, 5)).unwrap();
        let err = read_batch(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("c.tokens.npz") && err.contains("feature dimension D"),
            "{err}"
        );
        assert!(err.contains("is 5") && err.contains("has 3"), "{err}");
    }
}
