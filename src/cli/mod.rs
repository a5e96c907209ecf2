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
pub mod score2d;

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
    #[command(allow_negative_numbers = true)]
    Score(Box<score::ScoreArgs>),
    /// List the cases of the input folders (shapes, spacings, orientations, label pairing) and check them:
    /// exit 0 when there is no problem; else every problem is reported and the command exits with code 2.
    #[command(allow_negative_numbers = true)]
    Check(check::CheckArgs),
    /// Write token files only: every volume of --input tokenized with the backbone (ALGORITHM.md §3.2) into
    /// --out as <case>.tokens.npz + <case>.tokens.json; up-to-date token files are reused.
    #[command(allow_negative_numbers = true)]
    Extract(Box<extract::ExtractArgs>),
    /// Recompute the metrics of a finished `score` run against lesion label maps (writes eval.json).
    #[command(allow_negative_numbers = true)]
    Eval(eval::EvalArgs),
    /// Score a batch of 2D images (PNG/JPEG/TIFF; plain folder with optional masks, or the MVTec AD layout):
    /// DINOv2 tokens of four blocks, LNAMD, MuSc or CoDeGraph, RsCIN image scores, maps, overlays and,
    /// with ground truth, image and pixel metrics (AUROC, AP, F1-max, AUPRO).
    #[command(allow_negative_numbers = true)]
    Score2d(Box<score2d::Score2dArgs>),
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

/// The model and where it runs: shared by `extract`, `score` and `score2d`.
#[derive(Debug, Clone, clap::Args)]
pub struct RuntimeArgs {
    /// The ONNX model (contract in onnx/README.md).
    #[arg(long, default_value = "onnx/dinov2_vits14.onnx")]
    pub model: std::path::PathBuf,
    /// The ONNX Runtime shared library (libonnxruntime.so.*, from the onnxruntime or onnxruntime-gpu wheel);
    /// default: the ORT_DYLIB_PATH environment variable.
    #[arg(long)]
    pub ort_lib: Option<std::path::PathBuf>,
    /// auto: CUDA if the CUDA execution provider really registers, else CPU with a notice; cuda: fail
    /// (exit 2) with the provider's error when it cannot run; cpu.
    #[arg(long, default_value = "auto", value_parser = ["auto", "cpu", "cuda"])]
    pub device: String,
}

impl RuntimeArgs {
    /// The parsed `--device`.
    pub fn device(&self) -> Result<crate::backbone::ort::Device> {
        self.device
            .parse()
            .map_err(|e: String| crate::Error::bad_argument("--device", e))
    }
}

/// Backbone, tokenizer and preprocessing flags shared by `extract` and `score` on volumes.
#[derive(Debug, Clone, clap::Args)]
pub struct BackboneArgs {
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    /// Slices per backbone call (default 14 = one pooling group).
    #[arg(long, default_value_t = 14)]
    pub batch: usize,
    /// Backbone blocks to use, 1-based (the model must export `layer_<k>` for each).
    #[arg(long, value_delimiter = ',', default_value = "6,9,12")]
    pub layers: Vec<usize>,
    /// Random projection dimension d' (fused token width 3d').
    #[arg(long, default_value_t = 128)]
    pub proj_dim: usize,
    /// Cube edge S (multiple of 14): volumes are resized to S³, the tokens form a (S/14)³ grid.
    #[arg(long, default_value_t = 224)]
    pub size: usize,
    /// A token is void (excluded from graph links) when more than this fraction of its 14³ voxels is background.
    #[arg(long, default_value_t = 0.5)]
    pub void_threshold: f64,
    /// Margin in voxels around the brain's bounding box before resizing to the cube.
    #[arg(long, default_value_t = 2)]
    pub margin: usize,
    /// batch: one crop box for all volumes (the union of their brain boxes), so volumes registered to one
    /// atlas keep a common geometry (needs every volume on one grid; else exit 2); volume: each volume's
    /// own brain box (for volumes on different grids).
    #[arg(long, default_value = "batch", value_parser = ["batch", "volume"])]
    pub crop: String,
    /// Nyúl landmarks to use (JSON written by a score run as nyul.json or by extract --save-nyul); by
    /// default they are learned from the volumes (the healthy ones in `score`).
    #[arg(long, value_name = "FILE")]
    pub nyul: Option<std::path::PathBuf>,
}

impl BackboneArgs {
    /// The extraction configuration for these flags (validated).
    pub fn extract_config(
        &self,
        out: std::path::PathBuf,
        shard: crate::extract::Shard,
        threads: usize,
        seed: u64,
        common: &CommonArgs,
    ) -> Result<crate::extract::ExtractConfig> {
        let device = self.runtime.device()?;
        let cfg = crate::extract::ExtractConfig {
            out,
            shard,
            model: self.runtime.model.clone(),
            ort_lib: self.runtime.ort_lib.clone(),
            device,
            threads,
            layers: self.layers.clone(),
            proj_dim: self.proj_dim,
            seed,
            size: self.size,
            tokenizer: crate::tokens::TokenizerConfig {
                batch: self.batch,
                void_threshold: self.void_threshold,
                record_batches: false,
            },
            force: common.force,
            progress: !common.no_progress && !common.quiet,
            quiet: common.quiet,
            save_projection: None,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// The preprocessing configuration for these flags.
    pub fn preprocess(&self) -> crate::volume::PreprocessConfig {
        crate::volume::PreprocessConfig {
            size: self.size,
            margin: self.margin,
            crop: self.crop.parse().expect("clap checked the value"),
        }
    }
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Score(args) => score::run(*args),
        Command::Check(args) => check::run(args),
        Command::Extract(args) => extract::run(*args),
        Command::Eval(args) => eval::run(args),
        Command::Score2d(args) => score2d::run(*args),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_definition_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
