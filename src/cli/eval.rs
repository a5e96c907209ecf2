//! `mri-ad eval`: recompute the metrics of a finished `score` run against label maps.
use std::path::PathBuf;

use crate::progress::Progress;
use crate::Result;

/// Arguments of `mri-ad eval`.
#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// The run folder of `mri-ad score --query ...` (its summary.json names the inputs, its token_scores/
    /// hold the scores).
    #[arg(long, value_name = "DIR")]
    pub run: PathBuf,
    /// Folder of lesion label maps for the query cases (any label > 0 is lesion), paired by case id.
    #[arg(long, value_name = "DIR")]
    pub labels: PathBuf,
    /// How many volumes are worked on at once, 0 = one per core (within --memory-budget; the resampling
    /// inside each volume still uses every core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Memory budget in MiB: caps how many volumes are held at once (about 0.5 GiB each at 224³).
    #[arg(long, value_name = "MIB", default_value_t = crate::score::ScoreConfig::default().memory_budget)]
    pub memory_budget: usize,
    /// Hide the progress bar (hidden anyway when stderr is not a terminal).
    #[arg(long)]
    pub no_progress: bool,
    /// Print nothing but errors.
    #[arg(long, short)]
    pub quiet: bool,
}

/// Runs `mri-ad eval`: writes `<run>/eval.json` and prints the metrics.
pub fn run(args: EvalArgs) -> Result<()> {
    let progress = Progress::new(!args.no_progress && !args.quiet);
    if args.memory_budget == 0 {
        return Err(crate::Error::bad_argument(
            "--memory-budget",
            "must be at least 1",
        ));
    }
    let workers = crate::pipeline::Workers {
        threads: args.threads,
        memory_budget: args.memory_budget,
    };
    let doc = crate::pipeline::evaluate_run(&args.run, &args.labels, workers, &progress)?;
    if !args.quiet {
        println!(
            "{}",
            serde_json::to_string_pretty(&doc["metrics"]).unwrap_or_default()
        );
    }
    Ok(())
}
