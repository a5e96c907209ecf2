//! `mri-ad score`: score a batch of volumes (`--healthy/--query [--labels]`, the whole job of
//! [`crate::pipeline`]) or of precomputed token files (`--tokens DIR`).
//!
//! Precedence of the settings: the declared defaults ([`crate::settings`]), then `--config FILE` (TOML,
//! keys = the flag names without the leading dashes), then the flags given on the command line. The
//! effective values are written to `config.toml` (a valid `--config` file that reproduces the run) and to
//! `summary.json`. The backbone, preprocessing and map flags (--model, --size, --upsample, ...) are
//! refused with `--tokens` (token files are scored as stored), and such keys of a `--config` file are not
//! used there (a notice says so).

use std::path::{Path, PathBuf};

use super::settings::Given;
use super::{ConfigFile, VOLUME_SETTINGS};
use crate::backbone::RuntimeSettings;
use crate::eval::MapSettings;
use crate::extract::{RunOptions, Shard, VolumeSettings};
use crate::pipeline::{self, PipelineConfig};
use crate::score::ScoreConfig;
use crate::settings::Settings;
use crate::volume::CubeSettings;
use crate::{Error, Result};

/// Arguments of `mri-ad score`.
#[derive(Debug, clap::Args)]
pub struct ScoreArgs {
    #[command(flatten)]
    pub inputs: super::InputArgs,
    /// Instead of volumes: a folder of precomputed token files `<case>.tokens.npz` (tokens f32 [L,M,D],
    /// valid bool [M], grid i64 [3]), used exactly as stored.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["healthy", "query", "labels", "masks"])]
    pub tokens: Option<PathBuf>,
    /// A healthy reference bank made by `mri-ad bank`: its cases join the batch and the distances among
    /// them are read from its tables, so only the pairs with a case of --tokens are computed. The result
    /// equals `score --tokens` on one folder holding the bank's and these token files. With --tokens only;
    /// the bank is never written.
    #[arg(long, value_name = "BANK", requires = "tokens")]
    pub bank: Option<PathBuf>,
    /// With --bank: recompute the SHA-256 of every file of the bank against its bank.json first (reads
    /// the whole bank once; without it, files are checked by size and their .npz checksums only).
    #[arg(long, requires = "bank")]
    pub verify_bank: bool,
    /// Output folder (created). The same command again into a run folder resumes it; a run folder with
    /// the finished results of other inputs or settings, or any other non-empty folder, needs --force.
    #[arg(long, value_name = "DIR", required_unless_present = "extract_to")]
    pub out: Option<PathBuf>,
    /// Instead of a run: write only this batch's token files, exactly as this `score` run would make them
    /// (the crop box, world space and Nyúl landmarks of the whole batch), into DIR/healthy and DIR/query,
    /// and stop. The extraction jobs of a sharded run (README "Sharded scoring"); a later `score
    /// --reuse-tokens DIR/healthy --reuse-tokens DIR/query` finds them up to date.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["tokens", "out", "from_shards", "labels"])]
    pub extract_to: Option<PathBuf>,
    /// With --extract-to: only shard i of N (1-based; in each group every N-th case by id), e.g. 2/8.
    #[arg(long, value_name = "i/N", requires = "extract_to")]
    pub shard: Option<String>,
    /// Take the token scores from a finished sharded run (`mri-ad shard`, its --work folder) instead of
    /// scoring here: its plan must hold this batch's token files (by SHA-256, in this batch's order) and
    /// the same scoring settings. The maps, metrics and report are then made as usual.
    #[arg(long, value_name = "WORK", conflicts_with = "tokens")]
    pub from_shards: Option<PathBuf>,
    /// Take token files from another run folder (or token folder) when they match this run's cache key
    /// (same volume, model, size, layers, projection, preprocessing): they are copied into this run's
    /// tokens/, never moved. To score the same batch with another method without computing its tokens
    /// again. Repeatable.
    #[arg(long, value_name = "RUN", conflicts_with = "tokens")]
    pub reuse_tokens: Vec<PathBuf>,
    #[command(flatten)]
    pub volume: super::VolumeArgs,
    #[command(flatten)]
    pub maps: Given<MapSettings>,
    #[command(flatten)]
    pub scoring: ScoringArgs,
    /// Skip the PNG plots of plots/ (ROC, histograms, similarity scaling, volume graph, one QC montage per
    /// case); index.html is still written, without them.
    #[arg(long)]
    pub no_plots: bool,
    #[command(flatten)]
    pub common: super::CommonArgs,
}

/// The scoring flags (ALGORITHM.md §5–§6, §11), shared by `score` and `score2d`: one flag per setting of
/// [`ScoreConfig`], over its declared default or the `--config` file's value.
#[derive(Debug, Clone, clap::Args)]
pub struct ScoringArgs {
    /// TOML file of settings, keys = flag names without the dashes (e.g. `tukey-k = 3.0`, `size = 168`,
    /// `layers = [6, 9, 12]`): the scoring flags below (--method to --memory-budget) and, for `score` on
    /// volumes, the backbone, preprocessing and map flags (--model to --upsample; ignored with a notice
    /// with --tokens, refused by score2d). Flags given on the command line win. A run's config.toml is such a
    /// file. Input, output and display flags are not read from it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub given: Given<ScoreConfig>,
}

/// Every setting a `--config` file of `score` may hold (named when a key is unknown).
fn score_settings() -> Vec<&'static [crate::settings::Setting]> {
    let mut all = VOLUME_SETTINGS.to_vec();
    all.push(ScoreConfig::SETTINGS);
    all
}

/// `--radius` on the command line with the exact search would change nothing but the run's recorded
/// settings (and so refuse a resume without it): refused.
pub fn refuse_radius_without_window(scoring: &ScoringArgs, config: &ScoreConfig) -> Result<()> {
    let given = scoring.given.flags();
    if config.search == crate::score::SearchKind::Exact && given.iter().any(|f| f == "--radius") {
        return Err(Error::bad_argument(
            "--radius",
            "applies to --search window only; drop it, or add --search window",
        ));
    }
    Ok(())
}

/// Runs `mri-ad score`: on volumes (`--query`) or on token files (`--tokens`).
pub fn run(args: ScoreArgs) -> Result<()> {
    if args.bank.is_some() && args.tokens.is_none() {
        return Err(Error::bad_argument(
            "--bank",
            "scores token files against the bank: give the new cases as --tokens DIR (made by `mri-ad \
             extract` with the bank's settings, README \"A healthy bank\"); volumes with --query are not \
             scored against a bank yet",
        ));
    }
    let mut file = ConfigFile::read(args.scoring.config.as_deref())?;
    let config = file.take(&args.scoring.given)?;
    refuse_radius_without_window(&args.scoring, &config)?;
    match (&args.tokens, &args.inputs.query) {
        (Some(dir), None) => run_tokens(&args, dir, config, file),
        (None, Some(_)) => run_volumes(&args, config, file),
        _ => Err(Error::bad_argument(
            "--query",
            "give the volumes (--query DIR, optionally --healthy DIR and --labels DIR) or token files \
             (--tokens DIR)",
        )),
    }
}

fn run_volumes(args: &ScoreArgs, config: ScoreConfig, mut file: ConfigFile) -> Result<()> {
    let runtime: RuntimeSettings = file.take(&args.volume.runtime)?;
    let volume: VolumeSettings = file.take(&args.volume.volume)?;
    let cube: CubeSettings = file.take(&args.volume.cube)?;
    let maps: MapSettings = file.take(&args.maps)?;
    file.refuse_unknown(&score_settings())?;
    let mut extract = volume.extract_config(
        &cube,
        &runtime,
        args.out.clone().unwrap_or_default().join("tokens"),
        Shard::ALL,
        (config.threads, config.seed),
        RunOptions {
            force: false,
            progress: args.common.progress(),
            report: args.common.reporter(),
        },
    )?;
    extract.reuse_from = args
        .reuse_tokens
        .iter()
        .map(|d| token_folder_of(d))
        .collect::<Result<_>>()?;
    let mut config_extra = runtime.to_table();
    config_extra.extend(volume.to_table());
    config_extra.extend(cube.to_table());
    config_extra.extend(maps.to_table());
    let cfg = PipelineConfig {
        healthy: args.inputs.healthy.clone(),
        query: args.inputs.query.clone().expect("checked by run"),
        labels: args.inputs.labels.clone(),
        masks: args.inputs.masks.clone(),
        out: args.out.clone().unwrap_or_default(),
        nyul: volume.nyul.clone(),
        preprocess: cube.preprocess(),
        config_extra,
        upsample: maps.upsample,
        brain_only_maps: !maps.unmasked_maps,
        extract,
        score: config,
        force: args.common.force,
        report: args.common.reporter(),
        progress: args.common.progress(),
        plots: !args.no_plots,
        from_shards: args.from_shards.clone(),
    };
    match &args.extract_to {
        Some(dir) => {
            let shard = match &args.shard {
                Some(s) => Shard::parse(s)?,
                None => Shard::ALL,
            };
            pipeline::extract_batch(&cfg, dir, shard)
        }
        None => pipeline::run(&cfg),
    }
}

/// The token folder of `--reuse-tokens DIR`: `DIR/tokens` for a run folder, else `DIR` itself when it
/// holds token files.
fn token_folder_of(dir: &Path) -> Result<PathBuf> {
    let flag = "--reuse-tokens";
    if !dir.is_dir() {
        return Err(Error::bad_argument(
            flag,
            format!(
                "{} is not a folder: give a run folder of `score` or a folder of token files",
                dir.display()
            ),
        ));
    }
    let inside = dir.join("tokens");
    let folder = if inside.is_dir() {
        inside
    } else {
        dir.to_path_buf()
    };
    let holds_tokens = std::fs::read_dir(&folder)
        .map_err(|e| Error::io(&folder, e))?
        .filter_map(|e| e.ok())
        .any(|e| {
            e.file_name()
                .to_string_lossy()
                .ends_with(crate::formats::tokens::TOKEN_SUFFIX)
        });
    if !holds_tokens {
        return Err(Error::bad_argument(
            flag,
            format!(
                "{} holds no token files (*{})",
                folder.display(),
                crate::formats::tokens::TOKEN_SUFFIX
            ),
        ));
    }
    Ok(folder)
}

fn run_tokens(
    args: &ScoreArgs,
    dir: &Path,
    config: ScoreConfig,
    mut file: ConfigFile,
) -> Result<()> {
    let mut given = args.volume.runtime.flags();
    given.extend(args.volume.volume.flags());
    given.extend(args.volume.cube.flags());
    given.extend(args.maps.flags());
    if !given.is_empty() {
        return Err(Error::bad_argument(
            given.join(", "),
            "these apply to volumes (--query) only; with --tokens the token files are scored as stored \
             (made with the settings in their .tokens.json): drop them",
        ));
    }
    let ignored = file.drop_keys(&VOLUME_SETTINGS);
    file.refuse_unknown(&score_settings())?;
    if !ignored.is_empty() {
        args.common.reporter().notice(format!(
            "the --config keys {} are volume settings, not used with --tokens (the token files are scored \
             as stored)",
            ignored.join(", ")
        ));
    }
    crate::pipeline::scored_tokens::run(&crate::pipeline::scored_tokens::TokensConfig {
        tokens: dir.to_path_buf(),
        bank: args.bank.clone(),
        verify_bank: args.verify_bank,
        out: args
            .out
            .clone()
            .expect("clap requires --out without --extract-to"),
        score: config,
        force: args.common.force,
        report: args.common.reporter(),
        progress: args.common.progress(),
        plots: !args.no_plots,
    })
}
