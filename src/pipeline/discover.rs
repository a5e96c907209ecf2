//! Dataset discovery: which files of a folder are the cases, and which label map / brain mask goes with each.
//!
//! The layouts live in `data-manifest/*.toml` (compiled into the binary, one file per dataset: IXI, BraTS-METS
//! 2025, the demo cohort, a generic folder). A manifest lists path patterns relative to the folder given on
//! the command line, with `{case}` standing for the case id, e.g. `{case}/{case}-t2w.nii.gz` (BraTS) or
//! `{case}-T2.nii.gz` (IXI). A path matches when each `/`-separated component matches its pattern
//! component and every `{case}` captures the same non-empty text.
//!
//! **Layout choice.** With `layout = None` the first specific manifest (BraTS-METS, IXI) whose image
//! patterns match at least one file wins, else `generic`. The demo cohort has the generic layout.
//!
//! **Pairing.** A case's label map (or brain mask) is the first of the manifest's `labels` (or `masks`)
//! patterns that names an existing file in the labels (or masks) folder, then the generic patterns.
//! Files named as another case's label are not cases themselves (labels may share the image folder).
//!
//! **Traps.** Case ids survive double extensions (`x.nii.gz` → `x`). Hidden files (`.name`, e.g. our own
//! temporary files) are ignored. Folders are searched two levels deep. The order is sorted by case id, so
//! every run sees the same order.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// A dataset layout from `data-manifest/`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Manifest {
    pub name: String,
    pub title: String,
    pub role: String,
    pub modality: String,
    pub source: String,
    pub licence: String,
    pub images: Vec<String>,
    pub labels: Vec<String>,
    pub masks: Vec<String>,
    pub lesion_rule: String,
    pub preprocessing: String,
}

const BUILTIN: &[(&str, &str)] = &[
    (
        "brats-mets-2025",
        include_str!("../../data-manifest/brats-mets-2025.toml"),
    ),
    ("ixi", include_str!("../../data-manifest/ixi.toml")),
    ("demo", include_str!("../../data-manifest/demo.toml")),
    ("generic", include_str!("../../data-manifest/generic.toml")),
];

/// The built-in manifests, most specific first (`generic` last).
pub fn manifests() -> Vec<Manifest> {
    BUILTIN
        .iter()
        .map(|(name, text)| {
            toml::from_str(text).unwrap_or_else(|e| {
                panic!("data-manifest/{name}.toml is invalid (a build defect): {e}")
            })
        })
        .collect()
}

/// The manifest called `name`.
pub fn manifest(name: &str) -> Result<Manifest> {
    let all = manifests();
    let names: Vec<String> = all.iter().map(|m| m.name.clone()).collect();
    all.into_iter().find(|m| m.name == name).ok_or_else(|| {
        Error::bad_argument(
            "--layout",
            format!("unknown layout {name:?}; known: auto, {}", names.join(", ")),
        )
    })
}

/// Matches a relative path (with `/`) against a pattern; returns the case id.
pub fn match_pattern(pattern: &str, rel: &str) -> Option<String> {
    let pc: Vec<&str> = pattern.split('/').collect();
    let rc: Vec<&str> = rel.split('/').collect();
    if pc.len() != rc.len() {
        return None;
    }
    let mut case: Option<&str> = None;
    for (p, r) in pc.iter().zip(&rc) {
        match p.split_once("{case}") {
            None => {
                if p != r {
                    return None;
                }
            }
            Some((pre, post)) => {
                let v = r.strip_prefix(pre)?.strip_suffix(post)?;
                if v.is_empty() || case.is_some_and(|c| c != v) {
                    return None;
                }
                case = Some(v);
            }
        }
    }
    case.map(str::to_string)
}

/// One case of a folder.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Case {
    pub id: String,
    pub image: PathBuf,
}

/// What a folder holds under a layout.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Discovered {
    pub dir: PathBuf,
    pub layout: String,
    pub cases: Vec<Case>,
    /// NIfTI-looking files that are not cases under this layout.
    pub ignored: Vec<PathBuf>,
}

/// Files under `dir`, up to two levels deep, as sorted `/`-separated relative paths (hidden entries skipped).
fn list_files(dir: &Path) -> Result<Vec<String>> {
    if !dir.is_dir() {
        return Err(Error::BadBatch {
            path: dir.into(),
            problem: if dir.exists() {
                "not a folder".into()
            } else {
                "the folder does not exist".into()
            },
        });
    }
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), String::new(), 0)];
    while let Some((d, prefix, depth)) = stack.pop() {
        for entry in std::fs::read_dir(&d).map_err(|e| Error::io(&d, e))? {
            let entry = entry.map_err(|e| Error::io(&d, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let rel = format!("{prefix}{name}");
            let path = entry.path();
            if path.is_dir() {
                if depth < 1 {
                    stack.push((path, format!("{rel}/"), depth + 1));
                }
            } else {
                // Files, and links (also dangling ones: reading them reports the problem).
                out.push(rel);
            }
        }
    }
    out.sort();
    Ok(out)
}

fn looks_like_nifti(rel: &str) -> bool {
    crate::formats::nifti::NIFTI_SUFFIXES
        .iter()
        .any(|s| rel.ends_with(s))
}

/// For a folder without volumes of its own: its subfolders that hold NIfTI files (a cohort root given
/// instead of its `healthy/` or `query/` folder, say), as the fix to try.
fn subfolder_hint(dir: &Path, files: &[String]) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for f in files.iter().filter(|f| looks_like_nifti(f)) {
        if let Some((top, _)) = f.split_once('/') {
            *counts.entry(top).or_default() += 1;
        }
    }
    if counts.is_empty() {
        return String::new();
    }
    let listed: Vec<String> = counts.iter().map(|(d, n)| format!("{d}/ ({n})")).collect();
    let first = counts.keys().next().expect("not empty");
    format!(
        "; its subfolders hold NIfTI files: {}: give the folder of the volumes itself, e.g. {}",
        listed.join(", "),
        dir.join(first).display()
    )
}

/// The cases of `dir` under `layout` (`None` = auto); an empty result is an error naming the folder.
pub fn discover(dir: &Path, layout: Option<&str>) -> Result<Discovered> {
    let files = list_files(dir)?;
    let all = manifests();
    let chosen = match layout {
        Some(name) => manifest(name)?,
        None => all
            .iter()
            .filter(|m| m.name != "generic" && m.name != "demo")
            .find(|m| {
                files
                    .iter()
                    .any(|f| m.images.iter().any(|p| match_pattern(p, f).is_some()))
            })
            .cloned()
            .unwrap_or_else(|| manifest("generic").expect("built-in")),
    };
    let mut by_id: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut ignored = Vec::new();
    for f in &files {
        // The first image pattern that matches decides (e.g. x.nii.gz before x.nii).
        match chosen.images.iter().find_map(|p| match_pattern(p, f)) {
            Some(id) => {
                let path = dir.join(f);
                if let Some(prev) = by_id.get(&id) {
                    return Err(Error::BadBatch {
                        path: dir.into(),
                        problem: format!(
                            "case {id:?} appears twice: {} and {}",
                            prev.display(),
                            path.display()
                        ),
                    });
                }
                by_id.insert(id, path);
            }
            None if looks_like_nifti(f) => ignored.push(dir.join(f)),
            None => {}
        }
    }
    if by_id.is_empty() {
        return Err(Error::BadBatch {
            path: dir.into(),
            problem: format!(
                "no volumes found (layout {}: looked for {}); {} files in the folder{}",
                chosen.name,
                chosen.images.join(", "),
                files.len(),
                subfolder_hint(dir, &files)
            ),
        });
    }
    Ok(Discovered {
        dir: dir.into(),
        layout: chosen.name.clone(),
        cases: by_id
            .into_iter()
            .map(|(id, image)| Case { id, image })
            .collect(),
        ignored,
    })
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

/// The file for each case in `dir` by the first of `patterns` (then `fallback`) that names an existing file
/// other than the case's own image. Returns the pairs found and the cases without a file.
pub fn pair(
    dir: &Path,
    cases: &[Case],
    patterns: &[String],
    fallback: &[String],
) -> Result<(BTreeMap<String, PathBuf>, Vec<String>)> {
    if !dir.is_dir() {
        return Err(Error::BadBatch {
            path: dir.into(),
            problem: "the folder does not exist or is not a folder".into(),
        });
    }
    let mut found = BTreeMap::new();
    let mut missing = Vec::new();
    for case in cases {
        let id = &case.id;
        let hit = patterns
            .iter()
            .chain(fallback)
            .map(|p| dir.join(p.replace("{case}", id)))
            .find(|p| p.symlink_metadata().is_ok() && !same_file(p, &case.image));
        match hit {
            Some(p) => {
                found.insert(id.clone(), p);
            }
            None => missing.push(id.clone()),
        }
    }
    Ok((found, missing))
}

/// The files of `dir` (searched as [`discover`] searches) that match one of `patterns` (a layout's label
/// patterns) but are neither paired with a case nor one of `images`: in a labels folder, label maps that
/// match no case, usually a naming mistake. Files named after a case of `ids` plus a suffix (`B-1-t1n`:
/// the other sequences of a BraTS folder given as both --query and --labels) are not listed.
pub fn unpaired_files(
    dir: &Path,
    paired: &BTreeMap<String, PathBuf>,
    images: &[&Path],
    patterns: &[String],
    ids: &[&str],
) -> Result<Vec<PathBuf>> {
    let of_a_case = |id: &str| {
        ids.iter().any(|c| {
            id.strip_prefix(c)
                .is_some_and(|rest| rest.starts_with(['-', '_', '.']))
        })
    };
    let known: BTreeSet<PathBuf> = paired
        .values()
        .map(PathBuf::as_path)
        .chain(images.iter().copied())
        .map(crate::formats::absolute)
        .collect();
    Ok(list_files(dir)?
        .into_iter()
        .filter(|f| {
            patterns
                .iter()
                .filter_map(|p| match_pattern(p, f))
                .any(|id| !of_a_case(&id))
        })
        .map(|f| dir.join(f))
        .filter(|p| !known.contains(&crate::formats::absolute(p)))
        .collect())
}

/// The brain mask of every case of `found` in `dir` (`--masks`), by the layout's mask patterns then the
/// generic ones; a case without one is an error naming its image and the names looked for.
pub fn pair_masks(dir: &Path, found: &Discovered) -> Result<BTreeMap<String, PathBuf>> {
    let layout = manifest(&found.layout)?;
    let generic = manifest("generic")?;
    let (paired, missing) =
        pair(dir, &found.cases, &layout.masks, &generic.masks).map_err(|e| match e {
            Error::BadBatch { path, problem } => {
                Error::bad_argument("--masks", format!("{}: {problem}", path.display()))
            }
            other => other,
        })?;
    if let Some(id) = missing.first() {
        let case = found.cases.iter().find(|c| &c.id == id).expect("listed");
        let mut looked: Vec<String> = Vec::new();
        for p in layout.masks.iter().chain(&generic.masks) {
            let name = p.replace("{case}", id);
            if !looked.contains(&name) {
                looked.push(name);
            }
        }
        return Err(Error::bad_input(
            &case.image,
            format!(
                "no brain mask for case `{id}` in {} (--masks; looked for {}): with --masks every case needs one",
                dir.display(),
                looked.join(", ")
            ),
        ));
    }
    Ok(paired)
}

/// Removes the cases whose image is the label map (or mask) of another case (labels in the image folder).
pub fn drop_paired_files(d: &mut Discovered, paired: &BTreeMap<String, PathBuf>) {
    let taken: BTreeSet<(&String, &PathBuf)> = paired.iter().collect();
    let label_paths: BTreeSet<&PathBuf> = paired.values().collect();
    d.cases
        .retain(|c| !label_paths.contains(&c.image) || taken.contains(&(&c.id, &c.image)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpaired_files_are_label_maps_of_no_case_not_other_sequences() {
        let dir = tempfile::tempdir().unwrap();
        for f in [
            "B-1/B-1-t2w.nii.gz",
            "B-1/B-1-t1n.nii.gz",
            "B-1/B-1-seg.nii.gz",
            "B-2/B-2-t2w.nii.gz",
            "B-2/B-2-t1n.nii.gz",
            "B-9/B-9-seg.nii.gz",
        ] {
            let p = dir.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, b"x").unwrap();
        }
        // The BraTS layout with --query and --labels naming one folder: B-2 has no label, B-9 no image.
        let found = discover(dir.path(), None).unwrap();
        assert_eq!(found.layout, "brats-mets-2025");
        let m = manifest(&found.layout).unwrap();
        let (paired, missing) = pair(dir.path(), &found.cases, &m.labels, &[]).unwrap();
        assert_eq!(missing, ["B-2"]);
        let images: Vec<&Path> = found.cases.iter().map(|c| c.image.as_path()).collect();
        let ids: Vec<&str> = found.cases.iter().map(|c| c.id.as_str()).collect();
        let unpaired = unpaired_files(dir.path(), &paired, &images, &m.labels, &ids).unwrap();
        assert_eq!(unpaired, [dir.path().join("B-9/B-9-seg.nii.gz")]);
        // The flat BraTS layout: `{case}.nii.gz` matches every file, but B-1-t1n is B-1's.
        let flat = tempfile::tempdir().unwrap();
        for f in [
            "B-1-t2w", "B-1-t1n", "B-1-seg", "B-2-t2w", "B-2-t1n", "B-9-seg", "X-3",
        ] {
            std::fs::write(flat.path().join(format!("{f}.nii.gz")), b"x").unwrap();
        }
        let found = discover(flat.path(), None).unwrap();
        let (paired, _) = pair(flat.path(), &found.cases, &m.labels, &[]).unwrap();
        let images: Vec<&Path> = found.cases.iter().map(|c| c.image.as_path()).collect();
        let ids: Vec<&str> = found.cases.iter().map(|c| c.id.as_str()).collect();
        let unpaired = unpaired_files(flat.path(), &paired, &images, &m.labels, &ids).unwrap();
        assert_eq!(
            unpaired,
            [
                flat.path().join("B-9-seg.nii.gz"),
                flat.path().join("X-3.nii.gz")
            ]
        );
    }

    #[test]
    fn manifests_parse_and_say_where_data_come_from() {
        let all = manifests();
        let names: Vec<&str> = all.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["brats-mets-2025", "ixi", "demo", "generic"]);
        for m in &all {
            assert!(
                !m.source.is_empty() && !m.licence.is_empty() && !m.preprocessing.trim().is_empty()
            );
            assert!(!m.images.is_empty());
        }
        assert!(manifest("ixi").unwrap().preprocessing.contains("HD-BET"));
        assert_eq!(manifest("nope").unwrap_err().exit_code(), 2);
    }

    #[test]
    fn patterns() {
        let p = "{case}/{case}-t2w.nii.gz";
        assert_eq!(
            match_pattern(p, "BraTS-MET-00001-000/BraTS-MET-00001-000-t2w.nii.gz").as_deref(),
            Some("BraTS-MET-00001-000")
        );
        assert_eq!(match_pattern(p, "A/B-t2w.nii.gz"), None);
        assert_eq!(match_pattern(p, "A-t2w.nii.gz"), None);
        assert_eq!(
            match_pattern("{case}-T2.nii.gz", "IXI002-Guys-0828-T2.nii.gz").as_deref(),
            Some("IXI002-Guys-0828")
        );
        assert_eq!(
            match_pattern("{case}-T2.nii.gz", "IXI002-Guys-0828-PD.nii.gz"),
            None
        );
        assert_eq!(
            match_pattern("{case}.nii.gz", "x.nii.gz").as_deref(),
            Some("x")
        );
        assert_eq!(match_pattern("{case}.nii", "x.nii.gz"), None);
        assert_eq!(match_pattern("{case}.nii.gz", ".nii.gz"), None);
    }

    #[test]
    fn discovers_brats_ixi_and_generic_folders() {
        let t = tempfile::tempdir().unwrap();
        let touch = |rel: &str| {
            let p = t.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, b"").unwrap();
        };
        for c in ["BraTS-MET-00002-000", "BraTS-MET-00001-000"] {
            for s in ["t2w", "t1n", "seg"] {
                touch(&format!("brats/{c}/{c}-{s}.nii.gz"));
            }
        }
        touch("ixi/IXI002-Guys-0828-T2.nii.gz");
        touch("ixi/IXI002-Guys-0828-PD.nii.gz");
        touch("ixi/.IXI9-T2.nii.gz.tmp-1");
        touch("gen/a.b.nii.gz");
        touch("gen/c.nii");
        touch("gen/c_seg.nii.gz");
        touch("gen/readme.txt");
        let b = discover(&t.path().join("brats"), None).unwrap();
        assert_eq!(b.layout, "brats-mets-2025");
        let ids: Vec<&str> = b.cases.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["BraTS-MET-00001-000", "BraTS-MET-00002-000"]);
        let m = manifest("brats-mets-2025").unwrap();
        let (labels, missing) = pair(&t.path().join("brats"), &b.cases, &m.labels, &[]).unwrap();
        assert!(missing.is_empty());
        assert!(labels["BraTS-MET-00001-000"]
            .ends_with("BraTS-MET-00001-000/BraTS-MET-00001-000-seg.nii.gz"));
        let i = discover(&t.path().join("ixi"), None).unwrap();
        assert_eq!(i.layout, "ixi");
        assert_eq!(i.cases.len(), 1);
        assert_eq!(i.cases[0].id, "IXI002-Guys-0828");
        assert_eq!(i.ignored.len(), 1);
        let mut g = discover(&t.path().join("gen"), None).unwrap();
        assert_eq!(g.layout, "generic");
        assert_eq!(g.cases.len(), 3);
        let ids: Vec<String> = g.cases.iter().map(|c| c.id.clone()).collect();
        let gm = manifest("generic").unwrap();
        let c = g.cases.iter().find(|c| c.id == "c").unwrap().clone();
        let (labels, missing) = pair(&t.path().join("gen"), &[c], &gm.labels, &[]).unwrap();
        assert!(missing.is_empty() && labels["c"].ends_with("c_seg.nii.gz"));
        drop_paired_files(&mut g, &labels);
        let left: Vec<&str> = g.cases.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(left, ["a.b", "c"], "{ids:?}");
        std::fs::create_dir(t.path().join("empty")).unwrap();
        let e = discover(&t.path().join("empty"), None).unwrap_err();
        assert!(e.to_string().contains("no volumes found") && e.exit_code() == 2);
        assert!(discover(&t.path().join("nope"), None).is_err());
    }

    #[test]
    fn a_cohort_root_without_volumes_suggests_its_subfolders() {
        let t = tempfile::tempdir().unwrap();
        for (sub, n) in [("healthy", 2), ("query", 1)] {
            std::fs::create_dir(t.path().join(sub)).unwrap();
            for i in 0..n {
                std::fs::write(t.path().join(sub).join(format!("c{i}.nii.gz")), b"x").unwrap();
            }
        }
        std::fs::write(t.path().join("truth.json"), b"{}").unwrap();
        let e = discover(t.path(), None).unwrap_err().to_string();
        assert!(e.contains("healthy/ (2), query/ (1)"), "{e}");
        assert!(
            e.contains(&t.path().join("healthy").display().to_string()),
            "{e}"
        );
    }
}
