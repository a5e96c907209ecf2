//! `mri-ad score --tokens DIR`: the batch scorer on precomputed token files, used exactly as stored.
//!
//! Input: a folder of `<case>.tokens.npz` files (with their `.tokens.json` sidecars, whose `group` and
//! `provider` are used when present). Output: the run folder of `score` without maps (scores.csv,
//! token_scores/, graph.json, summary.json, config.toml, plots/, index.html), under the run-folder rules
//! of [`crate::run::folder`] (the request: every token file by SHA-256 and the scoring settings).

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::json;

use crate::formats::tokens;
use crate::progress::Progress;
use crate::run::outputs::BatchOutputs;
use crate::run::summary::{Summary, Timing};
use crate::score::{score_batch, ScoreConfig};
use crate::{Error, Result};

/// Everything `score --tokens` needs.
#[derive(Debug, Clone)]
pub struct TokensConfig {
    /// The folder of token files.
    pub tokens: PathBuf,
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
    let files = tokens::read_batch(&cfg.tokens)?;
    let read_seconds = t.elapsed().as_secs_f64();
    check_token_batch(cfg, &files)?;
    let _lock = claim_run_folder(cfg, &files)?;
    let say = |msg: String| cfg.report.say(msg);
    let shape = BatchShape::of(&files[0].set);
    say(format!(
        "scoring {} cases ({} views, {} positions on a {:?} grid, D = {}) with {:?}",
        files.len(),
        shape.n_views,
        shape.n_positions,
        shape.grid,
        shape.dim,
        cfg.score.method
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
        .map(|f| f.group().unwrap_or("query").to_string())
        .collect();
    // Move the token sets out of the files: the tokens are the largest thing in memory.
    let sets: Vec<_> = files.into_iter().map(|f| f.set).collect();
    let progress = Progress::new(cfg.progress);
    let result = score_batch(&sets, &cfg.score, &progress)?;
    drop(sets);

    let rows = crate::report::score_rows(&names, &groups, &vec![None; names.len()], &result);
    let outputs = BatchOutputs {
        out: &cfg.out,
        rows: &rows,
        result: &result,
        score: &cfg.score,
        config_extra: &toml::Table::new(),
        dim: shape.dim,
        plots: cfg.plots,
    };
    let written = outputs.write()?;
    let excluded_total = written.scoring.excluded_tokens;
    let mut summary = Summary::new("score --tokens", names.len());
    summary
        .detail("tokens", crate::formats::absolute(&cfg.tokens))
        .detail("views", shape.n_views)
        .detail("positions", shape.n_positions)
        .detail("grid", shape.grid)
        .detail("dim", shape.dim)
        .detail("token_providers", &providers);
    summary.scoring = Some(written.scoring);
    summary.timings = run_timings(read_seconds, &result.timings, written.timings);
    summary.total_seconds = started.elapsed().as_secs_f64();
    let links = crate::report::html::IndexLinks {
        plots: written.plots,
        ..Default::default()
    };
    outputs.finish(&summary, &links)?;
    say(format!(
        "done in {:.1} s: {} cases, {} tokens excluded; wrote {}",
        started.elapsed().as_secs_f64(),
        names.len(),
        excluded_total,
        cfg.out.display()
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
) -> Result<crate::run::lock::FolderLock> {
    let token_paths: Vec<&Path> = files.iter().map(|f| f.path.as_path()).collect();
    let digests = crate::run::folder::hash_files(&token_paths)?;
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
