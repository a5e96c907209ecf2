//! The whole job on volumes (`mri-ad score --healthy --query`): discovery → preprocessing → tokens (with
//! the extract cache) → scoring → maps back on each input's grid → evaluation → run folder.
//!
//! Input: a folder of healthy volumes (optional) and one of query volumes, optionally lesion label maps for
//! the query cases. Output: the run folder of DESIGN.md (token files are cached under `tokens/`, the Nyúl
//! landmarks in `nyul.json`).
//!
//! Traps:
//! * Every case of both folders is in the one batch (leave-one-out); case ids must be unique across them.
//!   With `--masks`, every case has a brain mask ([`discover::pair_masks`]), which replaces `voxel > 0`
//!   in every stage (crop, Nyúl, tokens, maps) and whose SHA-256 joins the request and the token cache key.
//! * Volumes on other grids than the batch's frame are resampled into its world space
//!   ([`crate::volume::space`]); summary.json records the space, and `eval` rebuilds it from there (runs
//!   from before it: the first case's grid with the recorded box).
//! * The metrics are computed in the canonical cube space (S³, labels resampled by nearest neighbour), as
//!   ALGORITHM.md §8.3 specifies at 224³; the maps and masks written are on each input's own grid.
//! * A run folder is marked with `.mri-ad-run`, which records the run's request ([`run_request`]: the
//!   cases with the SHA-256 of their files, the settings that change results, file settings by content).
//!   The same request again resumes: token files whose cache key matches are reused, the rest of the
//!   outputs rewritten. A finished run (summary.json) of another request, or of none recorded, is refused
//!   without `--force`; with it, or for an unfinished run, the earlier outputs ([`RUN_OUTPUTS`]) are
//!   removed first so that none is left stale (maps of cases no longer in the batch, a ROC curve of a run
//!   with labels). A non-empty folder without the marker needs `--force`. There is no lock: two runs
//!   into one folder at once are not detected.
//! * Before anything is removed or written: the request is compared (first, so a refusal is quick), every
//!   volume and brain mask is read whole ([`Preprocessor::for_batch`]: volumes evidently not
//!   skull-stripped and without a mask, or with `--crop batch` evidently not in the batch's world space,
//!   are refused), every label map is read whole and checked against its volume's grid, the settings are checked against the batch, the
//!   `--nyul` file is read, and the backbone is loaded (library, model, `layer_<k>` outputs) when there is
//!   no token cache yet or the run replaces another's results. What can still fail later (a volume whose
//!   tokens are all void, the Nyúl fit, the label-free GMM threshold) stops the run with the token cache
//!   kept for a resume; with `--force` the earlier results are then already gone.
//! * Run folders record absolute input paths (`summary.json`), so `eval` works from any folder.
//! * Plots (`plots/`, `index.html`; `--no-plots` skips `plots/`) are drawn by [`crate::report`]: the QC
//!   montages in the maps pass, where each case's cube and upsampled map already exist.
//! * Maps: the 16³ token scores are upsampled trilinearly to the cube with each token's score at the centre
//!   of the 14³ block it describes (`--upsample centres`, a deviation from §7.2's align-corners, which puts
//!   the outer tokens on the cube's faces, up to 6.5 voxels from their blocks; `--upsample corners` restores
//!   it, and `eval` of a run from before the flag existed uses it). See [`eval::Upsample`].
//! * Memory and threads: the crop box, Nyúl and maps stages read and prepare one volume per worker
//!   ([`crate::parallel`]): as many workers as `--threads`, but no more volumes at once than
//!   `--memory-budget` holds at an estimated [`map_case_bytes`] each (the resampling inside each volume
//!   uses every core). The voxel AUROC uses a 2²⁰-bin histogram of the upsampled maps (exact to about 1e-6,
//!   integer counts merged per case), so no full-resolution map of the batch is held; the voxel-level
//!   F1-max threshold (for a supplementary Dice, not §8.3's) comes from the same histogram, to within one
//!   bin. Results are gathered in case order, so the outputs do not depend on the number of threads.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use ndarray::Array3;
use serde_json::{json, Value};

use crate::extract::ExtractConfig;
use crate::io::cubes::{CaseInput, NiftiCubes};
use crate::io::{absolute, atomic, discover, nifti, outdir, tokens};
use crate::parallel::map_in_order;
use crate::progress::Progress;
use crate::report;
use crate::score::{score_batch, ScoreConfig, ScoreResult};
use crate::volume::crop::CropBox;
use crate::volume::nyul::NyulModel;
use crate::volume::space::BatchSpace;
use crate::volume::{canonical_grid, CropMode, PreprocessConfig, Preprocessor, VolumeFiles};
use crate::{eval, Error, Result, TokenSet};

/// Marker file of a run folder.
pub const RUN_MARKER: &str = ".mri-ad-run";

/// Everything `score` on volumes needs.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub healthy: Option<PathBuf>,
    pub query: PathBuf,
    pub labels: Option<PathBuf>,
    /// Brain masks (one per case, paired by the layouts' mask patterns), replacing `voxel > 0`.
    pub masks: Option<PathBuf>,
    pub out: PathBuf,
    /// Nyúl landmarks to use instead of learning them from the healthy volumes.
    pub nyul: Option<PathBuf>,
    pub preprocess: PreprocessConfig,
    /// Backbone and tokenizer settings (`out` is replaced by `<run>/tokens`).
    pub extract: ExtractConfig,
    pub score: ScoreConfig,
    pub force: bool,
    pub quiet: bool,
    pub progress: bool,
    /// Draw `plots/` (false: `--no-plots`); `index.html` is written either way.
    pub plots: bool,
    /// How the token grid is upsampled to the cube for the maps, masks and voxel metrics.
    pub upsample: eval::Upsample,
    /// More keys for the run's `config.toml` (the backbone and preprocessing settings, so that the file
    /// given back as `--config` reproduces the run).
    pub config_extra: toml::Table,
}

/// One case of the batch.
#[derive(Debug, Clone)]
struct BatchCase {
    input: CaseInput,
    group: &'static str,
    label: Option<PathBuf>,
}

/// The SHA-256 of a case's files.
#[derive(Debug, Clone)]
struct CaseDigests {
    image: String,
    label: Option<String>,
    mask: Option<String>,
}

impl BatchCase {
    /// The case as a request records it: id, group and the SHA-256 of its files (the brain mask's only
    /// when there is one, so that requests of runs without masks keep their form).
    fn request_entry(&self, hashes: &CaseDigests) -> Value {
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
    fn summary_entry(&self, hashes: &CaseDigests) -> Value {
        let mut e = self.request_entry(hashes);
        e["image"] = json!(absolute(&self.input.path));
        e["label"] = json!(self.label.as_deref().map(absolute));
        if let Some(m) = &self.input.mask {
            e["mask"] = json!(absolute(m));
        }
        e
    }

    /// Its files in the order [`hash_files`] gets them: image, label map, brain mask.
    fn files(&self) -> impl Iterator<Item = &Path> {
        std::iter::once(self.input.path.as_path())
            .chain(self.label.as_deref())
            .chain(self.input.mask.as_deref())
    }
}

/// The outputs of a run folder that a run of another request replaces. The token cache `tokens/` is kept:
/// its files are reused wherever their cache key still matches.
const RUN_OUTPUTS: &[&str] = &[
    // First: a removal cut short must not leave a folder that looks finished.
    "summary.json",
    "config.toml",
    "eval.json",
    "graph.json",
    "index.html",
    "maps",
    "masks",
    "nyul.json",
    "plots",
    "scores.csv",
    "token_scores",
];

/// Settings that change no result, left out of a run's request: threads and memory, the library that runs
/// the model, the device, and the slices per backbone call (cached token files are reused whatever they
/// were).
const OPERATIONAL_SETTINGS: &[&str] = &["batch", "device", "memory-budget", "ort-lib", "threads"];

/// What a run folder holds the results of: `inputs` (the cases and their files' SHA-256) and `settings`
/// (the run's `config.toml` table, its file settings such as `model` given by content so that a moved or
/// copied file is the same request and a file replaced in place is not) without the
/// [`OPERATIONAL_SETTINGS`].
pub fn run_request(inputs: Value, settings: &toml::Table) -> Value {
    let settings: serde_json::Map<String, Value> = settings
        .iter()
        .filter(|(k, _)| !OPERATIONAL_SETTINGS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), serde_json::to_value(v).unwrap_or(Value::Null)))
        .collect();
    json!({"inputs": inputs, "settings": settings})
}

/// The SHA-256 of each file, one worker per core (the inputs of a request; 1 MiB of buffer each).
pub fn hash_files(paths: &[&Path]) -> Result<Vec<String>> {
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    map_in_order(workers, paths, &|| {}, &|_, p| {
        crate::io::hash::sha256_file(p)
    })
}

/// The version of the request a run folder's marker records; a marker of another version counts as one
/// without a request.
const REQUEST_FORMAT: u64 = 1;

/// The request a run folder's marker records (`None` for a marker without one, or of another
/// [`REQUEST_FORMAT`]: written before requests were recorded, or by `score2d`).
fn recorded_request(marker: &Path) -> Option<Value> {
    let text = std::fs::read_to_string(marker).ok()?;
    let doc: Value = serde_json::from_str(&text).ok()?;
    if doc.get("request_format").and_then(Value::as_u64) != Some(REQUEST_FORMAT) {
        return None;
    }
    doc.get("request").cloned()
}

/// How `now` differs from `before`, in words: the settings by name with both values, and the inputs.
fn request_differences(before: &Value, now: &Value) -> String {
    let mut out = Vec::new();
    let (old, new) = (&before["settings"], &now["settings"]);
    let mut keys: Vec<&String> = old
        .as_object()
        .into_iter()
        .chain(new.as_object())
        .flat_map(|m| m.keys())
        .collect();
    keys.sort();
    keys.dedup();
    for k in keys {
        let (a, b) = (&old[k.as_str()], &new[k.as_str()]);
        if a != b {
            out.push(format!("--{k} {a} then, {b} now"));
        }
    }
    if before["inputs"] != now["inputs"] {
        out.push(input_differences(&before["inputs"], &now["inputs"]));
    }
    out.join("; ")
}

/// How the recorded inputs differ, in words: cases that joined or left the batch, and cases whose files
/// have other contents (or that gained or lost a label map).
fn input_differences(before: &Value, now: &Value) -> String {
    let entries = |v: &Value| -> BTreeMap<String, Value> {
        v.as_array()
            .into_iter()
            .flatten()
            .map(|e| (e["case"].as_str().unwrap_or("").to_string(), e.clone()))
            .collect()
    };
    let (old, new) = (entries(before), entries(now));
    let list = |ids: Vec<&String>| first_few(&ids);
    let mut parts = Vec::new();
    let left: Vec<&String> = old.keys().filter(|k| !new.contains_key(*k)).collect();
    let joined: Vec<&String> = new.keys().filter(|k| !old.contains_key(*k)).collect();
    let moved: Vec<&String> = new
        .iter()
        .filter(|(k, v)| old.get(*k).is_some_and(|o| o["group"] != v["group"]))
        .map(|(k, _)| k)
        .collect();
    let changed: Vec<&String> = new
        .iter()
        .filter(|(k, v)| {
            old.get(*k)
                .is_some_and(|o| o != *v && o["group"] == v["group"])
        })
        .map(|(k, _)| k)
        .collect();
    if !left.is_empty() {
        parts.push(format!("cases no longer given: {}", list(left)));
    }
    if !joined.is_empty() {
        parts.push(format!("new cases: {}", list(joined)));
    }
    if !moved.is_empty() {
        parts.push(format!(
            "cases moved between --healthy and --query: {}",
            list(moved)
        ));
    }
    if !changed.is_empty() {
        parts.push(format!(
            "other file contents (image, label map or token file) for: {}",
            list(changed)
        ));
    }
    if parts.is_empty() {
        "other inputs".to_string()
    } else {
        parts.join("; ")
    }
}

/// Whether a run of `request` into `out` would replace the results of another run (`Ok(true)`), or is
/// refused: `out` holds the finished results (a summary.json) of another request, or of a run that
/// recorded none (made before requests were recorded, or by `score2d`), and `force` is not given.
pub fn replaces_another_run(out: &Path, force: bool, request: &Value) -> Result<bool> {
    let marker = out.join(RUN_MARKER);
    if !marker.is_file() {
        return Ok(false);
    }
    let before = recorded_request(&marker);
    if before.as_ref() == Some(request) {
        return Ok(false);
    }
    // An unfinished run (no summary.json) has no results to lose: its outputs go without --force.
    if !force && out.join("summary.json").is_file() {
        let what = match &before {
            Some(b) => format!("another run ({})", request_differences(b, request)),
            None => "a run whose inputs and settings are not recorded (made by an earlier mri-ad, or by \
                     score2d)"
                .to_string(),
        };
        return Err(Error::BadOutput {
            path: out.into(),
            problem: format!(
                "this run folder holds the results of {what}; choose another --out, or pass --force to \
                 replace them (the token cache tokens/ is kept and reused where it matches)"
            ),
        });
    }
    Ok(true)
}

/// Refuses inputs that lie inside the outputs a replacing run would remove (e.g. `--labels RUN/masks`).
pub fn check_inputs_outside_outputs(out: &Path, inputs: &[&Path]) -> Result<()> {
    let out = absolute(out);
    for input in inputs {
        let input = absolute(input);
        if let Some(name) = RUN_OUTPUTS.iter().find(|n| input.starts_with(out.join(n))) {
            return Err(Error::bad_input(
                &input,
                format!(
                    "this input lies in {name} of the run folder {}, which this run replaces: copy it \
                     elsewhere first",
                    out.display()
                ),
            ));
        }
    }
    Ok(())
}

/// Creates or reuses the run folder for `request` (see the module doc): a folder holding the finished
/// results of another request needs `force` ([`replaces_another_run`]), and then loses those results (not
/// its token cache) before this run writes anything, so that no file of the other run is left to pass as
/// one of this run's. The caller has checked everything it can before this point: a mistake must not
/// cost the earlier results.
pub fn prepare_run_folder(out: &Path, force: bool, request: &Value) -> Result<()> {
    let marker = out.join(RUN_MARKER);
    if marker.is_file() {
        if replaces_another_run(out, force, request)? {
            for name in RUN_OUTPUTS {
                let path = out.join(name);
                let removed = if path.is_dir() {
                    std::fs::remove_dir_all(&path)
                } else if path.exists() {
                    std::fs::remove_file(&path)
                } else {
                    Ok(())
                };
                removed.map_err(|e| Error::io(&path, e))?;
            }
        }
    } else {
        outdir::prepare(out, force)?;
    }
    atomic::write_json(
        &marker,
        &json!({
            "mri_ad_run": "run folder of mri-ad score",
            "request_format": REQUEST_FORMAT,
            "request": request,
        }),
    )
}

/// The cases of a batch, and the files of the labels folder that look like label maps but belong to no
/// case ([`discover::unpaired_files`]).
struct Batch {
    cases: Vec<BatchCase>,
    unpaired_labels: Vec<PathBuf>,
}

fn discover_cases(cfg: &PipelineConfig) -> Result<Batch> {
    find_cases(
        cfg.healthy.as_deref(),
        &cfg.query,
        cfg.labels.as_deref(),
        cfg.masks.as_deref(),
    )
}

fn find_cases(
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
    if nothing_paired && crate::io::absolute(labels) == crate::io::absolute(images) {
        "; --labels names the --query folder itself: give the folder of the label maps"
    } else {
        ""
    }
}

/// Runs the whole job.
pub fn run(cfg: &PipelineConfig) -> Result<()> {
    let started = Instant::now();
    let say = |msg: String| {
        if !cfg.quiet {
            eprintln!("{msg}");
        }
    };
    let progress = Progress::new(cfg.progress);
    let mut timings: Vec<Value> = Vec::new();
    let stage = |timings: &mut Vec<Value>, name: &str, t: Instant| {
        timings.push(json!({"stage": name, "seconds": t.elapsed().as_secs_f64()}));
    };

    let t = Instant::now();
    let Batch {
        mut cases,
        unpaired_labels,
    } = discover_cases(cfg)?;
    Preprocessor::new(cfg.preprocess.clone())?;
    // Volumes are read and prepared `workers` at a time in the crop box, Nyúl and maps stages.
    let workers = map_workers(
        cfg.score.threads,
        cfg.score.memory_budget,
        cfg.preprocess.size,
        input_voxels(&cases)?,
        cases.len(),
    );
    // The request first: a run folder holding another run's results refuses before any slow check. Its
    // file settings go by content: the model's digest (also the token cache's key) and the landmarks.
    cfg.extract.validate()?;
    crate::extract::check_model_file(&cfg.extract.model)?;
    let model_sha256 = crate::io::hash::sha256_file(&cfg.extract.model).map_err(|e| {
        Error::bad_argument(
            "--model",
            format!("{}: cannot be read: {e}", cfg.extract.model.display()),
        )
    })?;
    let given_nyul = cfg.nyul.as_deref().map(NyulModel::load).transpose()?;
    let mut settings = run_settings(&cfg.score, &cfg.config_extra)?;
    settings.insert("model".into(), format!("sha256:{model_sha256}").into());
    if let Some(nyul) = &given_nyul {
        let landmarks = serde_json::to_vec(nyul).map_err(|e| Error::Resource(e.to_string()))?;
        let digest = crate::io::hash::sha256_bytes(&landmarks);
        settings.insert("nyul".into(), format!("landmarks sha256:{digest}").into());
    }
    let files: Vec<&Path> = cases.iter().flat_map(BatchCase::files).collect();
    let mut digests = hash_files(&files)?.into_iter();
    let mut next = || digests.next().expect("one per file");
    let hashes: Vec<CaseDigests> = cases
        .iter()
        .map(|c| CaseDigests {
            image: next(),
            label: c.label.as_ref().map(|_| next()),
            mask: c.input.mask.as_ref().map(|_| next()),
        })
        .collect();
    let request = run_request(
        Value::Array(
            cases
                .iter()
                .zip(&hashes)
                .map(|(c, h)| c.request_entry(h))
                .collect(),
        ),
        &settings,
    );
    let replacing = replaces_another_run(&cfg.out, cfg.force, &request)?;
    if replacing {
        check_inputs_outside_outputs(&cfg.out, &files)?;
    }
    // The extraction keys its token cache by these digests: not computed twice.
    for (c, h) in cases.iter_mut().zip(&hashes) {
        c.input.sha256 = Some(h.image.clone());
        c.input.mask_sha256 = h.mask.clone();
    }
    stage(&mut timings, "discovery", t);
    // Every volume (and brain mask) is read whole before the run folder is touched: volumes that are
    // evidently not skull-stripped, or (with --crop batch) not in the batch's world space, are refused.
    let t = Instant::now();
    let files: Vec<VolumeFiles> = cases.iter().map(|c| c.input.files()).collect();
    let (preprocessor, geometry) =
        Preprocessor::for_batch(cfg.preprocess.clone(), &files, workers, &progress)?;
    stage(&mut timings, "crop box", t);
    let resampled: Vec<&str> = geometry
        .resampled()
        .into_iter()
        .map(|i| cases[i].input.id.as_str())
        .collect();
    if !resampled.is_empty() {
        say(format!(
            "mri-ad: notice: {} volume(s) lie on other grids than the batch's reference {} and are resampled \
             into its world space: {}",
            resampled.len(),
            cases[geometry.plan.as_ref().map_or(0, |p| p.reference)].input.id,
            first_few(&resampled)
        ));
    }
    if let Some(notice) = cfg
        .labels
        .as_deref()
        .and_then(|ldir| unpaired_notice(ldir, &unpaired_labels))
    {
        say(notice);
    }
    // Every label map is read and checked against its volume's grid now, not in the maps stage after the
    // tokens (minutes to hours later, with a half-written run folder).
    if cfg.labels.is_some() {
        let t = Instant::now();
        for notice in check_labels(&cases, workers, &progress)? {
            say(notice);
        }
        stage(&mut timings, "label check", t);
    }
    // Everything else that can be checked is checked before anything is written: the settings against
    // the batch and the --nyul file. Without a token cache,
    // or when this run replaces the results of another (a mistake must not cost them), the backbone is
    // loaded now (library, model, device and the `layer_<k>` outputs of --layers checked) and handed to
    // the extraction.
    crate::score::check_batch(&cfg.score, cases.len(), cfg.extract.layers.len())?;
    let backbone = if cfg.out.join("tokens").is_dir() && !replacing {
        None
    } else {
        Some(crate::extract::load_backbone(&cfg.extract)?)
    };
    prepare_run_folder(&cfg.out, cfg.force, &request)?;
    say(format!(
        "{} cases: {} healthy, {} query{}",
        cases.len(),
        cases.iter().filter(|c| c.group == "healthy").count(),
        cases.iter().filter(|c| c.group == "query").count(),
        if cfg.labels.is_some() {
            " (with labels)"
        } else {
            ""
        }
    ));

    // Nyúl landmarks: given, or learned on the healthy volumes (all volumes without --healthy).
    let t = Instant::now();
    let nyul = match given_nyul {
        Some(model) => model,
        None => {
            let train: Vec<&BatchCase> = if cfg.healthy.is_some() {
                cases.iter().filter(|c| c.group == "healthy").collect()
            } else {
                cases.iter().collect()
            };
            let files: Vec<VolumeFiles> = train.iter().map(|c| c.input.files()).collect();
            let per_volume = preprocessor.nyul_landmarks(&files, workers, &progress)?;
            NyulModel::fit(&per_volume)?
        }
    };
    nyul.save(&cfg.out.join("nyul.json"))?;
    stage(&mut timings, "nyul landmarks", t);

    // Tokens, cached in <run>/tokens.
    let t = Instant::now();
    let token_dir = cfg.out.join("tokens");
    let extract_cfg = ExtractConfig {
        out: token_dir.clone(),
        force: false,
        ..cfg.extract.clone()
    };
    let source = NiftiCubes::from_cases(
        cases.iter().map(|c| c.input.clone()).collect(),
        preprocessor.clone(),
        nyul,
    );
    let extracted =
        crate::extract::run_preloaded(&extract_cfg, &source, backbone, Some(model_sha256))?;
    stage(&mut timings, "tokens", t);

    let t = Instant::now();
    let mut sets: Vec<TokenSet> = Vec::with_capacity(cases.len());
    for c in &cases {
        let path = token_dir.join(format!("{}{}", c.input.id, tokens::TOKEN_SUFFIX));
        sets.push(tokens::read_token_file(&c.input.id, &path)?.set);
    }
    let result = score_batch(&sets, &cfg.score, &progress)?;
    let (grid, dim) = (sets[0].grid, sets[0].dim());
    drop(sets);
    stage(&mut timings, "scoring", t);
    for tm in &result.timings {
        timings.push(json!({"stage": format!("scoring: {}", tm.stage), "seconds": tm.seconds}));
    }

    // Maps back to each input's grid, and the evaluation.
    let t = Instant::now();
    let job = MapsJob {
        out: &cfg.out,
        size: cfg.preprocess.size,
        grid,
        upsample: cfg.upsample,
        with_labels: cfg.labels.is_some(),
        write: true,
        qc: if cfg.plots {
            Some(outdir::subdir(&cfg.out, "plots/qc")?)
        } else {
            None
        },
        workers,
    };
    let evaluation =
        maps_and_metrics(&job, &preprocessor, &cases, &result.token_scores, &progress)?;
    stage(&mut timings, "maps and evaluation", t);
    if cfg.plots {
        timings.push(
            json!({"stage": "plots: QC montages (inside maps, summed over its workers)", "seconds": evaluation.qc_seconds}),
        );
    }

    let names: Vec<String> = cases.iter().map(|c| c.input.id.clone()).collect();
    let groups: Vec<String> = cases.iter().map(|c| c.group.to_string()).collect();
    let t = Instant::now();
    let scoring = write_scoring_outputs(&cfg.out, &names, &result, &cfg.score, dim)?;
    let rows = report::score_rows(&names, &groups, &evaluation.case_labels, &result);
    report::write_scores_csv(&cfg.out.join("scores.csv"), &rows)?;
    write_config_toml(&cfg.out, &cfg.score, &cfg.config_extra)?;
    stage(&mut timings, "write outputs", t);
    let t = Instant::now();
    let plots = if cfg.plots {
        report::write_batch_plots(&cfg.out, &rows, &result)?
    } else {
        Vec::new()
    };
    stage(&mut timings, "plots: batch", t);
    let summary = json!({
        "mri_ad_version": env!("CARGO_PKG_VERSION"),
        "command": "score --healthy/--query",
        "healthy": cfg.healthy.as_deref().map(absolute),
        "query": absolute(&cfg.query),
        "labels": cfg.labels.as_deref().map(absolute),
        "cases": names.len(),
        "inputs": cases.iter().zip(&hashes).map(|(c, h)| c.summary_entry(h)).collect::<Vec<_>>(),
        "margin": cfg.preprocess.margin,
        "brain_masks": cfg.masks.as_deref().map(absolute),
        "crop": crop_summary(&cfg.preprocess, &preprocessor, &geometry, &cases),
        "maps": {"upsample": cfg.upsample, "upsample_rule": cfg.upsample.rule()},
        "preprocessing": source_preprocessing(&source),
        "backbone": {
            "model": cfg.extract.model,
            "model_sha256": extracted.model_sha256,
            "ort_lib": cfg.extract.ort_lib.clone().or_else(|| std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from)),
            "device": cfg.extract.device.to_string(),
            "layers": cfg.extract.layers,
            "proj_dim": cfg.extract.proj_dim,
            "seed": cfg.extract.seed,
            "size": cfg.extract.size,
            "provider": extracted.provider,
            "token_providers": extracted.token_providers,
            "computed": extracted.computed,
            "reused": extracted.reused,
            "slices_inferred": extracted.slices_inferred,
        },
        "scoring": scoring,
        "metrics": evaluation.metrics,
        "masks": evaluation.masks_note,
        "timings": timings,
        "total_seconds": started.elapsed().as_secs_f64(),
    });
    atomic::write_json(&cfg.out.join("summary.json"), &summary)?;
    let links = report::html::IndexLinks {
        plots,
        qc: cfg.plots,
        maps: true,
        masks: cfg.labels.is_some(),
    };
    report::html::write_index(&cfg.out, &rows, &summary, &links)?;
    say(format!(
        "done in {:.1} s; wrote {} (scores.csv, maps/, summary.json, index.html)",
        started.elapsed().as_secs_f64(),
        cfg.out.display()
    ));
    Ok(())
}

/// The crop and the batch space as summary.json records them (`eval` rebuilds the preprocessing from it).
fn crop_summary(
    config: &PreprocessConfig,
    preprocessor: &Preprocessor,
    geometry: &crate::volume::BatchGeometry,
    cases: &[BatchCase],
) -> Value {
    let Some(space) = &preprocessor.space else {
        return json!({"mode": config.crop, "batch_box": Value::Null});
    };
    let plan = geometry.plan.as_ref().expect("a space comes from a plan");
    let (lo, hi) = space.box_mm();
    let cube =
        crate::volume::resize::CubeGrid::fit(&space.crop, space.frame.spacing(), config.size);
    json!({
        "mode": config.crop,
        "batch_box": space.crop,
        "space": space,
        "reference": cases[plan.reference].input.id,
        "box_mm": {"first_voxel": lo, "last_voxel": hi},
        "cube_voxel_mm": cube.voxel_mm,
        "resampled": geometry.resampled().into_iter().map(|i| cases[i].input.id.clone()).collect::<Vec<_>>(),
        "rule": "the union of the brain boxes in world space (RAS+ mm) plus the margin, in the voxel frame of the \
                 reference volume's canonical grid; volumes on other grids are resampled (trilinear) at the same \
                 world points",
    })
}

fn source_preprocessing(source: &NiftiCubes) -> Value {
    use crate::io::cubes::CubeSource;
    source.preprocessing()
}

struct Evaluation {
    case_labels: Vec<Option<u8>>,
    metrics: Value,
    masks_note: Value,
    /// Seconds spent drawing the QC montages.
    qc_seconds: f64,
}

/// What [`maps_and_metrics`] works on.
struct MapsJob<'a> {
    out: &'a Path,
    size: usize,
    grid: [usize; 3],
    upsample: eval::Upsample,
    with_labels: bool,
    /// Write the maps and masks (false: metrics only, for `eval`).
    write: bool,
    /// Draw the QC montages into this folder.
    qc: Option<PathBuf>,
    /// How many cases are worked on at once (see [`map_workers`]).
    workers: usize,
}

/// How many volumes `eval` works on at once: `threads` (0 = one per core) within `memory_budget` MiB, as
/// `--threads` and `--memory-budget` of `score`.
#[derive(Debug, Clone, Copy)]
pub struct Workers {
    pub threads: usize,
    pub memory_budget: usize,
}

/// Bytes one case needs in the maps stage, an estimate on the high side (measured at 224³ with 1-mm MNI
/// inputs: about half of it; a map with mostly distinct values can need more for its voxel-AP groups): the
/// cube, its brain mask, the upsampled map, the lesion cube, the predicted mask and the sorted voxel-AP
/// groups of an `S³` cube (about 32 bytes per cube voxel), the input volume, its label map and the map and
/// mask resampled onto its grid (16 bytes per input voxel), and the case's 2²⁰-bin histogram.
fn map_case_bytes(size: usize, input_voxels: usize) -> usize {
    32 * size.pow(3) + 16 * input_voxels + 16 * HISTOGRAM_BINS
}

/// How many volumes the crop box, Nyúl and maps stages work on at once: `threads` (0 = one per core), no
/// more than the cases, and no more than `budget_mib` holds at [`map_case_bytes`] each (at least one).
fn map_workers(
    threads: usize,
    budget_mib: usize,
    size: usize,
    input_voxels: usize,
    cases: usize,
) -> usize {
    let threads = if threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        threads
    };
    let fit = budget_mib * 1024 * 1024 / map_case_bytes(size, input_voxels);
    threads.min(fit).min(cases).max(1)
}

/// The number of voxels of the largest input volume (from the headers), to size [`map_workers`].
fn input_voxels(cases: &[BatchCase]) -> Result<usize> {
    let mut most = 0;
    for case in cases {
        let h = nifti::read_header(&case.input.path)?;
        most = most.max(h.dim[1..4].iter().map(|&d| d.max(1) as usize).product());
    }
    Ok(most)
}

/// What the first pass over one case gives (its voxels go straight into the batch histogram).
struct CasePass {
    /// With labels: 1 when the case has a lesion.
    label: Option<u8>,
    /// Lesion cases: the distance in cube voxels from the hottest voxel of the upsampled map to the lesion
    /// (0: it lies in the lesion; otherwise how near a miss is).
    hottest_distance: Option<f64>,
    /// Lesion cases: the voxel AP of the case's own map (threshold-free, no shared threshold).
    ap: Option<f64>,
    /// Without labels: the fit of the label-free mask threshold of §9.
    gmm: Option<Value>,
    /// With labels: the token labels (a token is positive when its block holds a lesion voxel).
    token_labels: Vec<bool>,
    qc_seconds: f64,
}

/// What the passes over the cases share.
struct MapsContext<'a> {
    job: &'a MapsJob<'a>,
    preprocessor: &'a Preprocessor,
    scores: &'a [Vec<f32>],
    maps_dir: Option<PathBuf>,
    gmm_masks_dir: Option<PathBuf>,
    overlay: (f32, f32),
    range: (f32, f32),
}

impl MapsContext<'_> {
    fn token_grid(&self, a: usize) -> Array3<f32> {
        let g = self.job.grid;
        Array3::from_shape_vec((g[0], g[1], g[2]), self.scores[a].clone())
            .expect("token scores have M = grid entries")
    }

    fn upsampled(&self, a: usize) -> Array3<f32> {
        let s = self.job.size;
        eval::upsample_trilinear(self.token_grid(a).view(), [s, s, s], self.job.upsample)
    }

    /// Pass 1 for case `a`: its map on its input's grid, the label-free mask without labels, its QC montage,
    /// and with labels its per-case metrics, token labels and histogram counts.
    fn first_pass(
        &self,
        a: usize,
        c: &BatchCase,
        histogram: &Mutex<eval::ScoreHistogram>,
    ) -> Result<CasePass> {
        let (volume, brain_mask) = c.input.files().read()?;
        let prepared = self.preprocessor.prepare(&volume, brain_mask.as_ref())?;
        let up = self.upsampled(a);
        let mut pass = CasePass {
            label: None,
            hottest_distance: None,
            ap: None,
            gmm: None,
            token_labels: Vec::new(),
            qc_seconds: 0.0,
        };
        if let Some(dir) = &self.maps_dir {
            let native = prepared.transform.map_to_native(&up, 0.0)?;
            nifti::write_map_like(
                &dir.join(format!("{}_anomaly.nii.gz", c.input.id)),
                &volume,
                &native,
            )?;
        }
        if let Some(dir) = &self.gmm_masks_dir {
            let fit = gmm_mask_threshold(&up, &prepared.mask, &c.input.path)?;
            let predicted = ndarray::Zip::from(&up)
                .and(&prepared.mask)
                .map_collect(|&v, &brain| (brain && v as f64 > fit.tau) as u8);
            let native = prepared.transform.mask_to_native(&predicted)?;
            nifti::write_mask_like(
                &dir.join(format!("{}_mask.nii.gz", c.input.id)),
                &volume,
                &native,
            )?;
            pass.gmm = Some(serde_json::to_value(&fit).expect("serialisable"));
        }
        let mask = if self.job.with_labels {
            Some(lesion_cube(c, &prepared.transform)?)
        } else {
            None
        };
        if let Some(dir) = &self.job.qc {
            let t = Instant::now();
            let image = report::plots::QcImage {
                case: &c.input.id,
                cube: prepared.cube.view(),
                map: up.view(),
                label: mask.as_ref().map(|m| m.view()),
                threshold: self.overlay.0,
                top: self.overlay.1,
                score: self.scores[a]
                    .iter()
                    .copied()
                    .fold(f32::NEG_INFINITY, f32::max),
            };
            report::plots::qc_montage(&dir.join(format!("{}.png", c.input.id)), &image)?;
            pass.qc_seconds = t.elapsed().as_secs_f64();
        }
        drop(prepared);
        drop(volume);
        if let Some(mask) = mask {
            let lesion = mask.iter().any(|&v| v);
            pass.label = Some(lesion as u8);
            if lesion {
                // The same voxel the QC montage marks (ties: the one nearest their centre).
                let hottest = report::plots::qc::hottest(up.view());
                pass.hottest_distance = eval::distance_to_mask(mask.view(), hottest);
                pass.ap = eval::average_precision(
                    up.as_slice().expect("upsampled maps are contiguous"),
                    mask.as_slice().expect("lesion cubes are contiguous"),
                );
            }
            let patch = self.job.size / self.job.grid[0];
            pass.token_labels = eval::pool_labels(mask.view(), patch)
                .iter()
                .copied()
                .collect();
            // Integer counts: the batch histogram is the same whatever order the cases finish in.
            let mut counts =
                eval::ScoreHistogram::new(self.range.0 as f64, self.range.1 as f64, HISTOGRAM_BINS);
            counts.add(up.iter().copied(), mask.iter().copied());
            histogram
                .lock()
                .expect("no worker panicked holding the histogram")
                .merge(&counts);
        }
        Ok(pass)
    }

    /// Pass 2 for case `a`: its Dice at the threshold `t` (none: nothing is predicted), its Dice at the
    /// voxel-level threshold `t_voxel` and, with `masks_dir`, its binary mask at `t` on its input's grid.
    fn second_pass(
        &self,
        a: usize,
        c: &BatchCase,
        t: Option<f64>,
        t_voxel: Option<f64>,
        masks_dir: Option<&Path>,
    ) -> Result<(f64, f64)> {
        let (volume, brain_mask) = c.input.files().read()?;
        let prepared = self.preprocessor.prepare(&volume, brain_mask.as_ref())?;
        let up = self.upsampled(a);
        let mask = lesion_cube(c, &prepared.transform)?;
        let predicted = up.mapv(|v| t.is_some_and(|t| v as f64 >= t));
        let dice = eval::dice(predicted.iter().copied(), mask.iter().copied());
        let dice_voxel = eval::dice(
            up.iter().map(|&v| t_voxel.is_some_and(|t| v as f64 >= t)),
            mask.iter().copied(),
        );
        if let Some(dir) = masks_dir {
            let native = prepared
                .transform
                .mask_to_native(&predicted.mapv(|v| v as u8))?;
            nifti::write_mask_like(
                &dir.join(format!("{}_mask.nii.gz", c.input.id)),
                &volume,
                &native,
            )?;
        }
        Ok((dice, dice_voxel))
    }
}

/// Bins of the voxel-AUROC histogram.
const HISTOGRAM_BINS: usize = 1 << 20;

/// Writes the anomaly maps on each input's grid and, with labels, computes the metrics of §8.3 and writes
/// the binary masks at the token-grid F1-max threshold. Cases are worked on `job.workers` at a time
/// ([`map_in_order`]); every result is gathered in case order, so the outputs do not depend on the number of
/// workers.
fn maps_and_metrics(
    job: &MapsJob,
    preprocessor: &Preprocessor,
    cases: &[BatchCase],
    scores: &[Vec<f32>],
    progress: &Progress,
) -> Result<Evaluation> {
    let range = eval::score_range(scores);
    let ctx = MapsContext {
        job,
        preprocessor,
        scores,
        maps_dir: if job.write {
            Some(outdir::subdir(job.out, "maps")?)
        } else {
            None
        },
        // Without labels: the label-free masks of §9, one GMM threshold per volume.
        gmm_masks_dir: if job.write && !job.with_labels {
            Some(outdir::subdir(job.out, "masks")?)
        } else {
            None
        },
        overlay: report::plots::qc::overlay_range(scores),
        range,
    };
    let histogram = Mutex::new(eval::ScoreHistogram::new(
        range.0 as f64,
        range.1 as f64,
        HISTOGRAM_BINS,
    ));
    // Pass 1: maps; with labels, cube-space lesion masks → token labels and the voxel histogram.
    let bar = progress.bar(
        cases.len() as u64,
        if job.write { "maps" } else { "evaluation" },
    );
    let passes = map_in_order(job.workers, cases, &|| bar.inc(1), &|a, c| {
        ctx.first_pass(a, c, &histogram)
    })?;
    bar.finish_and_clear();
    let qc_seconds = passes.iter().map(|p| p.qc_seconds).sum();
    let case_labels: Vec<Option<u8>> = passes.iter().map(|p| p.label).collect();
    if !job.with_labels {
        let gmm_per_case: serde_json::Map<String, Value> = cases
            .iter()
            .zip(&passes)
            .filter_map(|(c, p)| Some((c.input.id.clone(), p.gmm.clone()?)))
            .collect();
        return Ok(Evaluation {
            case_labels,
            metrics: Value::Null,
            masks_note: if job.write {
                json!({
                    "threshold": "label-free: per volume, the GMM threshold of ALGORITHM.md §9 (q_tr 0.95, alpha_tail 0.01) \
                                  fitted on the brain voxels of the upsampled S³ map (at most 2^18 of them, an even stride); \
                                  mask = brain voxel with value > tau",
                    "per_case": gmm_per_case,
                })
            } else {
                Value::Null
            },
            qc_seconds,
        });
    }
    let histogram = histogram
        .into_inner()
        .expect("no worker panicked holding the histogram");
    let token_scores: Vec<f32> = scores.iter().flatten().copied().collect();
    let token_labels: Vec<bool> = passes
        .iter()
        .flat_map(|p| p.token_labels.iter().copied())
        .collect();
    let lesion_cases: Vec<(&BatchCase, &CasePass)> = cases
        .iter()
        .zip(&passes)
        .filter(|(_, p)| p.label == Some(1))
        .collect();
    let hottest_distance: Vec<(String, f64)> = lesion_cases
        .iter()
        .map(|(c, p)| {
            let d = p.hottest_distance.expect("a lesion case has a lesion");
            (c.input.id.clone(), d)
        })
        .collect();
    let case_ap: Vec<(String, f64)> = lesion_cases
        .iter()
        .map(|(c, p)| {
            (
                c.input.id.clone(),
                p.ap.expect("a lesion case has positives"),
            )
        })
        .collect();
    // Patient level.
    let patient_scores: Vec<f32> = scores
        .iter()
        .map(|s| s.iter().copied().fold(f32::NEG_INFINITY, f32::max))
        .collect();
    let patient_labels: Vec<bool> = case_labels.iter().map(|l| *l == Some(1)).collect();
    let threshold = eval::f1_max(&token_scores, &token_labels);
    // Pass 2: Dice at t* and at the voxel-level threshold, and the binary masks (at t*) on each input's grid.
    let t = threshold.map(|b| b.1);
    let masks_dir = if job.write {
        Some(outdir::subdir(job.out, "masks")?)
    } else {
        None
    };
    let bar = progress.bar(
        cases.len() as u64,
        if job.write { "Dice and masks" } else { "Dice" },
    );
    let voxel_best = histogram.f1_max();
    let t_voxel = voxel_best.map(|b| b.1);
    let both = map_in_order(job.workers, cases, &|| bar.inc(1), &|a, c| {
        ctx.second_pass(a, c, t, t_voxel, masks_dir.as_deref())
    })?;
    bar.finish_and_clear();
    let token_dice = eval::ThresholdDice::new(
        threshold,
        scores
            .iter()
            .zip(&passes)
            .map(|(s, p)| eval::token_dice(s, &p.token_labels, t))
            .collect(),
        &patient_labels,
    );
    let dice = eval::ThresholdDice::new(
        threshold,
        both.iter().map(|d| d.0).collect(),
        &patient_labels,
    );
    let dice_voxel = eval::ThresholdDice::new(
        voxel_best,
        both.iter().map(|d| d.1).collect(),
        &patient_labels,
    );
    let by_case = |values: &[f64]| -> serde_json::Map<String, Value> {
        cases
            .iter()
            .zip(values)
            .map(|(c, &d)| (c.input.id.clone(), json!(d)))
            .collect()
    };
    let metrics = json!({
        "space": format!("canonical cube {}³ (labels resampled by nearest neighbour)", job.size),
        "patient_auroc": eval::auroc(&patient_scores, &patient_labels),
        "patient_f1_max": eval::f1_max(&patient_scores, &patient_labels).map(|b| b.0),
        "voxel_auroc": histogram.auroc(),
        "voxel_auroc_method": "2^20-bin histogram of the upsampled maps (ties within a bin count 1/2)",
        "token_f1_max": dice.f1_max,
        "dice_threshold": dice.threshold,
        "dice_mean": dice.mean,
        "dice_mean_lesion_cases": dice.mean_lesion,
        "dice_per_case": by_case(&dice.per_case),
        "token_dice_mean": token_dice.mean,
        "token_dice_mean_lesion_cases": token_dice.mean_lesion,
        "token_dice_per_case": by_case(&token_dice.per_case),
        "token_dice_note": "not ALGORITHM.md §8.3: per case, the Dice on the token grid of the tokens >= dice_threshold against the token labels (a token is lesion when any of its voxels is); pooled over all cases this Dice is token_f1_max",
        "voxel_f1_max": dice_voxel.f1_max,
        "voxel_f1_threshold": dice_voxel.threshold,
        "voxel_f1_method": "2^20-bin histogram of the upsampled maps against the cube-space lesion masks, pooled over all cases; the threshold is the lower edge of the best bin (predict map >= threshold)",
        "dice_at_voxel_threshold_mean": dice_voxel.mean,
        "dice_at_voxel_threshold_mean_lesion_cases": dice_voxel.mean_lesion,
        "dice_at_voxel_threshold_per_case": by_case(&dice_voxel.per_case),
        "dice_at_voxel_threshold_note": "not ALGORITHM.md §8.3 (whose Dice, dice_*, is at the token-grid threshold dice_threshold): the same Dice at the voxel-level F1-max threshold voxel_f1_threshold (the threshold of voxel-level protocols); the masks use dice_threshold",
        "hottest_voxel_in_lesion_fraction": (!hottest_distance.is_empty()).then(|| {
            hottest_distance.iter().filter(|h| h.1 == 0.0).count() as f64 / hottest_distance.len() as f64
        }),
        "hottest_voxel_in_lesion": hottest_distance.iter().map(|(c, d)| (c.clone(), json!(*d == 0.0))).collect::<serde_json::Map<String, Value>>(),
        "hottest_voxel_distance": hottest_distance.iter().map(|(c, d)| (c.clone(), json!(d))).collect::<serde_json::Map<String, Value>>(),
        "hottest_voxel_distance_method": "per lesion case, Euclidean distance in cube voxels from the hottest voxel to the nearest lesion voxel (0 inside)",
        "voxel_ap_mean_lesion_cases": (!case_ap.is_empty()).then(|| case_ap.iter().map(|c| c.1).sum::<f64>() / case_ap.len() as f64),
        "voxel_ap_per_case": case_ap.iter().map(|(c, v)| (c.clone(), json!(v))).collect::<serde_json::Map<String, Value>>(),
        "voxel_ap_method": "per lesion case, exact average precision (scikit-learn's definition) of its upsampled map over every voxel of its cube",
    });
    Ok(Evaluation {
        case_labels,
        metrics,
        masks_note: json!("threshold: the token-grid F1-max threshold t* (dice_threshold), applied to the upsampled maps"),
        qc_seconds,
    })
}

/// The §9 threshold of one volume's upsampled map, fitted on its brain voxels (an even stride keeps at most
/// 2^18 of them: the EM runs 100 iterations at most, and a few hundred thousand values pin the two
/// Gaussians down).
fn gmm_mask_threshold(
    up: &Array3<f32>,
    brain: &Array3<bool>,
    path: &Path,
) -> Result<eval::gmm::GmmThreshold> {
    let values: Vec<f32> = up
        .iter()
        .zip(brain.iter())
        .filter(|(_, &b)| b)
        .map(|(&v, _)| v)
        .collect();
    let stride = values.len().div_ceil(1 << 18).max(1);
    let sample: Vec<f32> = values.iter().step_by(stride).copied().collect();
    eval::gmm::gmm_threshold(
        &sample,
        eval::gmm::DEFAULT_Q_TR,
        eval::gmm::DEFAULT_ALPHA_TAIL,
    )
    .map_err(|e| Error::bad_input(path, format!("the label-free mask threshold failed: {e}")))
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

/// The first five of `items`, comma-separated, with how many more there are.
fn first_few<S: AsRef<str>>(items: &[S]) -> String {
    let shown: Vec<&str> = items.iter().take(5).map(AsRef::as_ref).collect();
    match items.len() - shown.len() {
        0 => shown.join(", "),
        more => format!("{} and {more} more", shown.join(", ")),
    }
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
fn check_labels(cases: &[BatchCase], workers: usize, progress: &Progress) -> Result<Vec<String>> {
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
fn lesion_cube(case: &BatchCase, transform: &crate::volume::Transform) -> Result<Array3<bool>> {
    let size = transform.size();
    match &case.label {
        Some(path) => Ok(transform
            .labels_to_cube(&nifti::read_volume(path)?)?
            .mapv(|v| v > 0)),
        None => Ok(Array3::from_elem((size, size, size), false)),
    }
}

/// A struct of settings as a TOML table (the form of a `--config` file).
pub fn toml_table(settings: &impl serde::Serialize) -> Result<toml::Table> {
    match toml::Value::try_from(settings).map_err(|e| Error::Resource(e.to_string()))? {
        toml::Value::Table(t) => Ok(t),
        other => Err(Error::Resource(format!(
            "settings serialised to a {}, not a table",
            other.type_str()
        ))),
    }
}

/// The settings of a run as its `config.toml` table: the scoring keys of `config` plus `extra` (for `score`
/// on volumes, the backbone and preprocessing keys).
pub fn run_settings(config: &ScoreConfig, extra: &toml::Table) -> Result<toml::Table> {
    let mut table = toml_table(config)?;
    table.extend(extra.clone());
    Ok(table)
}

/// Writes the effective settings ([`run_settings`]) as `config.toml`, a valid `--config` file.
pub fn write_config_toml(out: &Path, config: &ScoreConfig, extra: &toml::Table) -> Result<()> {
    let table = run_settings(config, extra)?;
    let text = toml::to_string(&table).map_err(|e| Error::Resource(e.to_string()))?;
    atomic::write_bytes(&out.join("config.toml"), text.as_bytes())
}

/// Writes `token_scores/` and `graph.json`, and returns the scoring part of `summary.json`. Shared by
/// `score --tokens`, `score` on volumes and `score2d`; each also writes its own `scores.csv` (the 2D table
/// has more columns) and its `config.toml` with [`write_config_toml`].
pub fn write_scoring_outputs(
    out: &Path,
    names: &[String],
    result: &ScoreResult,
    config: &ScoreConfig,
    dim: usize,
) -> Result<Value> {
    report::write_token_scores(out, names, &result.token_scores)?;
    if let Some(g) = &result.graph {
        atomic::write_json(
            &out.join("graph.json"),
            &report::graph_json(g, names, &result.excluded, &result.subsets),
        )?;
    }
    let excluded_total: usize = result.excluded.iter().map(Vec::len).sum();
    Ok(json!({
        "config": config,
        "seed": config.seed,
        "msm_k": if result.subsets.len() == 1 { json!(result.k) } else { json!(result.subsets.iter().map(|p| p.k).collect::<Vec<_>>()) },
        "parts": result.subsets.iter().map(|p| p.cases.iter().map(|&i| names[i].clone()).collect::<Vec<_>>()).collect::<Vec<_>>(),
        "void_tokens": {
            "in_search": config.keep_void,
            "active_tokens": result.active_tokens,
            "total_tokens": result.total_tokens,
        },
        "excluded_tokens": excluded_total,
        "excluded_fraction": excluded_total as f64 / result.total_tokens as f64,
        "outlier_communities": result.graph.as_ref().map(|g| g.communities.iter().filter(|c| c.outlier).count()),
        "distance_kernel": {
            "token_pairs_compared": result.pairs_compared,
            "seconds": result.kernel_seconds,
            "gflops": 2.0 * dim as f64 * result.pairs_compared / result.kernel_seconds.max(1e-9) / 1e9,
        },
        "memory_estimate_mib": result.memory_estimate as f64 / 1048576.0,
        "similarity_scaling": result.scaling.to_json(),
    }))
}

/// `mri-ad eval`: recomputes the metrics of a finished run (token scores and inputs as recorded in its
/// summary.json) against the label maps of `labels`; writes `<run>/eval.json` and returns it.
pub fn evaluate_run(
    run: &Path,
    labels: &Path,
    workers: Workers,
    progress: &Progress,
) -> Result<Value> {
    let summary_path = run.join("summary.json");
    if !summary_path.is_file() {
        let problem = if run.is_file() {
            "a file, not a run folder"
        } else if !run.is_dir() {
            "no such folder"
        } else if run.join(RUN_MARKER).is_file() {
            "an unfinished run folder (no summary.json yet): run the same `mri-ad score` command again to \
             finish it"
        } else {
            "not a run folder of `mri-ad score` (it has no summary.json)"
        };
        return Err(Error::bad_argument(
            "--run",
            format!("{}: {problem}", run.display()),
        ));
    }
    let text = std::fs::read_to_string(&summary_path).map_err(|e| Error::io(&summary_path, e))?;
    let summary: Value = serde_json::from_str(&text)
        .map_err(|e| Error::bad_input(&summary_path, format!("not a run summary: {e}")))?;
    let bad = |what: &str| {
        Error::bad_input(
            &summary_path,
            format!("{what} missing: not a run folder of `mri-ad score --query`"),
        )
    };
    let query = summary["query"].as_str().ok_or_else(|| bad("`query`"))?;
    let healthy = summary["healthy"].as_str().map(PathBuf::from);
    let size = summary["backbone"]["size"]
        .as_u64()
        .ok_or_else(|| bad("`backbone.size`"))? as usize;
    let margin = summary["margin"].as_u64().ok_or_else(|| bad("`margin`"))? as usize;
    for (flag, dir) in [
        ("--query", Some(Path::new(query))),
        ("--healthy", healthy.as_deref()),
    ] {
        let Some(dir) = dir else { continue };
        if !dir.is_dir() {
            return Err(Error::bad_input(
                &summary_path,
                format!(
                    "the {flag} folder it records, {}, does not exist{}",
                    dir.display(),
                    if dir.is_relative() {
                        " (a relative path, read from the current folder: run eval from the folder the run \
                         was made in)"
                    } else {
                        ""
                    }
                ),
            ));
        }
    }
    // The brain masks the run used (runs from before --masks existed used none).
    let masks = summary["brain_masks"].as_str().map(PathBuf::from);
    let cases = find_cases(
        healthy.as_deref(),
        Path::new(query),
        Some(labels),
        masks.as_deref(),
    )?
    .cases;
    let mut scores = Vec::with_capacity(cases.len());
    for c in &cases {
        let path = run.join("token_scores").join(format!("{}.npy", c.input.id));
        let file = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
        let s: ndarray::Array1<f32> = ndarray_npy::ReadNpyExt::read_npy(file).map_err(|e| {
            Error::bad_input(&path, format!("not a float32 token-score vector: {e}"))
        })?;
        scores.push(s.to_vec());
    }
    let m = scores[0].len();
    let g = (m as f64).cbrt().round() as usize;
    if g * g * g != m || scores.iter().any(|s| s.len() != m) || size % g != 0 {
        return Err(Error::bad_input(
            run.join("token_scores"),
            format!("token scores of {m} entries do not form a cube grid for size {size}"),
        ));
    }
    // The crop as the run recorded it (runs from before `crop` existed cropped each volume on its own).
    let crop_mode = match summary["crop"]["mode"].as_str() {
        Some(m) => m
            .parse()
            .map_err(|e: String| Error::bad_input(&summary_path, e))?,
        None => CropMode::Volume,
    };
    let mut preprocessor = Preprocessor::new(PreprocessConfig {
        size,
        margin,
        crop: crop_mode,
    })?;
    if crop_mode == CropMode::Batch {
        let space = match summary["crop"].get("space") {
            Some(recorded) => serde_json::from_value::<BatchSpace>(recorded.clone())
                .map_err(|e| bad(&format!("`crop.space` ({e})")))?,
            // Runs from before the world space: every volume on the first one's grid, the box in its frame.
            None => {
                let crop: CropBox = serde_json::from_value(summary["crop"]["batch_box"].clone())
                    .map_err(|e| bad(&format!("`crop.batch_box` ({e})")))?;
                let first = nifti::read_header(&cases[0].input.path)?;
                let size = nifti::spatial_size(&cases[0].input.path, &first)?;
                BatchSpace {
                    frame: canonical_grid(size, &first.best_affine().0).1,
                    crop,
                }
            }
        };
        preprocessor = preprocessor.with_space(space);
    }
    // The upsampling as the run recorded it (runs from before `maps` existed used align-corners).
    let upsample = match summary["maps"]["upsample"].as_str() {
        Some(u) => u
            .parse()
            .map_err(|e: String| Error::bad_input(&summary_path, e))?,
        None => eval::Upsample::Corners,
    };
    let job = MapsJob {
        out: run,
        size,
        grid: [g, g, g],
        upsample,
        with_labels: true,
        write: false,
        qc: None,
        workers: map_workers(
            workers.threads,
            workers.memory_budget,
            size,
            input_voxels(&cases)?,
            cases.len(),
        ),
    };
    let evaluation = maps_and_metrics(&job, &preprocessor, &cases, &scores, progress)?;
    let doc =
        json!({"run": absolute(run), "labels": absolute(labels), "metrics": evaluation.metrics});
    atomic::write_json(&run.join("eval.json"), &doc)?;
    Ok(doc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_workers_are_capped_by_threads_cases_and_memory() {
        // 224³ cube, 197 × 233 × 189 input: about 0.5 GiB a case.
        let (size, voxels) = (224, 197 * 233 * 189);
        let per_case = map_case_bytes(size, voxels);
        assert!((400 << 20..600 << 20).contains(&per_case), "{per_case}");
        assert_eq!(map_workers(16, 1 << 20, size, voxels, 30), 16, "threads");
        assert_eq!(map_workers(16, 1 << 20, size, voxels, 5), 5, "cases");
        let budget_mib = 3 * per_case / (1 << 20) + 1;
        assert_eq!(map_workers(16, budget_mib, size, voxels, 30), 3, "memory");
        assert_eq!(map_workers(16, 1, size, voxels, 30), 1, "at least one");
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(
            map_workers(0, 1 << 20, size, voxels, 1000),
            cores,
            "0 = one per core"
        );
    }
}
