//! `mri-ad bank`: build a healthy reference bank ([`crate::bank`]) from token files, for
//! `mri-ad score --bank BANK --tokens DIR`.

use std::path::PathBuf;

use crate::bank::{build, BuildConfig};
use crate::score::{ScoreConfig, SearchKind};
use crate::Result;

/// Arguments of `mri-ad bank`.
#[derive(Debug, clap::Args)]
pub struct BankArgs {
    /// Folder of the healthy cases' token files `<case>.tokens.npz` (with their .tokens.json sidecars, as
    /// `mri-ad extract` writes them); they are copied into the bank.
    #[arg(long, value_name = "DIR")]
    pub tokens: PathBuf,
    /// The bank folder (created; a folder holding a bank needs --force to be replaced).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Nearest-token search of the stored tables: exact = every active token of every other case; window
    /// = only the tokens within --radius grid steps (Chebyshev) of the token's own position, for volumes
    /// registered to one atlas. `score --bank` must use the same.
    #[arg(long, value_name = "SEARCH", default_value = "exact", value_parser = ["exact", "window"])]
    pub search: String,
    /// Window half-width in token-grid steps for --search window (1 = a 3³ window, 2 = 5³).
    #[arg(long)]
    pub radius: Option<usize>,
    /// Keep void tokens in the search (as `score --keep-void`); `score --bank` must use the same.
    #[arg(long)]
    pub keep_void: bool,
    /// Worker threads, 0 = one per core.
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Memory budget in MiB for the GEMM scratch.
    #[arg(long, value_name = "MIB", default_value_t = ScoreConfig::default().memory_budget)]
    pub memory_budget: usize,
    /// Replace the bank in --out (a finished one, or one whose build was stopped); a folder holding
    /// anything else is never written into.
    #[arg(long)]
    pub force: bool,
    /// Hide the progress bar (hidden anyway when stderr is not a terminal).
    #[arg(long)]
    pub no_progress: bool,
    /// Print nothing but errors.
    #[arg(long, short)]
    pub quiet: bool,
}

/// Runs `mri-ad bank`.
pub fn run(args: BankArgs) -> Result<()> {
    let search = if args.search == "window" {
        SearchKind::Window
    } else {
        SearchKind::Exact
    };
    if search == SearchKind::Exact && args.radius.is_some() {
        return Err(crate::Error::bad_argument(
            "--radius",
            "applies to --search window only; drop it, or add --search window",
        ));
    }
    let score = ScoreConfig {
        search,
        radius: args.radius.unwrap_or(ScoreConfig::default().radius),
        keep_void: args.keep_void,
        threads: args.threads,
        memory_budget: args.memory_budget,
        ..ScoreConfig::default()
    };
    build(&BuildConfig {
        tokens: args.tokens,
        out: args.out,
        score,
        force: args.force,
        report: crate::messages::Reporter::new(args.quiet, |line| eprintln!("{line}")),
        progress: !args.no_progress && !args.quiet,
    })
    .map(|_| ())
}
