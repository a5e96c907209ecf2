//! `mri-ad extract`: token files only (one shard per cluster job with `--shard i/N`).
use std::path::PathBuf;

use crate::backbone::ort::Device;
use crate::extract::{ExtractConfig, Shard};
use crate::io::cubes::{holds_npy_cubes, NiftiCubes, NpyCubes};
use crate::progress::Progress;
use crate::tokens::TokenizerConfig;
use crate::volume::nyul::NyulModel;
use crate::volume::PreprocessConfig;
use crate::{Error, Result};

/// Arguments of `mri-ad extract`.
#[derive(Debug, clap::Args)]
pub struct ExtractArgs {
    /// Folder of input volumes: NIfTI (`.nii`, `.nii.gz`, `.hdr/.img`; any layout of data-manifest/),
    /// skull-stripped with a zero background, preprocessed here (RAS+, crop, S³, Nyúl). A folder of
    /// `<case>.npy` files is read instead as already preprocessed cubes float32 [S, S, S] in (z, y, x)
    /// order, values in [0, 1], background 0.
    #[arg(long)]
    pub input: PathBuf,
    /// Nyúl landmarks to use (a JSON file written by --save-nyul); by default they are learned from the
    /// volumes of --input. With --shard, learn them once and pass them to every shard.
    #[arg(long, value_name = "FILE")]
    pub nyul: Option<PathBuf>,
    /// Write the Nyúl landmarks in use to this JSON file (reusable with --nyul).
    #[arg(long, value_name = "FILE")]
    pub save_nyul: Option<PathBuf>,
    /// Margin in voxels around the brain's bounding box before resizing to the cube.
    #[arg(long, default_value_t = 2)]
    pub margin: usize,
    /// Folder for `<case>.tokens.npz` + `<case>.tokens.json`. Token files whose sidecar matches the current
    /// model, settings and input are reused; others are recomputed.
    #[arg(long)]
    pub out: PathBuf,
    /// Process only shard i of N (1-based; cases sorted by id, every N-th case), e.g. `--shard 3/8`.
    #[arg(long, value_name = "i/N")]
    pub shard: Option<String>,
    /// The ONNX model (contract in onnx/README.md).
    #[arg(long, default_value = "onnx/dinov2_vits14.onnx")]
    pub model: PathBuf,
    /// The ONNX Runtime shared library (libonnxruntime.so.*, from the onnxruntime or onnxruntime-gpu wheel);
    /// default: the ORT_DYLIB_PATH environment variable.
    #[arg(long)]
    pub ort_lib: Option<PathBuf>,
    /// auto: CUDA if the CUDA execution provider really registers, else CPU with a notice; cuda: fail
    /// (exit 2) with the provider's error when it cannot run; cpu.
    #[arg(long, default_value = "auto", value_parser = ["auto", "cpu", "cuda"])]
    pub device: String,
    /// ONNX Runtime intra-op threads (0 = one per physical core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Slices per backbone call (default 14 = one pooling group).
    #[arg(long, default_value_t = 14)]
    pub batch: usize,
    /// Backbone blocks to use, 1-based (the model must export `layer_<k>` for each).
    #[arg(long, value_delimiter = ',', default_value = "6,9,12")]
    pub layers: Vec<usize>,
    /// Random projection dimension d' (fused token width 3d').
    #[arg(long, default_value_t = 128)]
    pub proj_dim: usize,
    /// Seed of the Gaussian projection shared by all volumes.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Cube edge S (multiple of 14); the tokens form a (S/14)³ grid.
    #[arg(long, default_value_t = 224)]
    pub size: usize,
    /// A token is void (excluded from graph links) when more than this fraction of its 14³ voxels is background.
    #[arg(long, default_value_t = 0.5)]
    pub void_threshold: f64,
    /// Also write the projection matrix [d', D] as .npy (for checks outside mri-ad).
    #[arg(long)]
    pub save_projection: Option<PathBuf>,
    #[command(flatten)]
    pub common: super::CommonArgs,
}

impl ExtractArgs {
    /// The library configuration.
    pub fn config(&self) -> Result<ExtractConfig> {
        let device: Device = self
            .device
            .parse()
            .map_err(|e: String| Error::bad_argument("--device", e))?;
        let shard = match &self.shard {
            Some(s) => Shard::parse(s)?,
            None => Shard::ALL,
        };
        let cfg = ExtractConfig {
            out: self.out.clone(),
            shard,
            model: self.model.clone(),
            ort_lib: self.ort_lib.clone(),
            device,
            threads: self.threads,
            layers: self.layers.clone(),
            proj_dim: self.proj_dim,
            seed: self.seed,
            size: self.size,
            tokenizer: TokenizerConfig {
                batch: self.batch,
                void_threshold: self.void_threshold,
                record_batches: false,
            },
            force: self.common.force,
            progress: !self.common.no_progress && !self.common.quiet,
            quiet: self.common.quiet,
            save_projection: self.save_projection.clone(),
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

/// Runs `mri-ad extract`.
pub fn run(args: ExtractArgs) -> Result<()> {
    let cfg = args.config()?;
    if holds_npy_cubes(&args.input) {
        if args.nyul.is_some() || args.save_nyul.is_some() {
            return Err(Error::bad_argument(
                "--nyul",
                format!(
                    "{} holds preprocessed .npy cubes, which are not standardised again",
                    args.input.display()
                ),
            ));
        }
        return crate::extract::run(&cfg, &NpyCubes::new(&args.input)).map(|_| ());
    }
    let nyul = args.nyul.as_deref().map(NyulModel::load).transpose()?;
    let progress = Progress::new(!args.common.no_progress && !args.common.quiet);
    let source = NiftiCubes::new(
        &args.input,
        PreprocessConfig {
            size: args.size,
            margin: args.margin,
        },
        nyul,
        &progress,
    )?;
    if let Some(path) = &args.save_nyul {
        source.nyul().save(path)?;
    }
    crate::extract::run(&cfg, &source).map(|_| ())
}
