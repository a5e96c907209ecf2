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
    /// Nearest-token search of the stored tables (exact or window); `score --bank` must use the same.
    #[arg(long, value_name = "SEARCH", default_value = "exact", value_parser = ["exact", "window"])]
    pub search: String,
    /// Window half-width in token-grid steps for --search window.
    #[arg(long, default_value_t = ScoreConfig::default().radius)]
    pub radius: usize,
    /// Keep void tokens in the search (as `score --keep-void`); `score --bank` must use the same.
    #[arg(long)]
    pub keep_void: bool,
    /// Worker threads, 0 = one per core.
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Memory budget in MiB for the GEMM scratch.
    #[arg(long, value_name = "MIB", default_value_t = ScoreConfig::default().memory_budget)]
    pub memory_budget: usize,
    #[command(flatten)]
    pub common: super::CommonArgs,
}

/// Runs `mri-ad bank`.
pub fn run(args: BankArgs) -> Result<()> {
    let score = ScoreConfig {
        search: if args.search == "window" {
            SearchKind::Window
        } else {
            SearchKind::Exact
        },
        radius: args.radius,
        keep_void: args.keep_void,
        threads: args.threads,
        memory_budget: args.memory_budget,
        ..ScoreConfig::default()
    };
    build(&BuildConfig {
        tokens: args.tokens,
        out: args.out,
        score,
        force: args.common.force,
        report: args.common.reporter(),
        progress: args.common.progress(),
    })
    .map(|_| ())
}
