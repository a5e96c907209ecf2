//! `extract`: volumes in, token files out, never redoing work already done.
//!
//! * Input: a [`CubeSource`] (NIfTI volumes preprocessed on the fly, or preprocessed `<case>.npy` cubes;
//!   see [`crate::pipeline::cubes`]), the model, the tokenizer settings, an optional shard `i/N`.
//! * Output: `<case>.tokens.npz` (`tokens` f32 `[L, G³, 3d']`, `valid` bool `[G³]`, `grid` i64 `[3]`) and the
//!   sidecar `<case>.tokens.json` per case of the shard, in the output folder.
//!
//! Cache: the sidecar records the cache key ([`KEY_FIELDS`]: model SHA-256, layers, d', projection seed,
//! cube size, void threshold, tokenizer version, preprocessing, input SHA-256; and [`MASK_KEY`], the brain
//! mask's SHA-256, for a case with a mask). A case whose sidecar holds
//! the same key and whose token file exists is skipped without loading its volume or the model; any other
//! case is recomputed and its files replaced. The model (and ONNX Runtime) is loaded only when a case needs
//! computing, so a fully cached run runs no inference at all. The execution provider (and `--batch`) is
//! recorded in the sidecar but is not part of the key: cached files are reused whatever made them, and
//! [`ExtractSummary::token_providers`] counts them per provider, with a notice when the shard mixes them.
//!
//! Overlap: the cases to compute are known before any inference (their cache keys are checked first); a
//! second thread loads and preprocesses their volumes in order, one case ahead of the backbone, so that on a
//! GPU the next volume's preparation overlaps this one's inference. At most two cubes are held (the one
//! being tokenised and the next, which the loader keeps until it is taken); results, messages and the
//! error reported keep the case order. Input files are hashed for the cache keys before the first
//! inference, so an unreadable input stops the run before any case is computed.
//!
//! Sharding: cases are sorted by id; shard `i/N` (1-based) takes every case whose index `c` has
//! `c mod N = i − 1`. The shards of one job write disjoint files into the same folder.
//!
//! Traps: the token file is written before its sidecar (both atomically), so a crash leaves either the old
//! pair (key mismatch → recomputed) or the complete new pair; the output folder may hold token files of
//! earlier runs or other shards, anything else needs `--force`; a bad input stops the run with exit 2 and
//! the cases finished before it keep their (complete, valid) files.

mod settings;
pub use settings::{RunOptions, VolumeSettings};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::{json, Value};

use crate::backbone::ort::{Device, OrtConfig, OrtEmbedder};
use crate::backbone::Embedder;
use crate::formats::hash::sha256_file;
use crate::formats::tokens::{
    count_provider, mixed_providers_notice, sidecar_path, sidecar_provider, write_token_file,
    SIDECAR_SUFFIX, TOKEN_SUFFIX,
};
use crate::pipeline::cubes::{CaseInput, Cube, CubeSource};
use crate::progress::Progress;
use crate::tokens::{TokenizeStats, Tokenizer, TokenizerConfig};
use crate::{Error, Result, TokenSet};

/// Version of the tokenizer's definition; bump when the tokens of the same inputs change.
pub const TOKENIZER_VERSION: &str =
    "mri-ad tokenizer 1 (ALGORITHM.md §3.2 steps 3-12; post-fusion volume LN eps 1e-5 + L2)";
/// Sidecar fields that form the cache key.
pub const KEY_FIELDS: [&str; 9] = [
    "tokenizer",
    "model_sha256",
    "layers",
    "proj_dim",
    "seed",
    "size",
    "void_threshold",
    "preprocessing",
    "input_sha256",
];

/// The cache-key field of a case's brain mask (`--masks`): present only for a case with a mask, so that the
/// keys of cases without one keep their form; a key with it never matches a sidecar without it.
pub const MASK_KEY: &str = "mask_sha256";

/// Shard `index` (0-based) of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    /// The whole job in one shard.
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// Parses `i/N` with `1 ≤ i ≤ N`.
    pub fn parse(s: &str) -> Result<Shard> {
        let bad = || {
            Error::bad_argument(
                "--shard",
                format!("`{s}` is not of the form i/N with 1 ≤ i ≤ N (e.g. 3/8)"),
            )
        };
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (i, n): (usize, usize) = (
            i.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        );
        if n == 0 || i == 0 || i > n {
            return Err(bad());
        }
        Ok(Shard {
            index: i - 1,
            count: n,
        })
    }

    /// Whether the case at `position` of the sorted list belongs to this shard.
    pub fn owns(&self, position: usize) -> bool {
        position % self.count == self.index
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index + 1, self.count)
    }
}

/// Everything `extract` needs.
#[derive(Debug, Clone)]
pub struct ExtractConfig {
    pub out: PathBuf,
    pub shard: Shard,
    pub model: PathBuf,
    pub ort_lib: Option<PathBuf>,
    pub device: Device,
    pub threads: usize,
    /// Selected blocks (1-based).
    pub layers: Vec<usize>,
    /// Projection dimension d'.
    pub proj_dim: usize,
    /// Projection seed.
    pub seed: u64,
    /// Cube edge S (multiple of 14).
    pub size: usize,
    pub tokenizer: TokenizerConfig,
    /// Accept an output folder that holds other files than token files.
    pub force: bool,
    pub progress: bool,
    /// Where the messages go (per case: computed or reused; the device; mixed providers).
    pub report: crate::messages::Reporter,
    /// Also write the projection matrix `[d', D]` as `.npy` here.
    pub save_projection: Option<PathBuf>,
    /// Other token folders to take a case's token file from when `out` has none that matches its cache key
    /// (`score --reuse-tokens`): the matching file and sidecar are copied into `out`, never moved.
    pub reuse_from: Vec<PathBuf>,
}

impl ExtractConfig {
    /// Checks the values that do not need any file (the same checks as [`VolumeSettings`]).
    pub fn validate(&self) -> Result<()> {
        use crate::settings::checks::{at_least_one, unit};
        crate::backbone::check_size("--size", &self.size)?;
        crate::backbone::check_layers("--layers", &self.layers)?;
        at_least_one("--proj-dim", &self.proj_dim)?;
        at_least_one("--batch", &self.tokenizer.batch)?;
        unit("--void-threshold", &self.tokenizer.void_threshold)
    }
}

/// What happened to one case.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CaseReport {
    pub case: String,
    /// False when the token file was reused from the cache.
    pub computed: bool,
    pub stats: Option<TokenizeStats>,
}

/// What a run did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ExtractSummary {
    /// Cases in this shard.
    pub cases: usize,
    pub computed: usize,
    pub reused: usize,
    /// Slices run through the backbone (over all computed cases).
    pub slices_inferred: usize,
    /// Background slices served from the background cache.
    pub background_reused: usize,
    /// The provider that ran, when the model was loaded.
    pub provider: Option<String>,
    /// How many of this shard's token files each execution provider made, reused files included (from their
    /// sidecars; `unrecorded` when a sidecar lacks the field). More than one entry: see
    /// [`crate::formats::tokens::mixed_providers_notice`]. Per shard: the shards of one job are not compared.
    pub token_providers: BTreeMap<String, usize>,
    /// SHA-256 of the model file (part of every token file's cache key).
    pub model_sha256: String,
    pub seconds: f64,
    pub per_case: Vec<CaseReport>,
}

/// The cache key of one case.
fn cache_key(
    cfg: &ExtractConfig,
    model_sha256: &str,
    preprocessing: &Value,
    input_sha256: &str,
    mask_sha256: Option<&str>,
) -> Value {
    let mut key = json!({
        "tokenizer": TOKENIZER_VERSION,
        "model_sha256": model_sha256,
        "layers": cfg.layers,
        "proj_dim": cfg.proj_dim,
        "seed": cfg.seed,
        "size": cfg.size,
        "void_threshold": cfg.tokenizer.void_threshold,
        "preprocessing": preprocessing,
        "input_sha256": input_sha256,
    });
    if let Some(mask) = mask_sha256 {
        key[MASK_KEY] = json!(mask);
    }
    key
}

/// The sidecar of `<out>/<case>` when it holds a token file whose sidecar matches `key`.
fn cached(npz: &Path, key: &Value) -> Option<Value> {
    let text = std::fs::read_to_string(sidecar_path(npz)).ok()?;
    let side = serde_json::from_str::<Value>(&text).ok()?;
    let same = KEY_FIELDS
        .iter()
        .all(|f| side.get(*f).is_some() && side.get(*f) == key.get(*f))
        && side.get(MASK_KEY) == key.get(MASK_KEY);
    let present = std::fs::metadata(npz)
        .map(|m| m.is_file() && m.len() > 0)
        .unwrap_or(false);
    (same && present).then_some(side)
}

/// Looks for a token file matching `key` in each of `others` (token folders) in turn; copies the first
/// found, sidecar last, into `npz`'s place and returns its sidecar. The copies are atomic: an interrupted
/// copy leaves no file that [`cached`] would take.
fn copy_from_other_cache(others: &[PathBuf], npz: &Path, key: &Value) -> Result<Option<Value>> {
    let name = npz.file_name().expect("a token file name");
    for dir in others {
        let source = dir.join(name);
        if let Some(side) = cached(&source, key) {
            for (from, to) in [
                (source.clone(), npz.to_path_buf()),
                (sidecar_path(&source), sidecar_path(npz)),
            ] {
                crate::formats::atomic::copy(&from, &to)?;
            }
            return Ok(Some(side));
        }
    }
    Ok(None)
}

/// The output folder rule of `extract`: a missing or empty folder, or one that holds only token files and
/// sidecars (earlier runs, other shards); anything else needs `force`. Returns the folder's lock
/// ([`crate::run::lock`]): two extractions into one folder at once are refused, except the shards of one
/// job, each holding its own lock (`.mri-ad-lock-shard<i>of<N>`; two runs of the same shard are refused,
/// and a shard refuses a folder whose whole extraction is running).
pub fn prepare_token_folder(
    dir: &Path,
    force: bool,
    shard: Shard,
    report: &crate::messages::Reporter,
) -> Result<crate::run::lock::FolderLock> {
    if dir.exists() && !dir.is_dir() {
        return Err(Error::BadOutput {
            path: dir.into(),
            problem: "the output path exists and is not a folder".into(),
        });
    }
    if dir.is_dir() && !force {
        for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
            let name = entry
                .map_err(|e| Error::io(dir, e))?
                .file_name()
                .to_string_lossy()
                .into_owned();
            let ours = name.starts_with('.')
                || name.ends_with(TOKEN_SUFFIX)
                || name.ends_with(SIDECAR_SUFFIX);
            if !ours {
                return Err(Error::BadOutput {
                    path: dir.into(),
                    problem: format!(
                        "the output folder holds `{name}`, which is not a token file; extract writes into an empty \
                         folder or a folder of token files (reusing those that match); pass --force to write here anyway"
                    ),
                });
            }
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    if shard.count == 1 {
        return crate::run::lock::acquire(dir, report);
    }
    crate::run::lock::refuse_if_in_use(dir)?;
    let name = format!(
        "{}-shard{}of{}",
        crate::run::lock::LOCK_FILE,
        shard.index + 1,
        shard.count
    );
    crate::run::lock::acquire_named(dir, &name, report)
}

/// Checks that the model file exists (the error names `--model` and how to build the default model).
pub fn check_model_file(model: &Path) -> Result<()> {
    if model.is_file() {
        return Ok(());
    }
    Err(Error::bad_argument(
        "--model",
        format!(
            "{}: no such file (build the default model with scripts/setup/build_default_model.py; see onnx/README.md; \
             the default path is relative to the current folder)",
            model.display()
        ),
    ))
}

/// Runs `extract` with the ONNX Runtime backbone (loaded only if some case needs computing).
pub fn run(cfg: &ExtractConfig, source: &dyn CubeSource) -> Result<ExtractSummary> {
    run_preloaded(cfg, source, None, None)
}

/// Loads the ONNX Runtime backbone of `cfg` (library, model, device, the `layer_<k>` outputs), printing
/// the device notice unless quiet. `score` calls it before it writes anything, so that a bad `--model`,
/// `--layers` or `--device` leaves no run folder behind.
pub fn load_backbone(cfg: &ExtractConfig) -> Result<Box<dyn Embedder>> {
    let e = OrtEmbedder::load(&OrtConfig {
        model: cfg.model.clone(),
        ort_lib: cfg.ort_lib.clone(),
        device: cfg.device,
        threads: cfg.threads,
        layers: cfg.layers.clone(),
    })?;
    if let Some(n) = e.notice() {
        cfg.report.notice(n);
    }
    cfg.report.say(format!(
        "device: {} (--device {})",
        e.provider(),
        cfg.device
    ));
    Ok(Box::new(e))
}

/// [`run`] with a backbone already loaded by [`load_backbone`] (`None`: load it when first needed) and the
/// model's SHA-256 when the caller has it (`None`: computed here).
pub fn run_preloaded(
    cfg: &ExtractConfig,
    source: &dyn CubeSource,
    preloaded: Option<Box<dyn Embedder>>,
    model_sha256: Option<String>,
) -> Result<ExtractSummary> {
    cfg.validate()?;
    check_model_file(&cfg.model)?;
    let model_sha256 = match model_sha256 {
        Some(known) => known,
        None => sha256_file(&cfg.model)?,
    };
    let mut preloaded = preloaded;
    let mut load = || -> Result<Box<dyn Embedder>> {
        match preloaded.take() {
            Some(e) => Ok(e),
            None => load_backbone(cfg),
        }
    };
    run_with(cfg, source, &model_sha256, &mut load)
}

/// One case of a shard: its cache key and token file, and the sidecar when the cached files are current.
struct CasePlan<'a> {
    case: &'a CaseInput,
    key: Value,
    npz: PathBuf,
    cached_sidecar: Option<Value>,
}

/// Runs `extract` with any backbone: `load` is called at most once, when the first case needs computing.
pub fn run_with(
    cfg: &ExtractConfig,
    source: &dyn CubeSource,
    model_sha256: &str,
    load: &mut dyn FnMut() -> Result<Box<dyn Embedder>>,
) -> Result<ExtractSummary> {
    let start = Instant::now();
    cfg.validate()?;
    let cases = shard_cases(cfg, source)?;
    let _lock = prepare_token_folder(&cfg.out, cfg.force, cfg.shard, &cfg.report)?;
    let preprocessing = source.preprocessing();
    let mut run = ExtractRun {
        cfg,
        progress: if cfg.progress {
            Progress::new(true)
        } else {
            Progress::hidden()
        },
        summary: ExtractSummary {
            cases: cases.len(),
            model_sha256: model_sha256.to_string(),
            ..Default::default()
        },
    };
    let mut backbone = LazyTokenizer {
        cfg,
        load,
        tokenizer: None,
    };
    if let Some(path) = &cfg.save_projection {
        save_projection(backbone.get()?, path)?;
    }
    let plans = plan_cases(cfg, &cases, model_sha256, &preprocessing)?;
    run.tokenize_in_order(source, plans, &mut backbone)?;
    let mut summary = run.summary;
    summary.seconds = start.elapsed().as_secs_f64();
    report_summary(cfg, &summary);
    Ok(summary)
}

/// The cases of `cfg`'s shard, in the source's (sorted) order.
fn shard_cases(cfg: &ExtractConfig, source: &dyn CubeSource) -> Result<Vec<CaseInput>> {
    Ok(source
        .cases()?
        .into_iter()
        .enumerate()
        .filter(|(c, _)| cfg.shard.owns(*c))
        .map(|(_, case)| case)
        .collect())
}

/// The tokenizer of a run, built from the backbone that `load` gives when it is first needed.
struct LazyTokenizer<'a> {
    cfg: &'a ExtractConfig,
    load: &'a mut dyn FnMut() -> Result<Box<dyn Embedder>>,
    tokenizer: Option<Tokenizer>,
}

impl LazyTokenizer<'_> {
    /// The tokenizer, loading the backbone on the first call.
    fn get(&mut self) -> Result<&mut Tokenizer> {
        if self.tokenizer.is_none() {
            self.tokenizer = Some(Tokenizer::new(
                (self.load)()?,
                self.cfg.proj_dim,
                self.cfg.seed,
                self.cfg.tokenizer.clone(),
            )?);
        }
        Ok(self.tokenizer.as_mut().expect("loaded"))
    }
}

/// Writes the tokenizer's projection matrix `[d', D]` to `path` as `.npy` (`--save-projection`).
fn save_projection(tokenizer: &Tokenizer, path: &Path) -> Result<()> {
    let p = tokenizer.projection();
    crate::formats::atomic::write_with(path, |w| {
        use ndarray_npy::WriteNpyExt;
        p.matrix.write_npy(w).map_err(|e| e.to_string())
    })
}

/// The plan of every case: its cache key (hashing its input and mask unless their hashes are known), its
/// token file and, when that file is current, its sidecar. Errors on the first unreadable input.
fn plan_cases<'a>(
    cfg: &ExtractConfig,
    cases: &'a [CaseInput],
    model_sha256: &str,
    preprocessing: &Value,
) -> Result<Vec<CasePlan<'a>>> {
    let mut plans = Vec::with_capacity(cases.len());
    for case in cases {
        let input_sha256 = match &case.sha256 {
            Some(known) => known.clone(),
            None => sha256_file(&case.path)?,
        };
        let mask_sha256 = match (&case.mask, &case.mask_sha256) {
            (None, _) => None,
            (Some(_), Some(known)) => Some(known.clone()),
            (Some(mask), None) => Some(sha256_file(mask)?),
        };
        let key = cache_key(
            cfg,
            model_sha256,
            preprocessing,
            &input_sha256,
            mask_sha256.as_deref(),
        );
        let npz = cfg.out.join(format!("{}{TOKEN_SUFFIX}", case.id));
        let cached_sidecar = match cached(&npz, &key) {
            Some(side) => Some(side),
            None => copy_from_other_cache(&cfg.reuse_from, &npz, &key)?,
        };
        plans.push(CasePlan {
            case,
            key,
            npz,
            cached_sidecar,
        });
    }
    Ok(plans)
}

/// Loads the cubes of `cases` in order and hands each to the backbone through `send` (a rendezvous
/// channel), stopping after a failed load or when the receiver is gone.
fn load_cubes(
    source: &dyn CubeSource,
    cases: Vec<&CaseInput>,
    size: usize,
    send: std::sync::mpsc::SyncSender<Result<Cube>>,
) {
    for case in cases {
        let cube = source.load(case, size);
        let failed = cube.is_err();
        // A closed channel: the main thread stopped on an error; stop loading. After a failed load the
        // run stops at that case anyway.
        if send.send(cube).is_err() || failed {
            break;
        }
    }
}

/// The next cube from the loader; when the loader ended without sending it, it panicked, and its panic is
/// raised here.
fn receive_cube(
    cubes: &std::sync::mpsc::Receiver<Result<Cube>>,
    loader: &mut Option<std::thread::ScopedJoinHandle<'_, ()>>,
) -> Result<Cube> {
    match cubes.recv() {
        Ok(cube) => cube,
        Err(_) => match loader.take().map(|h| h.join()) {
            Some(Err(panic)) => std::panic::resume_unwind(panic),
            _ => unreachable!("the loader sends a cube for every case to compute"),
        },
    }
}

/// The run's settings, progress bars and the summary its cases fill.
struct ExtractRun<'a> {
    cfg: &'a ExtractConfig,
    progress: Progress,
    summary: ExtractSummary,
}

impl ExtractRun<'_> {
    /// Reuses the cached cases and computes the others, in case order. The cubes of the cases to compute
    /// are loaded on a second thread, one case ahead of the backbone (a rendezvous channel: the loader
    /// holds the next cube until the backbone takes it), so that reading and preprocessing the next
    /// volume overlaps the inference of this one.
    fn tokenize_in_order(
        &mut self,
        source: &dyn CubeSource,
        plans: Vec<CasePlan<'_>>,
        backbone: &mut LazyTokenizer<'_>,
    ) -> Result<()> {
        let to_compute: Vec<&CaseInput> = plans
            .iter()
            .filter(|p| p.cached_sidecar.is_none())
            .map(|p| p.case)
            .collect();
        let size = self.cfg.size;
        std::thread::scope(|scope| -> Result<()> {
            let (send, cubes) = std::sync::mpsc::sync_channel::<Result<Cube>>(0);
            let mut loader = (!to_compute.is_empty())
                .then(|| scope.spawn(move || load_cubes(source, to_compute, size, send)));
            for plan in plans {
                if let Some(side) = &plan.cached_sidecar {
                    self.reuse(plan.case, side);
                    continue;
                }
                let tokenizer = backbone.get()?;
                self.summary.provider = Some(tokenizer.provider().to_string());
                count_provider(
                    &mut self.summary.token_providers,
                    Some(tokenizer.provider()),
                );
                let cube = receive_cube(&cubes, &mut loader)?;
                self.compute(&plan, tokenizer, cube)?;
            }
            Ok(())
        })
    }

    /// Records a case whose cached token file is current (`side`: its sidecar).
    fn reuse(&mut self, case: &CaseInput, side: &Value) {
        count_provider(
            &mut self.summary.token_providers,
            sidecar_provider(Some(side)),
        );
        self.cfg
            .report
            .say(format!("{}: up to date, reused", case.id));
        self.summary.reused += 1;
        self.summary.per_case.push(CaseReport {
            case: case.id.clone(),
            computed: false,
            stats: None,
        });
    }

    /// Tokenises one case's cube, writes its token file and then its sidecar, and records it.
    fn compute(
        &mut self,
        plan: &CasePlan<'_>,
        tokenizer: &mut Tokenizer,
        cube: Cube,
    ) -> Result<()> {
        let (cfg, case) = (self.cfg, plan.case);
        let bar = self.progress.bar(3 * cfg.size as u64, &case.id);
        let (set, stats) = tokenizer
            .tokenize(&case.id, cube.voxels.view(), cube.mask.view(), &bar)
            .map_err(|e| match e {
                Error::BadInput { problem, .. } => Error::bad_input(&case.path, problem),
                other => other,
            })?;
        bar.finish_and_clear();
        drop(cube);
        write_token_file(&plan.npz, &set)?;
        let side = computed_sidecar(cfg, plan, tokenizer.provider(), &set, &stats);
        crate::formats::atomic::write_json(&sidecar_path(&plan.npz), &side)?;
        cfg.report.say(format!(
            "{}: computed in {:.1} s ({} slices: {} inferred, {} background reused; {:.0} slices/s)",
            case.id,
            stats.seconds,
            stats.slices,
            stats.inferred,
            stats.background_reused,
            stats.slices as f64 / stats.seconds.max(1e-9)
        ));
        self.summary.computed += 1;
        self.summary.slices_inferred += stats.inferred;
        self.summary.background_reused += stats.background_reused;
        self.summary.per_case.push(CaseReport {
            case: case.id.clone(),
            computed: true,
            stats: Some(stats),
        });
        Ok(())
    }
}

/// The sidecar of a computed case: its cache key, then what made the tokens and how.
fn computed_sidecar(
    cfg: &ExtractConfig,
    plan: &CasePlan<'_>,
    provider: &str,
    set: &TokenSet,
    stats: &TokenizeStats,
) -> Value {
    let case = plan.case;
    let mut side = plan.key.clone();
    let extra = json!({
        "case": case.id,
        "input_file": case.path.display().to_string(),
        "mask_file": case.mask.as_ref().map(|m| m.display().to_string()),
        "model_file": cfg.model.display().to_string(),
        "provider": provider,
        "batch": cfg.tokenizer.batch,
        "mri_ad_version": env!("CARGO_PKG_VERSION"),
        "grid": set.grid,
        "n_valid": set.n_valid(),
        "stats": {
            "slices": stats.slices,
            "inferred": stats.inferred,
            "background_reused": stats.background_reused,
            "seconds": stats.seconds,
        },
    });
    if let (Value::Object(s), Value::Object(x)) = (&mut side, extra) {
        s.extend(x);
    }
    side
}

/// The end of a run: the mixed-providers notice when the shard's token files need it, then the totals.
fn report_summary(cfg: &ExtractConfig, summary: &ExtractSummary) {
    if let Some(notice) = mixed_providers_notice(&summary.token_providers) {
        cfg.report.notice(notice);
    }
    cfg.report.say(format!(
        "extract: {} cases in shard {}: {} computed, {} reused; {} slices inferred, {} background slices reused; {:.1} s",
        summary.cases, cfg.shard, summary.computed, summary.reused, summary.slices_inferred, summary.background_reused, summary.seconds
    ));
}

#[cfg(test)]
mod tests;
