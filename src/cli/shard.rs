//! `mri-ad shard <step>`: the sharded scorer ([`crate::shard`]), one batch of token files scored in K
//! blocks by separate jobs with the outputs of one `score --tokens`.

use std::path::PathBuf;

use clap::Subcommand;

use super::score::ScoringArgs;
use super::ConfigFile;
use crate::score::ScoreConfig;
use crate::settings::Settings;
use crate::shard::{self, BlockArg, JoinConfig, PlanConfig, StepConfig};
use crate::Result;

/// Arguments of `mri-ad shard`.
#[derive(Debug, clap::Args)]
pub struct ShardArgs {
    #[command(subcommand)]
    pub step: Step,
}

/// The steps, in the order they run (README "Sharded scoring"; workflow/Snakefile runs them all).
#[derive(Debug, Subcommand)]
pub enum Step {
    /// Fix the batch (every token file of --tokens by SHA-256), the scoring settings and the number of
    /// blocks K in WORK/plan.json; every later step reads them from there.
    #[command(allow_negative_numbers = true)]
    Plan(Box<PlanArgs>),
    /// The distances of job i: the pairs of cases of its tiles (block pairs), both directions written.
    Distances(BlockArgs),
    /// CoDeGraph: the link candidates of block i's tokens (the smallest --link-candidates kept).
    Links(LinksArgs),
    /// CoDeGraph: link selection over every block's candidates, the case graph, Leiden, the outlier
    /// communities (one round of `ratios` follows per outlier community).
    Graph(GlobalArgs),
    /// CoDeGraph: round t of Algorithm 2 for block i (dependency ratios on the t-th outlier community
    /// after the exclusions of the rounds before it).
    Ratios(RatiosArgs),
    /// The final token scores of block i (after every round's exclusions).
    Finish(BlockArgs),
    /// Write the run folder (the files `score --tokens` writes) from every block's final scores.
    Join(JoinArgs),
}

/// Flags of `shard plan`.
#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    /// Folder of token files `<case>.tokens.npz` (as for `score --tokens`). Repeatable: the batch is the
    /// folders' cases in the order given, each folder's by id (`--tokens T/healthy --tokens T/query` for
    /// the files of `score --extract-to T`, the order of `score --healthy --query`).
    #[arg(long, value_name = "DIR", required = true)]
    pub tokens: Vec<PathBuf>,
    /// The work folder of the sharded run (created; holds the plan and every step's files).
    #[arg(long, value_name = "WORK")]
    pub work: PathBuf,
    /// Number of blocks K the batch's cases are split into (contiguous in case order).
    #[arg(long, value_name = "K")]
    pub blocks: usize,
    #[command(flatten)]
    pub scoring: ScoringArgs,
    /// Replace a plan of other token files, settings or --blocks in --work (its steps' files are removed).
    #[arg(long)]
    pub force: bool,
    /// Print nothing but errors.
    #[arg(long, short)]
    pub quiet: bool,
}

/// Flags of the steps of one block.
#[derive(Debug, clap::Args)]
pub struct BlockArgs {
    /// The work folder `shard plan` made.
    #[arg(long, value_name = "WORK")]
    pub work: PathBuf,
    /// Which block (or job), 1-based, of the plan's K: e.g. 2/7.
    #[arg(long, value_name = "i/K")]
    pub block: BlockArg,
    #[command(flatten)]
    pub run: RunArgs,
}

/// Flags of `shard links`.
#[derive(Debug, clap::Args)]
pub struct LinksArgs {
    #[command(flatten)]
    pub block: BlockArgs,
    /// Link candidates the block keeps (its smallest, in Algorithm 1's order); `shard graph` says when
    /// the selection needs more.
    #[arg(long, value_name = "N", default_value_t = 1 << 18)]
    pub link_candidates: usize,
}

/// Flags of `shard ratios`.
#[derive(Debug, clap::Args)]
pub struct RatiosArgs {
    #[command(flatten)]
    pub block: BlockArgs,
    /// The round t, 1-based: the t-th outlier community of `shard graph` (densest first).
    #[arg(long, value_name = "t")]
    pub round: usize,
}

/// Flags of the global steps.
#[derive(Debug, clap::Args)]
pub struct GlobalArgs {
    /// The work folder `shard plan` made.
    #[arg(long, value_name = "WORK")]
    pub work: PathBuf,
    #[command(flatten)]
    pub run: RunArgs,
}

/// Flags of `shard join`.
#[derive(Debug, clap::Args)]
pub struct JoinArgs {
    /// The work folder `shard plan` made.
    #[arg(long, value_name = "WORK")]
    pub work: PathBuf,
    /// The run folder (as `score --out`; the same rules: a run folder of other inputs or settings, or any
    /// other non-empty folder, needs --force).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Replace a run folder of other inputs or settings.
    #[arg(long)]
    pub force: bool,
    /// Skip the PNG plots of plots/.
    #[arg(long)]
    pub no_plots: bool,
    /// Print nothing but errors.
    #[arg(long, short)]
    pub quiet: bool,
}

/// Operational flags of the steps (they do not change the results).
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Worker threads, 0 = the plan's --threads (0 there: one per core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Hide the progress bar (hidden anyway when stderr is not a terminal).
    #[arg(long)]
    pub no_progress: bool,
    /// Print nothing but errors.
    #[arg(long, short)]
    pub quiet: bool,
}

fn reporter(quiet: bool) -> crate::messages::Reporter {
    crate::messages::Reporter::new(quiet, |line| eprintln!("{line}"))
}

fn step_config(work: PathBuf, block: Option<BlockArg>, run: &RunArgs) -> StepConfig {
    StepConfig {
        work,
        block,
        threads: run.threads,
        progress: !run.no_progress && !run.quiet,
        report: reporter(run.quiet),
    }
}

/// Runs `mri-ad shard <step>`.
pub fn run(args: ShardArgs) -> Result<()> {
    match args.step {
        Step::Plan(a) => plan(*a),
        Step::Distances(a) => shard::distances(&step_config(a.work, Some(a.block), &a.run)),
        Step::Links(a) => shard::links(
            &step_config(a.block.work, Some(a.block.block), &a.block.run),
            a.link_candidates,
        ),
        Step::Graph(a) => shard::graph(&step_config(a.work, None, &a.run)),
        Step::Ratios(a) => shard::ratios(
            &step_config(a.block.work, Some(a.block.block), &a.block.run),
            a.round,
        ),
        Step::Finish(a) => shard::finish(&step_config(a.work, Some(a.block), &a.run)),
        Step::Join(a) => shard::join(&JoinConfig {
            work: a.work,
            out: a.out,
            force: a.force,
            plots: !a.no_plots,
            report: reporter(a.quiet),
        }),
    }
}

fn plan(args: PlanArgs) -> Result<()> {
    let mut file = ConfigFile::read(args.scoring.config.as_deref())?;
    let score: ScoreConfig = file.take(&args.scoring.given)?;
    super::score::refuse_radius_without_window(&args.scoring, &score)?;
    let ignored = file.drop_keys(&super::VOLUME_SETTINGS);
    let mut known = super::VOLUME_SETTINGS.to_vec();
    known.push(ScoreConfig::SETTINGS);
    file.refuse_unknown(&known)?;
    let report = reporter(args.quiet);
    if !ignored.is_empty() {
        report.notice(format!(
            "the --config keys {} are volume settings, not used on token files",
            ignored.join(", ")
        ));
    }
    shard::make_plan(&PlanConfig {
        tokens: args.tokens,
        work: args.work,
        blocks: args.blocks,
        score,
        force: args.force,
        report,
    })
    .map(|_| ())
}
