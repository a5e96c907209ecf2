//! The output folder rule: a run writes into a folder that does not exist or is empty; a non-empty folder
//! is used only with `--force` (then the files this run writes are replaced, others are kept).

use std::path::Path;

use crate::{Error, Result};

/// Creates `dir` (and parents) or checks that it is empty; with `force`, a non-empty folder is accepted.
pub fn prepare(dir: &Path, force: bool) -> Result<()> {
    if dir.exists() {
        if !dir.is_dir() {
            return Err(Error::BadOutput {
                path: dir.into(),
                problem: "the output path exists and is not a folder".into(),
            });
        }
        // A lock left by a killed run is not content: `lock::acquire` takes it over.
        let non_empty = std::fs::read_dir(dir)
            .map_err(|e| Error::io(dir, e))?
            .filter_map(|e| e.ok())
            .any(|e| e.file_name() != super::lock::LOCK_FILE);
        if non_empty && !force {
            return Err(Error::BadOutput {
                path: dir.into(),
                problem: "the output folder is not empty; choose another --out or pass --force to replace \
                          the files of this run"
                    .into(),
            });
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))
}

/// Creates a subfolder of the output folder.
pub fn subdir(dir: &Path, name: &str) -> Result<std::path::PathBuf> {
    let sub = dir.join(name);
    std::fs::create_dir_all(&sub).map_err(|e| Error::io(&sub, e))?;
    Ok(sub)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_empty_needs_force() {
        let dir = tempfile::tempdir().unwrap();
        prepare(&dir.path().join("new/deeper"), false).unwrap();
        std::fs::write(dir.path().join("f"), b"x").unwrap();
        let err = prepare(dir.path(), false).unwrap_err();
        assert!(err.to_string().contains("--force"));
        assert_eq!(err.exit_code(), 2);
        prepare(dir.path(), true).unwrap();
        assert!(prepare(&dir.path().join("f"), true).is_err());
    }
}
