//! `mri-ad score --tokens DIR`: the batch scorer on precomputed token files, used exactly as stored.
//!
//! Input: a folder of `<case>.tokens.npz` files (with their `.tokens.json` sidecars, whose `group` and
//! `provider` are used when present). Output: the run folder of `score` without maps (scores.csv,
//! token_scores/, graph.json, summary.json, config.toml, plots/, index.html), under the run-folder rules
//! of [`crate::run::folder`] (the request: every token file by SHA-256 and the scoring settings).

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::json;

use crate::bank::Bank;
use crate::formats::tokens;
use crate::progress::Progress;
use crate::run::outputs::BatchOutputs;
use crate::run::summary::{Summary, Timing};
use crate::score::{score_batch, score_batch_with, KnownTables, ScoreConfig};
use crate::{Error, Result};

/// Everything `score --tokens` needs.
#[derive(Debug, Clone)]
pub struct TokensConfig {
    /// The folder of token files.
    pub tokens: PathBuf,
    /// A healthy bank ([`crate::bank`]) the token files are scored against (`--bank`): its cases join the
    /// batch and its stored tables replace their pairs' distances.
    pub bank: Option<PathBuf>,
    /// Recompute the SHA-256 of the bank's files first (`--verify-bank`).
    pub verify_bank: bool,
    pub out: PathBuf,
    pub score: ScoreConfig,
    pub force: bool,
    /// Where the messages go.
    pub report: crate::messages::Reporter,
    pub progress: bool,
    /// Draw `plots/` (false: `--no-plots`).
    pub plots: bool,
}

/// Scores the token files of `cfg.tokens` into `cfg.out`.
pub fn run(cfg: &TokensConfig) -> Result<()> {
    let started = Instant::now();
    let t = Instant::now();
    let bank = cfg.bank.as_deref().map(Bank::open).transpose()?;
    if let Some(bank) = &bank {
        if cfg.verify_bank {
            bank.verify()?;
        }
        bank.check_config(&cfg.score)?;
        refuse_output_in_bank(&cfg.out, &bank.dir)?;
        if cfg.score.divide > 1 {
            return Err(Error::bad_argument(
                "--divide",
                "subset division scores parts of the batch on their own, which a bank's tables do not \
                 describe: drop --divide with --bank",
            ));
        }
    }
    let (files, members, packed) = read_inputs(cfg, bank.as_ref())?;
    let read_seconds = t.elapsed().as_secs_f64();
    check_token_batch(cfg, &files)?;
    let _lock = claim_run_folder(cfg, &files, bank.as_ref())?;
    let say = |msg: String| cfg.report.say(msg);
    let shape = BatchShape::of(&files[0].set);
    say(format!(
        "scoring {} cases ({} views, {} positions on a {:?} grid, D = {}) with {}",
        files.len(),
        shape.n_views,
        shape.n_positions,
        shape.grid,
        shape.dim,
        format!("{:?}", cfg.score.method).to_lowercase()
    ));
    let providers = tokens::count_providers(
        files
            .iter()
            .map(|f| tokens::sidecar_provider(f.sidecar.as_ref())),
    );
    if let Some(notice) = tokens::mixed_providers_notice(&providers) {
        say(format!("mri-ad: notice: {notice}"));
    }
    let names: Vec<String> = files.iter().map(|f| f.set.name.clone()).collect();
    let groups: Vec<String> = files
        .iter()
        .enumerate()
        .map(|(i, f)| match f.group() {
            _ if members.binary_search(&i).is_ok() => "bank".to_string(),
            Some(g) => g.to_string(),
            None => "query".to_string(),
        })
        .collect();
    // Move the token sets out of the files: the tokens are the largest thing in memory.
    let sets: Vec<_> = files.into_iter().map(|f| f.set).collect();
    let progress = Progress::new(cfg.progress);
    let result = match &bank {
        None => score_batch(&sets, &cfg.score, &progress)?,
        Some(bank) => {
            say(format!(
                "{} of them from the bank {} (their distances read from its tables)",
                members.len(),
                bank.dir.display()
            ));
            let load = |v: usize| bank.load_table(v);
            let known = KnownTables {
                members: members.clone(),
                source: bank.dir.join(crate::bank::MANIFEST),
                load: &load,
                packed: &packed,
            };
            score_batch_with(&sets, &cfg.score, &progress, Some(&known))?
        }
    };
    drop(sets);

    let mut details = json!({});
    if let Some(bank) = &bank {
        details["bank"] = json!(crate::formats::absolute(&bank.dir));
        details["bank_cases"] = json!(members
            .iter()
            .map(|&i| names[i].clone())
            .collect::<Vec<_>>());
    }
    details["tokens"] = json!(crate::formats::absolute(&cfg.tokens));
    details["views"] = json!(shape.n_views);
    details["positions"] = json!(shape.n_positions);
    details["grid"] = json!(shape.grid);
    details["dim"] = json!(shape.dim);
    details["token_providers"] = json!(providers);
    write_token_run(
        &TokenRun {
            command: "score --tokens",
            out: &cfg.out,
            names: &names,
            groups: &groups,
            result: &result,
            score: &cfg.score,
            dim: shape.dim,
            plots: cfg.plots,
            details,
            read_seconds,
        },
        started,
        &cfg.report,
    )
}

/// A scored batch of token files, to be written as a run folder ([`write_token_run`]).
pub struct TokenRun<'a> {
    /// The command named in `summary.json`.
    pub command: &'a str,
    pub out: &'a Path,
    pub names: &'a [String],
    pub groups: &'a [String],
    pub result: &'a crate::score::ScoreResult,
    pub score: &'a ScoreConfig,
    pub dim: usize,
    pub plots: bool,
    /// The `summary.json` details, in order.
    pub details: serde_json::Value,
    pub read_seconds: f64,
}

/// Writes the run folder of a scored batch of token files (everything `score --tokens` writes), shared by
/// `score --tokens` and `shard join`, whose outputs are the same files.
pub fn write_token_run(
    run: &TokenRun,
    started: Instant,
    report: &crate::messages::Reporter,
) -> Result<()> {
    let names = run.names;
    let rows = crate::report::score_rows(names, run.groups, &vec![None; names.len()], run.result);
    let outputs = BatchOutputs {
        out: run.out,
        rows: &rows,
        result: run.result,
        score: run.score,
        config_extra: &toml::Table::new(),
        dim: run.dim,
        plots: run.plots,
    };
    let written = outputs.write()?;
    let excluded_total = written.scoring.excluded_tokens;
    let mut summary = Summary::new(run.command, names.len());
    if let Some(map) = run.details.as_object() {
        for (key, value) in map {
            summary.detail(key, value);
        }
    }
    summary.scoring = Some(written.scoring);
    summary.timings = run_timings(run.read_seconds, &run.result.timings, written.timings);
    summary.total_seconds = started.elapsed().as_secs_f64();
    let links = crate::report::html::IndexLinks {
        plots: written.plots,
        ..Default::default()
    };
    outputs.finish(&summary, &links)?;
    report.say(format!(
        "done in {:.1} s: {} cases, {} tokens excluded; wrote {}",
        started.elapsed().as_secs_f64(),
        names.len(),
        excluded_total,
        run.out.display()
    ));
    Ok(())
}

/// The token layout of the batch (of its first file; `check_batch` has checked that they agree).
struct BatchShape {
    n_views: usize,
    n_positions: usize,
    grid: [usize; 3],
    dim: usize,
}

impl BatchShape {
    fn of(first: &crate::TokenSet) -> Self {
        BatchShape {
            n_views: first.n_views(),
            n_positions: first.n_positions(),
            grid: first.grid,
            dim: first.dim(),
        }
    }
}

/// Scoring never writes into a bank: `--out` inside it (or the bank itself) is refused.
fn refuse_output_in_bank(out: &Path, bank: &Path) -> Result<()> {
    let (bank, out) = (resolved(bank), resolved(out));
    if out.starts_with(&bank) {
        return Err(Error::bad_argument(
            "--out",
            format!(
                "{} is inside the bank {}; scoring never writes into a bank: give a folder outside it",
                out.display(),
                bank.display()
            ),
        ));
    }
    Ok(())
}

/// `path` made absolute with its longest existing ancestor's links resolved (the path need not exist).
fn resolved(path: &Path) -> PathBuf {
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut existing = path.as_path();
    let mut rest = Vec::new();
    while !existing.exists() {
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                existing = parent;
            }
            _ => return path,
        }
    }
    let mut out = existing
        .canonicalize()
        .unwrap_or_else(|_| existing.to_path_buf());
    out.extend(rest.iter().rev());
    out
}

/// The token files of the batch: the folder's, or with a bank the bank's and the folder's joined in case
/// order (each query file checked against the bank), with the batch indices of the bank's cases and
/// their active tokens (see [`Bank::token_sets`]).
type Inputs = (
    Vec<tokens::TokenFile>,
    Vec<usize>,
    Vec<ndarray::Array3<f32>>,
);
fn read_inputs(cfg: &TokensConfig, bank: Option<&Bank>) -> Result<Inputs> {
    let queries = tokens::read_batch(&cfg.tokens)?;
    let Some(bank) = bank else {
        return Ok((queries, Vec::new(), Vec::new()));
    };
    for q in &queries {
        bank.check_query(q)?;
    }
    let (files, packed) = bank.token_sets()?;
    let (all, members) = crate::bank::join(files, queries)?;
    Ok((all, members, packed))
}

/// Refuses a batch of fewer than 3 token files and settings that do not fit the batch.
fn check_token_batch(cfg: &TokensConfig, files: &[tokens::TokenFile]) -> Result<()> {
    if files.len() < 3 {
        return Err(Error::BadBatch {
            path: cfg.tokens.clone(),
            problem: format!(
                "{} token file(s): mutual scoring needs at least 3 cases (each is scored against the others)",
                files.len()
            ),
        });
    }
    crate::score::check_batch(&cfg.score, files.len(), files[0].set.n_views())
}

/// The run's request (every token file by SHA-256 and the scoring settings), checked against the run
/// folder, which is then prepared (see [`crate::run::folder`]).
fn claim_run_folder(
    cfg: &TokensConfig,
    files: &[tokens::TokenFile],
    bank: Option<&Bank>,
) -> Result<crate::run::lock::FolderLock> {
    // The bank's files are named by the digests its manifest records (hashing them again would cost
    // more than scoring a query against them).
    let recorded: std::collections::BTreeMap<PathBuf, String> = bank
        .map(|b| {
            b.manifest
                .cases
                .iter()
                .map(|c| (b.dir.join(&c.tokens.path), c.source_sha256.clone()))
                .collect()
        })
        .unwrap_or_default();
    let token_paths: Vec<&Path> = files.iter().map(|f| f.path.as_path()).collect();
    let to_hash: Vec<&Path> = token_paths
        .iter()
        .copied()
        .filter(|&p| !recorded.contains_key(p))
        .collect();
    let mut hashed = crate::run::folder::hash_files(&to_hash)?.into_iter();
    let digests: Vec<String> = token_paths
        .iter()
        .map(|&p| match recorded.get(p) {
            Some(d) => d.clone(),
            None => hashed.next().expect("one digest per hashed file"),
        })
        .collect();
    let request = crate::run::folder::run_request(
        json!(files
            .iter()
            .zip(&digests)
            .map(|(f, d)| json!({"case": f.set.name, "tokens_sha256": d}))
            .collect::<Vec<_>>()),
        &crate::run::outputs::run_settings(&cfg.score, &toml::Table::new())?,
    );
    if crate::run::folder::replaces_another_run(&cfg.out, cfg.force, &request)? {
        crate::run::folder::check_inputs_outside_outputs(&cfg.out, &token_paths)?;
    }
    crate::run::folder::prepare_run_folder(
        &cfg.out,
        cfg.force,
        &request,
        &crate::run::folder::standard_outputs(),
        &cfg.report,
    )
}

/// The run's timings in order: reading the tokens, the scoring's stages, writing the outputs.
fn run_timings(
    read_seconds: f64,
    scoring: &[crate::score::Timing],
    outputs: Vec<Timing>,
) -> Vec<Timing> {
    let mut timings = vec![Timing::new("read tokens", read_seconds)];
    timings.extend(
        scoring
            .iter()
            .map(|t| Timing::new(t.stage.clone(), t.seconds)),
    );
    timings.extend(outputs);
    timings
}
