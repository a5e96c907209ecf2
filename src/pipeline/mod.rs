//! The whole job on volumes (`mri-ad score --healthy --query`): discovery → preprocessing → tokens (with
//! the extract cache) → scoring → maps back on each input's grid → evaluation → run folder.
//!
//! Modules: `cases` (discovery, label checks and notices), `maps` (maps and metrics, shared with
//! `eval`), `eval_run` ([`evaluate_run`]).
//!
//! Input: a folder of healthy volumes (optional) and one of query volumes, optionally lesion label maps for
//! the query cases. Output: the run folder of DESIGN.md (token files are cached under `tokens/`, the Nyúl
//! landmarks in `nyul.json`).
//!
//! Traps:
//! * Every case of both folders is in the one batch (leave-one-out); case ids must be unique across them.
//!   With `--masks`, every case has a brain mask ([`crate::pipeline::discover::pair_masks`]), which replaces `voxel > 0`
//!   in every stage (crop, Nyúl, tokens, maps) and whose SHA-256 joins the request and the token cache key.
//! * Volumes on other grids than the batch's frame are resampled into its world space
//!   ([`crate::volume::space`]); summary.json records the space, and `eval` rebuilds it from there (runs
//!   from before it: the first case's grid with the recorded box).
//! * The metrics are computed in the canonical cube space (S³, labels resampled by nearest neighbour), as
//!   ALGORITHM.md §8.3 specifies at 224³; the maps and masks written are on each input's own grid.
//! * The run folder follows [`crate::run::folder`]: the same request resumes, another needs `--force`.
//! * Before anything is removed or written: the request is compared (first, so a refusal is quick), every
//!   volume and brain mask is read whole ([`Preprocessor::for_batch`]: volumes evidently not
//!   skull-stripped and without a mask, or with `--crop batch` evidently not in the batch's world space,
//!   are refused), every label map is read whole and checked against its volume's grid, the settings are
//!   checked against the batch, the `--nyul` file is read, and the backbone is loaded (library, model, `layer_<k>` outputs) when there is
//!   no token cache yet or the run replaces another's results. What can still fail later (a volume whose
//!   tokens are all void, the Nyúl fit, the label-free GMM threshold) stops the run with the token cache
//!   kept for a resume; with `--force` the earlier results are then already gone.
//! * Sharded runs ([`crate::shard`]): [`extract_batch`] (`--extract-to DIR --shard i/N`) makes a shard of the
//!   batch's token files exactly as this job would (the batch's box, world space and Nyúl landmarks, learned
//!   on every case by each shard job), without a run folder; `--from-shards WORK` replaces the scoring by
//!   the sharded run's result after checking its plan against this batch (cases and their order, token
//!   files by SHA-256, scoring settings), so the rest of the job writes the run folder one process would.
//! * Run folders record absolute input paths (`summary.json`), so `eval` works from any folder.
//! * Plots (`plots/`, `index.html`; `--no-plots` skips `plots/`) are drawn by [`crate::report`]: the QC
//!   montages in the maps pass, where each case's cube and upsampled map already exist.
//! * Maps: the 16³ token scores are upsampled trilinearly to the cube with each token's score at the centre
//!   of the 14³ block it describes (`--upsample centres`, a deviation from §7.2's align-corners, which puts
//!   the outer tokens on the cube's faces, up to 6.5 voxels from their blocks; `--upsample corners` restores
//!   it, and `eval` of a run from before the flag existed uses it). See [`eval::Upsample`].
//! * Memory and threads: the crop box, Nyúl and maps stages read and prepare one volume per worker
//!   ([`crate::parallel`]): as many workers as `--threads`, but no more volumes at once than
//!   `--memory-budget` holds at an estimated `map_case_bytes` each (the resampling inside each volume
//!   uses every core). The voxel AUROC uses a 2²⁰-bin histogram of the upsampled maps (exact to about 1e-6,
//!   integer counts merged per case), so no full-resolution map of the batch is held; the voxel-level
//!   F1-max threshold (for a supplementary Dice, not §8.3's) comes from the same histogram, to within one
//!   bin. Results are gathered in case order, so the outputs do not depend on the number of threads.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::{json, Value};

use crate::backbone::Embedder;
use crate::extract::ExtractConfig;
use crate::formats::{absolute, tokens};
use crate::messages::first_few;
use crate::pipeline::cubes::NiftiCubes;
use crate::progress::Progress;
use crate::report;
use crate::run::folder::standard_outputs;
use crate::run::folder::{check_inputs_outside_outputs, hash_files, prepare_run_folder};
use crate::run::folder::{replaces_another_run, run_request};
use crate::run::outdir;
use crate::run::outputs::{run_settings, BatchOutputs};
use crate::run::summary::{Stopwatch, Summary};
use crate::score::{score_batch, ScoreConfig, ScoreResult};
use crate::volume::nyul::NyulModel;
use crate::volume::{BatchGeometry, PreprocessConfig, Preprocessor, VolumeFiles};
use crate::{eval, Error, Result, TokenSet};

mod cases;
pub mod cubes;
pub mod discover;
mod eval_run;
pub mod inventory;
mod maps;
pub mod scored_tokens;

use cases::{check_labels, discover_cases, Batch, BatchCase, CaseDigests};
pub use cases::{label_oddity, label_oddity_notice, labels_folder_hint, unpaired_notice};
pub use eval_run::evaluate_run;
pub use maps::Workers;
use maps::{input_voxels, map_workers, maps_and_metrics, MapsJob};

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
    /// Where the messages go.
    pub report: crate::messages::Reporter,
    pub progress: bool,
    /// Draw `plots/` (false: `--no-plots`); `index.html` is written either way.
    pub plots: bool,
    /// How the token grid is upsampled to the cube for the maps, masks and voxel metrics.
    pub upsample: eval::Upsample,
    /// Zero the written maps outside each input's brain (default; false: `--unmasked-maps`).
    pub brain_only_maps: bool,
    /// More keys for the run's `config.toml` (the backbone and preprocessing settings, so that the file
    /// given back as `--config` reproduces the run).
    pub config_extra: toml::Table,
    /// The token scores come from a sharded run's work folder ([`crate::shard`], `--from-shards`) instead
    /// of the scorer: its plan must list this batch's token files in this batch's order, with these
    /// scoring settings.
    pub from_shards: Option<PathBuf>,
}

/// Runs the whole job (see the module doc): the request and every check before the run folder is touched,
/// then Nyúl, tokens, scoring, maps and metrics, outputs.
pub fn run(cfg: &PipelineConfig) -> Result<()> {
    let started = Instant::now();
    let progress = Progress::new(cfg.progress);
    let mut clock = Stopwatch::default();
    let batch = check_before_writing(cfg, &progress, &mut clock)?;
    let (cases, workers, requested) = (&batch.cases, batch.workers, &batch.requested);
    let preprocessor = &batch.preprocessor;
    let _lock = prepare_run_folder(
        &cfg.out,
        cfg.force,
        &requested.request,
        &standard_outputs(),
        &cfg.report,
    )?;
    cfg.report.say(batch_line(cfg, cases));

    let nyul = clock.stage("nyul landmarks", || {
        learn_nyul(
            cfg,
            preprocessor,
            cases,
            requested.nyul.clone(),
            workers,
            &progress,
        )
    })?;
    nyul.save(&cfg.out.join("nyul.json"))?;
    let token_dir = cfg.out.join("tokens");
    let source = NiftiCubes::from_cases(
        cases.iter().map(|c| c.input.clone()).collect(),
        preprocessor.clone(),
        nyul,
    );
    let extracted = clock.stage("tokens", || {
        extract_tokens(
            cfg,
            &token_dir,
            &source,
            batch.backbone,
            &requested.model_sha256,
        )
    })?;
    let (result, grid, dim) = clock.stage("scoring", || match &cfg.from_shards {
        None => score_cached_tokens(&token_dir, cases, &cfg.score, &progress),
        Some(work) => scores_from_shards(work, &token_dir, cases, &cfg.score),
    })?;
    for tm in &result.timings {
        clock.record(format!("scoring: {}", tm.stage), tm.seconds);
    }

    // Maps back to each input's grid, and the evaluation.
    let job = maps_job(cfg, grid, workers)?;
    let evaluation = clock.stage("maps and evaluation", || {
        maps_and_metrics(&job, preprocessor, cases, &result.token_scores, &progress)
    })?;
    if cfg.plots {
        clock.record(
            "plots: QC montages (inside maps, summed over its workers)",
            evaluation.qc_seconds,
        );
    }

    let facts = RunFacts {
        cfg,
        cases,
        digests: &requested.digests,
        preprocessor,
        geometry: &batch.geometry,
        source: &source,
        extracted: &extracted,
    };
    facts.write_results(&result, dim, evaluation, clock, started)?;
    cfg.report.say(format!(
        "done in {:.1} s; wrote {} (scores.csv, maps/, summary.json, index.html)",
        started.elapsed().as_secs_f64(),
        cfg.out.display()
    ));
    Ok(())
}

/// A batch that passed every check made before the run folder is touched.
struct CheckedBatch {
    /// The cases, with the digests of their files.
    cases: Vec<BatchCase>,
    /// How many volumes are read and prepared at once (crop box, Nyúl and maps stages).
    workers: usize,
    requested: Requested,
    preprocessor: Preprocessor,
    geometry: BatchGeometry,
    /// The backbone, loaded now when there is no token cache or the run replaces another's results.
    backbone: Option<Box<dyn Embedder>>,
}

/// Discovery, the request and every other check that needs no output (see the module doc's traps), in
/// this order: the cases, the request (a run folder holding another run's results refuses before any slow
/// check), every volume and brain mask read whole, every label map, the settings against the batch and,
/// when needed, the backbone.
fn check_before_writing(
    cfg: &PipelineConfig,
    progress: &Progress,
    clock: &mut Stopwatch,
) -> Result<CheckedBatch> {
    let t = Instant::now();
    let Batch {
        mut cases,
        unpaired_labels,
    } = discover_cases(cfg)?;
    Preprocessor::new(cfg.preprocess.clone())?;
    // Volumes are read and prepared `workers` at a time in the crop box, Nyúl and maps stages.
    let workers = batch_workers(cfg, &cases)?;
    // The request first: a run folder holding another run's results refuses before any slow check.
    let requested = request(cfg, &mut cases)?;
    clock.record("discovery", t.elapsed().as_secs_f64());
    // Every volume (and brain mask) is read whole before the run folder is touched: volumes that are
    // evidently not skull-stripped, or (with --crop batch) not in the batch's world space, are refused.
    let files: Vec<VolumeFiles> = cases.iter().map(|c| c.input.files()).collect();
    let (preprocessor, geometry) = clock.stage("crop box", || {
        Preprocessor::for_batch(cfg.preprocess.clone(), &files, workers, progress)
    })?;
    notice_resampled(cfg, &cases, &geometry);
    if let Some(notice) = cfg
        .labels
        .as_deref()
        .and_then(|ldir| unpaired_notice(ldir, &unpaired_labels))
    {
        cfg.report.say(notice);
    }
    // Every label map is read and checked against its volume's grid now, not in the maps stage after the
    // tokens (minutes to hours later, with a half-written run folder).
    if cfg.labels.is_some() {
        let notices = clock.stage("label check", || check_labels(&cases, workers, progress))?;
        notices.into_iter().for_each(|n| cfg.report.say(n));
    }
    // Everything else that can be checked is checked before anything is written: the settings against
    // the batch and the --nyul file (read by the request).
    crate::score::check_batch(&cfg.score, cases.len(), cfg.extract.layers.len())?;
    let backbone = backbone_if_needed(cfg, requested.replacing)?;
    Ok(CheckedBatch {
        cases,
        workers,
        requested,
        preprocessor,
        geometry,
        backbone,
    })
}

/// The backbone, loaded now (library, model, device and the `layer_<k>` outputs of --layers checked) to
/// be handed to the extraction, without a token cache or when this run replaces the results of another
/// (`replacing`: a mistake must not cost them); `None` otherwise (loaded when a case needs computing).
fn backbone_if_needed(cfg: &PipelineConfig, replacing: bool) -> Result<Option<Box<dyn Embedder>>> {
    if cfg.out.join("tokens").is_dir() && !replacing {
        Ok(None)
    } else {
        Ok(Some(crate::extract::load_backbone(&cfg.extract)?))
    }
}

/// The tokens of every case into `token_dir` (the extract cache), with the backbone loaded before (if
/// any) and the model's digest from the request.
fn extract_tokens(
    cfg: &PipelineConfig,
    token_dir: &Path,
    source: &NiftiCubes,
    backbone: Option<Box<dyn Embedder>>,
    model_sha256: &str,
) -> Result<crate::extract::ExtractSummary> {
    let extract_cfg = ExtractConfig {
        out: token_dir.to_path_buf(),
        force: false,
        ..cfg.extract.clone()
    };
    let sha = Some(model_sha256.to_string());
    crate::extract::run_preloaded(&extract_cfg, source, backbone, sha)
}

/// The maps stage of the run: maps and masks written on each input's grid, QC montages into `plots/qc`
/// (created here) unless `--no-plots`.
fn maps_job(cfg: &PipelineConfig, grid: [usize; 3], workers: usize) -> Result<MapsJob<'_>> {
    Ok(MapsJob {
        out: &cfg.out,
        size: cfg.preprocess.size,
        grid,
        upsample: cfg.upsample,
        brain_only: cfg.brain_only_maps,
        with_labels: cfg.labels.is_some(),
        write: true,
        qc: cfg
            .plots
            .then(|| outdir::subdir(&cfg.out, "plots/qc"))
            .transpose()?,
        workers,
    })
}

/// What a finished run on volumes records in summary.json besides the scoring and the metrics.
struct RunFacts<'a> {
    cfg: &'a PipelineConfig,
    cases: &'a [BatchCase],
    digests: &'a [CaseDigests],
    preprocessor: &'a Preprocessor,
    geometry: &'a BatchGeometry,
    source: &'a NiftiCubes,
    extracted: &'a crate::extract::ExtractSummary,
}

impl RunFacts<'_> {
    /// Writes the results of the scored batch: every output of [`BatchOutputs`], the summary completed
    /// with the scoring, metrics and timings (`clock`'s stages, the total since `started`).
    fn write_results(
        &self,
        result: &ScoreResult,
        dim: usize,
        evaluation: maps::Evaluation,
        mut clock: Stopwatch,
        started: Instant,
    ) -> Result<()> {
        let cfg = self.cfg;
        let names: Vec<String> = self.cases.iter().map(|c| c.input.id.clone()).collect();
        let groups: Vec<String> = self.cases.iter().map(|c| c.group.to_string()).collect();
        let rows = report::score_rows(&names, &groups, &evaluation.case_labels, result);
        let outputs = BatchOutputs {
            out: &cfg.out,
            rows: &rows,
            result,
            score: &cfg.score,
            config_extra: &cfg.config_extra,
            dim,
            plots: cfg.plots,
        };
        let written = outputs.write()?;
        clock.timings.extend(written.timings);
        let mut summary = self.summary();
        summary.detail("masks", evaluation.masks_note);
        summary.detail("hottest_voxel", evaluation.hottest);
        summary.scoring = Some(written.scoring);
        summary.metrics = evaluation.metrics;
        summary.timings = clock.timings;
        summary.total_seconds = started.elapsed().as_secs_f64();
        let links = report::html::IndexLinks {
            plots: written.plots,
            qc: cfg.plots,
            maps: true,
            masks: cfg.labels.is_some(),
        };
        say_metrics(&cfg.report, &summary);
        outputs.finish(&summary, &links)
    }

    /// The summary with the inputs, the preparation (batch space, maps, Nyúl) and the backbone.
    fn summary(&self) -> Summary {
        let cfg = self.cfg;
        let mut summary = Summary::new("score --healthy/--query", self.cases.len());
        let inputs: Vec<Value> = self
            .cases
            .iter()
            .zip(self.digests)
            .map(|(c, h)| c.summary_entry(h))
            .collect();
        summary
            .detail("healthy", cfg.healthy.as_deref().map(absolute))
            .detail("query", absolute(&cfg.query))
            .detail("labels", cfg.labels.as_deref().map(absolute))
            .detail("inputs", inputs)
            .detail("margin", cfg.preprocess.margin)
            .detail("brain_masks", cfg.masks.as_deref().map(absolute))
            .detail(
                "crop",
                crop_summary(
                    &cfg.preprocess,
                    self.preprocessor,
                    self.geometry,
                    self.cases,
                ),
            )
            .detail(
                "maps",
                json!({
                    "upsample": cfg.upsample,
                    "upsample_rule": cfg.upsample.rule(),
                    "outside_brain": if cfg.brain_only_maps { "0" } else { "the raw field (--unmasked-maps)" },
                }),
            )
            .detail("preprocessing", source_preprocessing(self.source))
            .detail("backbone", backbone_summary(cfg, self.extracted));
        summary
    }
}

/// The headline metrics in the terminal, lesion cases first, each saying what it averages over (the
/// first rows of [`report::volume_metric_rows`]; `summary.json` and `index.html` have them all).
fn say_metrics(report: &crate::messages::Reporter, summary: &Summary) {
    let Some(metrics) = summary.volume_metrics() else {
        return;
    };
    let metrics = serde_json::to_value(metrics).expect("metrics serialise");
    for (label, key) in report::volume_metric_rows(&metrics).into_iter().take(6) {
        let value = metrics[key]
            .as_f64()
            .map_or("–".to_string(), |v| format!("{v:.3}"));
        report.say(format!("{label}: {value}"));
    }
}

/// What the request step found out: the request itself, whether it replaces another run's results, the
/// digests of every case's files, the model's digest and the `--nyul` landmarks.
struct Requested {
    request: Value,
    replacing: bool,
    digests: Vec<CaseDigests>,
    model_sha256: String,
    nyul: Option<NyulModel>,
}

/// The run's request (its cases with the SHA-256 of their files, its settings with the model and the
/// `--nyul` landmarks by content), checked against the run folder; the cases get their digests, which the
/// extraction's cache key reuses.
fn request(cfg: &PipelineConfig, cases: &mut [BatchCase]) -> Result<Requested> {
    cfg.extract.validate()?;
    crate::extract::check_model_file(&cfg.extract.model)?;
    let model_sha256 = crate::formats::hash::sha256_file(&cfg.extract.model).map_err(|e| {
        Error::bad_argument(
            "--model",
            format!("{}: cannot be read: {e}", cfg.extract.model.display()),
        )
    })?;
    let nyul = cfg.nyul.as_deref().map(NyulModel::load).transpose()?;
    let mut settings = run_settings(&cfg.score, &cfg.config_extra)?;
    settings.insert("model".into(), format!("sha256:{model_sha256}").into());
    if let Some(nyul) = &nyul {
        let landmarks = serde_json::to_vec(nyul).map_err(Error::internal)?;
        let digest = crate::formats::hash::sha256_bytes(&landmarks);
        settings.insert("nyul".into(), format!("landmarks sha256:{digest}").into());
    }
    let digests = case_digests(cases)?;
    let files: Vec<&Path> = cases.iter().flat_map(BatchCase::files).collect();
    let entries = cases.iter().zip(&digests).map(|(c, h)| c.request_entry(h));
    let request = run_request(Value::Array(entries.collect()), &settings);
    let replacing = replaces_another_run(&cfg.out, cfg.force, &request)?;
    if replacing {
        check_inputs_outside_outputs(&cfg.out, &files)?;
    }
    Ok(Requested {
        request,
        replacing,
        digests,
        model_sha256,
        nyul,
    })
}

/// How many volumes the crop box, Nyúl and maps stages read and prepare at once (`--threads`, within
/// `--memory-budget`).
fn batch_workers(cfg: &PipelineConfig, cases: &[BatchCase]) -> Result<usize> {
    Ok(map_workers(
        cfg.score.threads,
        cfg.score.memory_budget,
        cfg.preprocess.size,
        input_voxels(cases)?,
        cases.len(),
    ))
}

/// The SHA-256 of every case's files (image, label, mask); the cases get theirs, which the extraction's
/// cache key reuses.
fn case_digests(cases: &mut [BatchCase]) -> Result<Vec<CaseDigests>> {
    let files: Vec<&Path> = cases.iter().flat_map(BatchCase::files).collect();
    let mut hashes = hash_files(&files)?.into_iter();
    let mut next = || hashes.next().expect("one per file");
    let digests: Vec<CaseDigests> = cases
        .iter()
        .map(|c| CaseDigests {
            image: next(),
            label: c.label.as_ref().map(|_| next()),
            mask: c.input.mask.as_ref().map(|_| next()),
        })
        .collect();
    for (c, h) in cases.iter_mut().zip(&digests) {
        c.input.sha256 = Some(h.image.clone());
        c.input.mask_sha256 = h.mask.clone();
    }
    Ok(digests)
}

/// `score --extract-to DIR [--shard i/N]`: the token files this batch's `score` run would make (the same
/// crop box, world space and Nyúl landmarks, learned on the whole batch), written to `DIR/healthy` and
/// `DIR/query` for the cases of the shard, and nothing else (no run folder): the extraction jobs of a
/// sharded run ([`crate::shard`], `workflow/Snakefile`). `score --reuse-tokens DIR/healthy --reuse-tokens
/// DIR/query` then finds every token up to date.
pub fn extract_batch(cfg: &PipelineConfig, dir: &Path, shard: crate::extract::Shard) -> Result<()> {
    let progress = Progress::new(cfg.progress);
    let Batch { mut cases, .. } = discover_cases(cfg)?;
    Preprocessor::new(cfg.preprocess.clone())?;
    cfg.extract.validate()?;
    crate::extract::check_model_file(&cfg.extract.model)?;
    crate::score::check_batch(&cfg.score, cases.len(), cfg.extract.layers.len())?;
    let workers = batch_workers(cfg, &cases)?;
    case_digests(&mut cases)?;
    let files: Vec<VolumeFiles> = cases.iter().map(|c| c.input.files()).collect();
    let (preprocessor, _) =
        Preprocessor::for_batch(cfg.preprocess.clone(), &files, workers, &progress)?;
    let given = cfg.nyul.as_deref().map(NyulModel::load).transpose()?;
    let nyul = learn_nyul(cfg, &preprocessor, &cases, given, workers, &progress)?;
    for group in ["healthy", "query"] {
        let inputs: Vec<_> = cases
            .iter()
            .filter(|c| c.group == group)
            .map(|c| c.input.clone())
            .collect();
        if inputs.is_empty() {
            continue;
        }
        let source = NiftiCubes::from_cases(inputs, preprocessor.clone(), nyul.clone());
        let extract_cfg = ExtractConfig {
            out: dir.join(group),
            shard,
            ..cfg.extract.clone()
        };
        crate::extract::run_preloaded(&extract_cfg, &source, None, None)?;
    }
    Ok(())
}

/// The notice naming the volumes resampled into the batch's space, if any.
fn notice_resampled(cfg: &PipelineConfig, cases: &[BatchCase], geometry: &BatchGeometry) {
    let resampled: Vec<&str> = geometry
        .resampled()
        .into_iter()
        .map(|i| cases[i].input.id.as_str())
        .collect();
    if !resampled.is_empty() {
        cfg.report.notice(format!(
            "{} volume(s) lie on other grids than the batch's reference {} and are resampled into its \
             world space: {}",
            resampled.len(),
            cases[geometry.plan.as_ref().map_or(0, |p| p.reference)].input.id,
            first_few(&resampled)
        ));
    }
}

/// `N cases: H healthy, Q query (with labels)`.
fn batch_line(cfg: &PipelineConfig, cases: &[BatchCase]) -> String {
    format!(
        "{} cases: {} healthy, {} query{}",
        cases.len(),
        cases.iter().filter(|c| c.group == "healthy").count(),
        cases.iter().filter(|c| c.group == "query").count(),
        if cfg.labels.is_some() {
            " (with labels)"
        } else {
            ""
        }
    )
}

/// The Nyúl landmarks: `given` (`--nyul`), or learned on the healthy volumes (all volumes without
/// `--healthy`); saved as `nyul.json`.
fn learn_nyul(
    cfg: &PipelineConfig,
    preprocessor: &Preprocessor,
    cases: &[BatchCase],
    given: Option<NyulModel>,
    workers: usize,
    progress: &Progress,
) -> Result<NyulModel> {
    let nyul = match given {
        Some(model) => model,
        None => {
            let train = cases
                .iter()
                .filter(|c| cfg.healthy.is_none() || c.group == "healthy");
            let files: Vec<VolumeFiles> = train.map(|c| c.input.files()).collect();
            NyulModel::fit(&preprocessor.nyul_landmarks(&files, workers, progress)?)?
        }
    };
    Ok(nyul)
}

/// The result of a sharded run over this batch's token files ([`crate::shard`]): its plan must hold the
/// files of `token_dir` (by SHA-256) in the batch's order and the same scoring settings.
fn scores_from_shards(
    work: &Path,
    token_dir: &Path,
    cases: &[BatchCase],
    config: &ScoreConfig,
) -> Result<(ScoreResult, [usize; 3], usize)> {
    let plan = crate::shard::Plan::read(work)?;
    let flag = "--from-shards";
    let ids: Vec<&str> = cases.iter().map(|c| c.input.id.as_str()).collect();
    let planned: Vec<&str> = plan.cases.iter().map(|c| c.case.as_str()).collect();
    if ids != planned {
        return Err(Error::bad_argument(
            flag,
            format!(
                "{}: its plan lists {} cases ({}), this batch {} ({}) in this order (healthy, then query,                  each by id): plan it with `mri-ad shard plan --tokens TOKENS/healthy --tokens TOKENS/query`",
                work.display(),
                planned.len(),
                first_few(&planned),
                ids.len(),
                first_few(&ids)
            ),
        ));
    }
    let paths: Vec<PathBuf> = ids
        .iter()
        .map(|id| token_dir.join(format!("{id}{}", tokens::TOKEN_SUFFIX)))
        .collect();
    let refs: Vec<&Path> = paths.iter().map(PathBuf::as_path).collect();
    for ((path, digest), c) in refs.iter().zip(hash_files(&refs)?).zip(&plan.cases) {
        if digest != c.sha256 {
            return Err(Error::bad_argument(
                flag,
                format!(
                    "{}: its plan scored another token file for case {} than {} (SHA-256 differs): the                      shards were made from other volumes or settings",
                    work.display(),
                    c.case,
                    path.display()
                ),
            ));
        }
    }
    let (ours, theirs) = (
        run_settings(config, &toml::Table::new())?,
        run_settings(&plan.settings, &toml::Table::new())?,
    );
    let differs = ours.iter().find(|(k, v)| {
        !crate::run::folder::OPERATIONAL_SETTINGS.contains(&k.as_str())
            && theirs.get(*k) != Some(*v)
    });
    if let Some((key, value)) = differs {
        return Err(Error::bad_argument(
            flag,
            format!(
                "{}: its plan scores with {key} = {}, this run with {value}: plan the shards with this run's                  scoring flags",
                work.display(),
                theirs.get(key).map_or("(unset)".to_string(), ToString::to_string)
            ),
        ));
    }
    let result = crate::shard::join::joined_result(work, &plan)?;
    Ok((result, plan.grid, plan.dim))
}

/// Scores the batch from its token files in `token_dir`; returns the result, the token grid and width.
fn score_cached_tokens(
    token_dir: &Path,
    cases: &[BatchCase],
    config: &ScoreConfig,
    progress: &Progress,
) -> Result<(ScoreResult, [usize; 3], usize)> {
    let mut sets: Vec<TokenSet> = Vec::with_capacity(cases.len());
    for c in cases {
        let path = token_dir.join(format!("{}{}", c.input.id, tokens::TOKEN_SUFFIX));
        sets.push(tokens::read_token_file(&c.input.id, &path)?.set);
    }
    let result = score_batch(&sets, config, progress)?;
    Ok((result, sets[0].grid, sets[0].dim()))
}

/// The backbone as summary.json records it: the model and its digest, where it ran, the token settings
/// and what the extraction did.
fn backbone_summary(cfg: &PipelineConfig, extracted: &crate::extract::ExtractSummary) -> Value {
    json!({
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
    })
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
    use crate::pipeline::cubes::CubeSource;
    source.preprocessing()
}
