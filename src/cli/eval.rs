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
    let doc = crate::pipeline::evaluate_run(&args.run, &args.labels, &progress)?;
    if !args.quiet {
        println!(
            "{}",
            serde_json::to_string_pretty(&doc["metrics"]).unwrap_or_default()
        );
    }
    Ok(())
}
