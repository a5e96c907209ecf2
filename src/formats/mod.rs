//! The file formats, the bottom layer: NIfTI volumes ([`nifti`]), 2D images ([`images`]), token files
//! ([`tokens`]), atomic writes ([`atomic`]), SHA-256 ([`hash`]). It depends on no pipeline stage.
//!
//! Traps: every output file is written to a temporary name in the same folder and renamed into place, so
//! a crash or a bad input never leaves a half-written file; input files are opened read-only and never
//! modified.

pub mod atomic;
pub mod hash;
pub mod images;
pub mod nifti;
pub mod tokens;

/// A path made absolute (links resolved) when it exists, else as given: run folders record absolute paths,
/// and files are compared by it.
pub fn absolute(path: &std::path::Path) -> std::path::PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Case identifier of a file: its name with known (possibly double) extensions removed,
/// e.g. `sub-01.tokens.npz` → `sub-01` with suffix `.tokens.npz`, `x.nii.gz` → `x` with `.nii.gz`.
pub fn case_id(file_name: &str, suffixes: &[&str]) -> Option<String> {
    suffixes
        .iter()
        .find_map(|s| file_name.strip_suffix(s))
        .filter(|stem| !stem.is_empty())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    #[test]
    fn case_id_strips_double_extensions() {
        let s = [".tokens.npz", ".nii.gz", ".nii"];
        assert_eq!(super::case_id("a.b.tokens.npz", &s).as_deref(), Some("a.b"));
        assert_eq!(super::case_id("x.nii.gz", &s).as_deref(), Some("x"));
        assert_eq!(super::case_id("x.nii", &s).as_deref(), Some("x"));
        assert_eq!(super::case_id(".nii", &s), None);
        assert_eq!(super::case_id("x.npz", &s), None);
    }
}
