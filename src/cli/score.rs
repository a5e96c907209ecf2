//! `mri-ad score`: score a batch of volumes (`--healthy/--query [--labels]`, the whole job of
//! [`crate::pipeline`]) or of precomputed token files (`--tokens DIR`).
//!
//! Precedence of the settings: the spec's defaults, then `--config FILE` (TOML, keys = the flag names
//! without the leading dashes), then the flags given on the command line ([`super::Cli::parse_recording`]
//! records which backbone flags were given, since their defaults are concrete values). The effective
//! values are written to `config.toml` (a valid `--config` file that reproduces the run) and to
//! `summary.json`. The backbone, preprocessing and map flags (--model, --size, --upsample, ...) are
//! refused with `--tokens` (token files are scored as stored), and such keys of a `--config` file are not
//! used there (a notice says so).

use std::path::{Path, PathBuf};

use crate::extract::Shard;
use crate::pipeline::{self, PipelineConfig};
use crate::score::codegraph::communities::{OutlierRule, TukeyFence};
use crate::score::msm::Distance;
use crate::score::{Method, RefineMode, ScoreConfig};
use crate::{Error, Result};

/// Arguments of `mri-ad score`.
#[derive(Debug, clap::Args)]
pub struct ScoreArgs {
    /// Folder of healthy volumes (NIfTI; e.g. IXI T2), scored in the same batch as --query. Optional: without
    /// it the query folder is one unlabeled batch.
    #[arg(long, value_name = "DIR")]
    pub healthy: Option<PathBuf>,
    /// Folder of query volumes (NIfTI; e.g. BraTS t2w). Every case of both folders is scored against all
    /// the others.
    #[arg(long, value_name = "DIR")]
    pub query: Option<PathBuf>,
    /// Folder of lesion label maps for the query cases (any label > 0 is lesion), paired by case id as
    /// data-manifest/ describes; enables the evaluation (patient, voxel and Dice metrics) and sets the
    /// binary masks at the token-grid F1-max threshold (without labels the masks use the label-free GMM
    /// threshold of ALGORITHM.md §9).
    #[arg(long, value_name = "DIR")]
    pub labels: Option<PathBuf>,
    /// Folder of brain masks (mask > 0 is brain), one for every case of --healthy and --query, paired by
    /// case id as data-manifest/ describes (e.g. <case>_mask.nii.gz), each on its volume's grid. The mask
    /// replaces the `voxel > 0` rule and voxels outside it are set to 0, so volumes that are not
    /// skull-stripped (a noisy background, the skull) can be scored; without it such volumes are refused.
    #[arg(long, value_name = "DIR")]
    pub masks: Option<PathBuf>,
    /// Instead of volumes: a folder of precomputed token files `<case>.tokens.npz` (tokens f32 [L,M,D],
    /// valid bool [M], grid i64 [3]), used exactly as stored.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["healthy", "query", "labels", "masks"])]
    pub tokens: Option<PathBuf>,
    /// Output folder (created). The same command again into a run folder resumes it; a run folder with
    /// the finished results of other inputs or settings, or any other non-empty folder, needs --force.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    #[command(flatten)]
    pub backbone: super::BackboneArgs,
    #[command(flatten)]
    pub maps: super::MapArgs,
    #[command(flatten)]
    pub scoring: ScoringArgs,
    /// Skip the PNG plots of plots/ (ROC, histograms, similarity scaling, volume graph, one QC montage per
    /// case); index.html is still written, without them.
    #[arg(long)]
    pub no_plots: bool,
    #[command(flatten)]
    pub common: super::CommonArgs,
    /// The backbone and preprocessing flags given explicitly on the command line (filled by
    /// [`super::Cli::parse_recording`]; empty when parsed otherwise).
    #[arg(skip)]
    pub given_volume_flags: Vec<String>,
}

/// The scoring flags (ALGORITHM.md §5–§6, §11), shared by `score` and `score2d`: each is an override of
/// [`ScoreConfig`]'s default or of the `--config` file.
#[derive(Debug, Clone, clap::Args)]
pub struct ScoringArgs {
    /// TOML file of settings, keys = flag names without the dashes (e.g. `tukey-k = 3.0`, `size = 168`,
    /// `layers = [6, 9, 12]`): the scoring flags below (--method to --memory-budget) and, for `score` on
    /// volumes, the backbone, preprocessing and map flags (--model to --upsample; ignored with a notice
    /// with --tokens, refused by score2d). Flags given on the command line win. A run's config.toml is such a
    /// file. Input, output and display flags are not read from it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Scoring method [default: codegraph].
    #[arg(long, value_enum)]
    pub method: Option<MethodArg>,
    /// MSM fraction α of plain MuSc: k = max(1, floor(α·(N−1))) [default: 0.3].
    #[arg(long)]
    pub alpha_musc: Option<f64>,
    /// MSM fraction α inside CoDeGraph [default: 0.1].
    #[arg(long)]
    pub alpha_codegraph: Option<f64>,
    /// Distance in the mutual similarity vectors [default: euclidean].
    #[arg(long, value_enum)]
    pub distance: Option<DistanceArg>,
    /// Reference rank ratio ρ: r_ref = floor(ρ·N), clamped to [2, N−1] [default: 0.3].
    #[arg(long)]
    pub reference_ratio: Option<f64>,
    /// Exponent β of the weighted endurance ratio ζ·m̄^(−β) [default: 0.2].
    #[arg(long)]
    pub beta: Option<f64>,
    /// Coverage target c*: links are added until this fraction of cases has a neighbour [default: 0.9].
    #[arg(long)]
    pub coverage: Option<f64>,
    /// Links added per batch in the coverage-based selection (1 = exact minimal prefix) [default: 100].
    #[arg(long)]
    pub link_batch: Option<usize>,
    /// Percentile of the edge weights used as the CPM resolution γ [default: 25].
    #[arg(long)]
    pub resolution_percentile: Option<f64>,
    /// Rule that flags outlier communities [default: tukey].
    #[arg(long, value_enum)]
    pub outlier_rule: Option<OutlierRuleArg>,
    /// Which densities the Tukey quartiles of a community come from: others = the other non-singleton
    /// communities (leave-one-out, so a very dense community cannot raise its own fence: with 4
    /// communities and the spec's rule, k_T ≥ 3 can never flag one); all = every non-singleton community,
    /// the tested one included (ALGORITHM.md §6.4 as written) [default: others].
    #[arg(long, value_enum)]
    pub tukey_fence: Option<TukeyFenceArg>,
    /// Tukey multiplier k_T: outlier if density > Q3 + k_T·IQR [default: 3, Tukey's "far out" fence,
    /// which the thesis reports as equivalent and more sensitive than its large k_T; ALGORITHM.md says 5].
    #[arg(long)]
    pub tukey_k: Option<f64>,
    /// Floor of the Tukey IQR as a fraction of Q3, guarding the degenerate IQR = 0 of graphs made mostly
    /// of equal pairs; 0 = the plain rule [default: 0.5].
    #[arg(long)]
    pub tukey_iqr_floor: Option<f64>,
    /// Communities flagged by --outlier-rule top-densest [default: 3].
    #[arg(long)]
    pub top_densest: Option<usize>,
    /// With fewer non-singleton communities than this, no community is flagged [default: 4].
    #[arg(long)]
    pub min_communities: Option<usize>,
    /// Percentile p_dep of the outside-community dependency ratios used as threshold [default: 95].
    #[arg(long)]
    pub dependency_percentile: Option<f64>,
    /// Final base: exact recomputation, or invalidation of distances to excluded tokens [default: exact].
    #[arg(long, value_enum)]
    pub refine_mode: Option<RefineModeArg>,
    /// Leiden restarts with derived seeds; the best CPM quality is kept [default: 256].
    #[arg(long)]
    pub leiden_restarts: Option<usize>,
    /// Maximum Leiden iterations per restart (stops earlier at convergence) [default: 50].
    #[arg(long)]
    pub leiden_iterations: Option<usize>,
    /// Subset division: shuffle the batch with --seed, split it into this many near-equal parts and score
    /// each part on its own (faster, each case sees fewer references) [default: 1 = off].
    #[arg(long)]
    pub divide: Option<usize>,
    /// Keep void tokens (valid = false) in the search as queries and base; by default they are left
    /// out (score 0), which is about 4× cheaper on brain volumes. They never create graph links.
    #[arg(long)]
    pub keep_void: bool,
    /// Views that feed the graph stage, comma-separated 0-based view indices: for `score`, positions in
    /// the token files' layer axis (one view per --layers block, in order: 0,1,2 for blocks 6,9,12)
    /// [default: all]; for `score2d`, view = block index · (number of LNAMD degrees) + degree index
    /// [default: the r = 1 views, 0,3,6,9].
    #[arg(long, value_delimiter = ',')]
    pub graph_views: Option<Vec<usize>>,
    /// Tokens closer than this many grid steps to a void token create no graph links (surface tokens of
    /// the brain match by their outline, which mimics a recurring anomaly); 0 = every non-void token
    /// links, as in the spec [default: 1].
    #[arg(long)]
    pub link_margin: Option<usize>,
    /// Seed of every random choice [default: 0].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Worker threads, 0 = one per core [default: 0]: for scoring; for the backbone, ONNX Runtime's
    /// intra-op threads (0 = one per physical core); and, on volumes, how many volumes the crop box, Nyúl
    /// and maps stages work on at once (within --memory-budget; the resampling inside each volume still
    /// uses every core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Memory budget in MiB for distance tables and GEMM scratch [default: 8192]; on volumes it also caps
    /// how many volumes the crop box, Nyúl and maps stages hold at once (about 0.5 GiB each at 224³).
    #[arg(long, value_name = "MIB")]
    pub memory_budget: Option<usize>,
}

/// `--method` values.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum MethodArg {
    Codegraph,
    Musc,
}
/// `--distance` values.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum DistanceArg {
    Euclidean,
    Squared,
}
/// `--outlier-rule` values.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum OutlierRuleArg {
    Tukey,
    TopDensest,
}
/// `--tukey-fence` values.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum TukeyFenceArg {
    Others,
    All,
}

/// `--refine-mode` values.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum RefineModeArg {
    Exact,
    Invalidate,
}

/// Reads a `--config` TOML file: the scoring keys into a [`ScoreConfig`] (missing keys keep the defaults)
/// and the backbone/preprocessing keys of `score` on volumes into a [`super::BackboneFile`]. Unknown keys
/// and wrong types are errors naming the file.
pub fn read_config_file(path: &Path) -> Result<(ScoreConfig, super::BackboneFile)> {
    let bad =
        |e: &dyn std::fmt::Display| Error::bad_input(path, format!("invalid --config file: {e}"));
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut scoring: toml::Table = toml::from_str(&text).map_err(|e| bad(&e))?;
    // Unknown keys are named here with every key the file may hold (serde's own message lists only the
    // scoring keys).
    let mut known: Vec<String> = crate::run::outputs::toml_table(&ScoreConfig::default())?
        .keys()
        .cloned()
        .chain(super::BackboneFile::KEYS.map(String::from))
        .collect();
    known.sort();
    if let Some(key) = scoring.keys().find(|k| !known.contains(k)) {
        return Err(bad(&format!(
            "unknown key `{key}`; the keys are the flag names without the dashes: {}",
            known.join(", ")
        )));
    }
    let mut backbone = toml::Table::new();
    for key in super::BackboneFile::KEYS {
        if let Some(v) = scoring.remove(key) {
            backbone.insert(key.to_string(), v);
        }
    }
    let score: ScoreConfig = toml::Value::Table(scoring)
        .try_into()
        .map_err(|e| bad(&e))?;
    let file: super::BackboneFile = toml::Value::Table(backbone)
        .try_into()
        .map_err(|e| bad(&e))?;
    Ok((score, file))
}

impl ScoringArgs {
    /// Reads the `--config` file once: the effective scoring configuration (defaults < file < flags),
    /// validated, and the file's backbone and preprocessing keys (all unset without a file).
    pub fn to_configs(&self) -> Result<(ScoreConfig, super::BackboneFile)> {
        let (mut c, file) = match &self.config {
            Some(p) => read_config_file(p)?,
            None => (ScoreConfig::default(), super::BackboneFile::default()),
        };
        macro_rules! set {
            ($($field:ident),*) => { $( if let Some(v) = self.$field.clone() { c.$field = v; } )* };
        }
        set!(
            alpha_musc,
            alpha_codegraph,
            reference_ratio,
            beta,
            coverage,
            link_batch,
            resolution_percentile,
            tukey_k,
            tukey_iqr_floor,
            top_densest,
            min_communities,
            dependency_percentile,
            leiden_restarts,
            leiden_iterations,
            divide,
            graph_views,
            link_margin,
            seed,
            threads,
            memory_budget
        );
        if let Some(m) = self.method {
            c.method = match m {
                MethodArg::Codegraph => Method::Codegraph,
                MethodArg::Musc => Method::Musc,
            };
        }
        if let Some(d) = self.distance {
            c.distance = match d {
                DistanceArg::Euclidean => Distance::Euclidean,
                DistanceArg::Squared => Distance::Squared,
            };
        }
        if let Some(r) = self.outlier_rule {
            c.outlier_rule = match r {
                OutlierRuleArg::Tukey => OutlierRule::Tukey,
                OutlierRuleArg::TopDensest => OutlierRule::TopDensest,
            };
        }
        if let Some(f) = self.tukey_fence {
            c.tukey_fence = match f {
                TukeyFenceArg::Others => TukeyFence::Others,
                TukeyFenceArg::All => TukeyFence::All,
            };
        }
        if let Some(r) = self.refine_mode {
            c.refine_mode = match r {
                RefineModeArg::Exact => RefineMode::Exact,
                RefineModeArg::Invalidate => RefineMode::Invalidate,
            };
        }
        if self.keep_void {
            c.keep_void = true;
        }
        c.validate()?;
        Ok((c, file))
    }
}

/// Runs `mri-ad score`: on volumes (`--query`) or on token files (`--tokens`).
pub fn run(args: ScoreArgs) -> Result<()> {
    let (config, file) = args.scoring.to_configs()?;
    match (&args.tokens, &args.query) {
        (Some(dir), None) => run_tokens(&args, dir, config, &file),
        (None, Some(_)) => run_volumes(&args, config, &file),
        _ => Err(Error::bad_argument(
            "--query",
            "give the volumes (--query DIR, optionally --healthy DIR and --labels DIR) or token files \
             (--tokens DIR)",
        )),
    }
}

fn run_volumes(args: &ScoreArgs, config: ScoreConfig, file: &super::BackboneFile) -> Result<()> {
    let mut backbone = args.backbone.clone();
    let mut maps = args.maps.clone();
    if let Some(path) = &args.scoring.config {
        backbone.apply_file(&mut maps, file, &args.given_volume_flags, path)?;
    }
    let extract = backbone.extract_config(
        args.out.join("tokens"),
        Shard::ALL,
        config.threads,
        config.seed,
        &super::CommonArgs {
            force: false,
            ..args.common.clone()
        },
    )?;
    let cfg = PipelineConfig {
        healthy: args.healthy.clone(),
        query: args.query.clone().expect("checked by run"),
        labels: args.labels.clone(),
        masks: args.masks.clone(),
        out: args.out.clone(),
        nyul: backbone.nyul.clone(),
        preprocess: backbone.preprocess(),
        config_extra: backbone.to_file(&maps).to_table(),
        upsample: maps.upsample(),
        extract,
        score: config,
        force: args.common.force,
        report: args.common.reporter(),
        progress: !args.common.no_progress && !args.common.quiet,
        plots: !args.no_plots,
    };
    pipeline::run(&cfg)
}

fn run_tokens(
    args: &ScoreArgs,
    dir: &Path,
    config: ScoreConfig,
    file: &super::BackboneFile,
) -> Result<()> {
    if !args.given_volume_flags.is_empty() {
        return Err(Error::bad_argument(
            args.given_volume_flags.join(", "),
            "these apply to volumes (--query) only; with --tokens the token files are scored as stored \
             (made with the settings in their .tokens.json): drop them",
        ));
    }
    let ignored = file.keys_set();
    if !ignored.is_empty() {
        args.common.reporter().notice(format!(
            "the --config keys {} are volume settings, not used with --tokens (the token files are scored \
             as stored)",
            ignored.join(", ")
        ));
    }
    crate::pipeline::scored_tokens::run(&crate::pipeline::scored_tokens::TokensConfig {
        tokens: dir.to_path_buf(),
        out: args.out.clone(),
        score: config,
        force: args.common.force,
        report: args.common.reporter(),
        progress: !args.common.no_progress && !args.common.quiet,
        plots: !args.no_plots,
    })
}
