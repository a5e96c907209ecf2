//! The cases of a volume batch: discovery of the `--healthy` and `--query` folders with their label maps
//! and brain masks, the checks of the label maps, and the notices about them (shared with `check`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ndarray::Array3;
use serde_json::{json, Value};

use super::discover;
use super::PipelineConfig;
use crate::formats::{absolute, nifti};
use crate::messages::first_few;
use crate::parallel::map_in_order;
use crate::pipeline::cubes::CaseInput;
use crate::progress::Progress;
use crate::{Error, Result};

/// One case of the batch.
#[derive(Debug, Clone)]
pub(super) struct BatchCase {
    pub(super) input: CaseInput,
    pub(super) group: &'static str,
    pub(super) label: Option<PathBuf>,
}

/// The SHA-256 of a case's files.
#[derive(Debug, Clone)]
pub(super) struct CaseDigests {
    pub(super) image: String,
    pub(super) label: Option<String>,
    pub(super) mask: Option<String>,
}

impl BatchCase {
    /// The case as a request records it: id, group and the SHA-256 of its files (the brain mask's only
    /// when there is one, so that requests of runs without masks keep their form).
    pub(super) fn request_entry(&self, hashes: &CaseDigests) -> Value {
        let mut e = json!({
            "case": self.input.id,
            "group": self.group,
            "image_sha256": hashes.image,
            "label_sha256": hashes.label,
        });
        if let Some(m) = &hashes.mask {
            e["mask_sha256"] = json!(m);
        }
        e
    }

    /// The case as summary.json records it: the request entry and the absolute paths.
    pub(super) fn summary_entry(&self, hashes: &CaseDigests) -> Value {
        let mut e = self.request_entry(hashes);
        e["image"] = json!(absolute(&self.input.path));
        e["label"] = json!(self.label.as_deref().map(absolute));
        if let Some(m) = &self.input.mask {
            e["mask"] = json!(absolute(m));
        }
        e
    }

    /// Its files in the order [`hash_files`] gets them: image, label map, brain mask.
    pub(super) fn files(&self) -> impl Iterator<Item = &Path> {
        std::iter::once(self.input.path.as_path())
            .chain(self.label.as_deref())
            .chain(self.input.mask.as_deref())
    }
}

/// The cases of a batch, and the files of the labels folder that look like label maps but belong to no
/// case ([`discover::unpaired_files`]).
pub(super) struct Batch {
    pub(super) cases: Vec<BatchCase>,
    pub(super) unpaired_labels: Vec<PathBuf>,
}

pub(super) fn discover_cases(cfg: &PipelineConfig) -> Result<Batch> {
    find_cases(
        cfg.healthy.as_deref(),
        &cfg.query,
        cfg.labels.as_deref(),
        cfg.masks.as_deref(),
    )
}

pub(super) fn find_cases(
    healthy: Option<&Path>,
    query: &Path,
    labels_dir: Option<&Path>,
    masks_dir: Option<&Path>,
) -> Result<Batch> {
    let generic = discover::manifest("generic")?;
    let mut cases: Vec<BatchCase> = Vec::new();
    let mut unpaired_labels = Vec::new();
    let mut seen: BTreeMap<String, PathBuf> = BTreeMap::new();
    let groups = [("healthy", healthy), ("query", Some(query))];
    for (flag, dir) in [
        ("--healthy", healthy),
        ("--query", Some(query)),
        ("--labels", labels_dir),
        ("--masks", masks_dir),
    ] {
        match dir {
            Some(d) if !d.is_dir() => {
                return Err(Error::bad_argument(
                    flag,
                    format!("{}: no such folder", d.display()),
                ))
            }
            _ => {}
        }
    }
    for (group, dir) in groups {
        let Some(dir) = dir else { continue };
        let mut found = discover::discover(dir, None)?;
        let mut labels = BTreeMap::new();
        if let (Some(ldir), "query") = (labels_dir, group) {
            let manifest = discover::manifest(&found.layout)?;
            let (paired, missing) =
                discover::pair(ldir, &found.cases, &manifest.labels, &generic.labels)?;
            let images: Vec<&Path> = found.cases.iter().map(|c| c.image.as_path()).collect();
            let ids: Vec<&str> = found.cases.iter().map(|c| c.id.as_str()).collect();
            unpaired_labels =
                discover::unpaired_files(ldir, &paired, &images, &manifest.labels, &ids)?;
            discover::drop_paired_files(&mut found, &paired);
            if let Some(id) = missing
                .iter()
                .find(|id| found.cases.iter().any(|c| &c.id == *id))
            {
                let image = &found
                    .cases
                    .iter()
                    .find(|c| &c.id == id)
                    .expect("listed")
                    .image;
                return Err(Error::bad_input(
                    image,
                    format!(
                        "no label map for case `{id}` in {} (--labels){}",
                        ldir.display(),
                        labels_folder_hint(ldir, dir, paired.is_empty())
                    ),
                ));
            }
            labels = paired;
        }
        let masks = match masks_dir {
            Some(mdir) => discover::pair_masks(mdir, &found)?,
            None => BTreeMap::new(),
        };
        discover::drop_paired_files(&mut found, &masks);
        for c in found.cases {
            if let Some(other) = seen.insert(c.id.clone(), c.image.clone()) {
                return Err(Error::BadBatch {
                    path: c.image.clone(),
                    problem: format!(
                        "case id `{}` is also the id of {}: ids must be unique across --healthy and --query",
                        c.id,
                        other.display()
                    ),
                });
            }
            cases.push(BatchCase {
                label: labels.get(&c.id).cloned(),
                input: CaseInput {
                    mask: masks.get(&c.id).cloned(),
                    ..CaseInput::new(c.id, c.image)
                },
                group,
            });
        }
    }
    if cases.len() < 3 {
        return Err(Error::BadBatch {
            path: query.to_path_buf(),
            problem: format!(
                "{} volume(s) in --healthy and --query together: mutual scoring needs at least 3",
                cases.len()
            ),
        });
    }
    Ok(Batch {
        cases,
        unpaired_labels,
    })
}

/// The hint for a query case without a label map when `--labels` names the image folder itself and no
/// case paired there (the BraTS layout keeps labels next to the images, so pairs there are fine).
pub fn labels_folder_hint(labels: &Path, images: &Path, nothing_paired: bool) -> &'static str {
    if nothing_paired && crate::formats::absolute(labels) == crate::formats::absolute(images) {
        "; --labels names the --query folder itself: give the folder of the label maps"
    } else {
        ""
    }
}

/// The notice naming the files of the labels folder `ldir` that are no case's label map (usually misnamed:
/// their cases are scored without them), or `None` (shared with `check`).
pub fn unpaired_notice(ldir: &Path, unpaired: &[PathBuf]) -> Option<String> {
    if unpaired.is_empty() {
        return None;
    }
    let names: Vec<String> = unpaired.iter().map(|p| p.display().to_string()).collect();
    Some(format!(
        "mri-ad: notice: {} file(s) in {} (--labels) are no case's label map and are not used ({}): \
         check their names against the case ids (data-manifest/ says how labels pair with cases)",
        unpaired.len(),
        ldir.display(),
        first_few(&names)
    ))
}

/// What looks wrong with a label map's values, if anything: non-integer values or many distinct values,
/// as an image given as a label map has (every value > 0 counts as lesion, so it would still be used).
pub fn label_oddity(label: &nifti::Volume) -> Option<String> {
    if let Some(v) = label.data.iter().find(|v| v.fract() != 0.0) {
        return Some(format!("it has non-integer values (e.g. {v})"));
    }
    let mut distinct = std::collections::BTreeSet::new();
    for &v in &label.data {
        distinct.insert(v as i64);
        if distinct.len() > 64 {
            return Some("it has more than 64 distinct values".into());
        }
    }
    None
}

/// The notice for a label map with a [`label_oddity`] (shared with `check`).
pub fn label_oddity_notice(path: &Path, oddity: &str) -> String {
    format!(
        "mri-ad: notice: {}: {oddity}; is it an image rather than a label map? Every value > 0 counts as \
         lesion",
        path.display()
    )
}

/// Reads every label map whole (a truncated or damaged file fails here) and checks that it lies on its
/// volume's voxel grid (size and affine, as the maps stage and `check` require). Returns the notices of
/// label maps whose values look like an image's.
pub(super) fn check_labels(
    cases: &[BatchCase],
    workers: usize,
    progress: &Progress,
) -> Result<Vec<String>> {
    let labelled: Vec<&BatchCase> = cases.iter().filter(|c| c.label.is_some()).collect();
    let bar = progress.bar(labelled.len() as u64, "label check");
    let notices = map_in_order(workers, &labelled, &|| bar.inc(1), &|_, case| {
        let path = case.label.as_deref().expect("filtered");
        let label = nifti::read_volume(path)?;
        let image = nifti::read_header(&case.input.path)?;
        let (image_affine, _) = image.best_affine();
        let image_size = nifti::spatial_size(&case.input.path, &image)?;
        if !nifti::same_grid(
            image_size,
            &image_affine,
            label.size_ijk(),
            &label.affine,
            crate::volume::GRID_TOLERANCE_MM,
        ) {
            return Err(nifti::grid_mismatch(
                path,
                "label map",
                (label.size_ijk(), &label.affine),
                (image_size, &image_affine),
                &case.input.path,
            ));
        }
        Ok(label_oddity(&label).map(|o| label_oddity_notice(path, &o)))
    })?;
    bar.finish_and_clear();
    Ok(notices.into_iter().flatten().collect())
}

/// The lesion mask of a case in the cube space (any label > 0); healthy cases have none.
pub(super) fn lesion_cube(
    case: &BatchCase,
    transform: &crate::volume::Transform,
) -> Result<Array3<bool>> {
    let size = transform.size();
    match &case.label {
        Some(path) => Ok(transform
            .labels_to_cube(&nifti::read_volume(path)?)?
            .mapv(|v| v > 0)),
        None => Ok(Array3::from_elem((size, size, size), false)),
    }
}
