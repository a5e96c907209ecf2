//! Command-line layer: clap definitions, converted to validated library configurations.
//!
//! Nothing outside `cli/` depends on clap. Each subcommand has its own file with an `Args` struct (clap
//! derive) and a `run` function that builds the library's plain `Config`, validates it and calls the library.

// The doc comments below are clap's --help text, written for the terminal ([L,M,D], <case>), not rustdoc.
#![allow(rustdoc::broken_intra_doc_links, rustdoc::invalid_html_tags)]

use clap::{Parser, Subcommand};

use crate::Result;

pub mod check;
pub mod eval;
pub mod extract;
pub mod score;

/// Zero-shot anomaly detection in 3D brain MRI and 2D images (MuSc mutual scoring + CoDeGraph).
#[derive(Debug, Parser)]
#[command(name = "mri-ad", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Score a batch: every case against all the other cases (leave-one-out), writing scores, maps and
    /// the CoDeGraph graph to --out.
    Score(Box<score::ScoreArgs>),
    /// List the cases of the input folders (shapes, spacings, orientations, label pairing) and check them:
    /// every problem is reported, then the command exits with code 2.
    Check(check::CheckArgs),
    /// Write token files only: every volume of --input tokenized with the backbone (ALGORITHM.md §3.2) into
    /// --out as <case>.tokens.npz + <case>.tokens.json; up-to-date token files are reused.
    Extract(Box<extract::ExtractArgs>),
    /// Recompute the metrics of a finished `score` run against lesion label maps (writes eval.json).
    Eval(eval::EvalArgs),
}

/// Flags shared by every subcommand that shows progress or writes an output folder.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// Hide the progress bars (they are hidden anyway when stderr is not a terminal).
    #[arg(long)]
    pub no_progress: bool,
    /// Print nothing but errors.
    #[arg(long, short)]
    pub quiet: bool,
    /// Write into a non-empty output folder, replacing the files this run writes (other files are kept).
    #[arg(long)]
    pub force: bool,
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Score(args) => score::run(*args),
        Command::Check(args) => check::run(args),
        Command::Extract(args) => extract::run(*args),
        Command::Eval(args) => eval::run(args),
    }
}
