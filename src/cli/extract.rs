//! `mri-ad extract`: token files only (one shard per cluster job with `--shard i/N`).
use std::path::PathBuf;

use crate::extract::{ExtractConfig, RunOptions, Shard, VolumeSettings};
use crate::pipeline::cubes::{extract_folder, ExtractFolder};
use crate::volume::CubeSettings;
use crate::Result;

/// Arguments of `mri-ad extract`.
#[derive(Debug, clap::Args)]
pub struct ExtractArgs {
    /// Folder of input volumes: NIfTI (`.nii`, `.nii.gz`, `.hdr/.img`; any layout of data-manifest/),
    /// skull-stripped with a zero background, preprocessed here (RAS+, crop, S³, Nyúl). A folder of
    /// `<case>.npy` files is read instead as already preprocessed cubes float32 [S, S, S] in (z, y, x)
    /// order, values in [0, 1], background 0.
    #[arg(long, value_name = "DIR")]
    pub input: PathBuf,
    /// Folder of brain masks (mask > 0 is brain), one per volume of --input, paired by case id as
    /// data-manifest/ describes, each on its volume's grid: the mask replaces `voxel > 0` and voxels
    /// outside it are set to 0 (for volumes that are not skull-stripped, which are refused without it).
    #[arg(long, value_name = "DIR")]
    pub masks: Option<PathBuf>,
    /// Write the Nyúl landmarks in use to this JSON file (reusable with --nyul; with --shard, learn them
    /// once and pass them to every shard).
    #[arg(long, value_name = "FILE")]
    pub save_nyul: Option<PathBuf>,
    /// Folder for `<case>.tokens.npz` + `<case>.tokens.json`. Token files whose sidecar matches the current
    /// model, settings and input are reused; others are recomputed.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Process only shard i of N (1-based; cases sorted by id, every N-th case), e.g. `--shard 3/8`.
    #[arg(long, value_name = "i/N")]
    pub shard: Option<String>,
    /// ONNX Runtime intra-op threads (0 = one per physical core).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Seed of the Gaussian projection shared by all volumes.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[command(flatten)]
    pub volume: super::VolumeArgs,
    /// Prepare the volumes exactly as a healthy bank's were (`mri-ad bank`), for `score --bank`: the token
    /// settings (--layers, --proj-dim, --seed, --void-threshold, --size), the crop, the batch's world space
    /// and the Nyúl landmarks come from the bank instead of flags or the folder; --model must be the
    /// bank's model (by SHA-256).
    #[arg(long, value_name = "BANK", conflicts_with = "save_nyul")]
    pub bank: Option<PathBuf>,
    /// Also write the projection matrix [d', D] as .npy (for checks outside mri-ad).
    #[arg(long, value_name = "FILE")]
    pub save_projection: Option<PathBuf>,
    #[command(flatten)]
    pub common: super::CommonArgs,
}

impl ExtractArgs {
    /// The library configuration and the folder to extract.
    pub fn config(&self) -> Result<(ExtractConfig, ExtractFolder)> {
        let shard = match &self.shard {
            Some(s) => Shard::parse(s)?,
            None => Shard::ALL,
        };
        let runtime = self.volume.runtime.settings()?;
        let mut volume: VolumeSettings = self.volume.volume.settings()?;
        let mut cube: CubeSettings = self.volume.cube.settings()?;
        let mut seed = self.seed;
        let mut fixed = None;
        if let Some(dir) = &self.bank {
            let prep = crate::bank::Bank::open(dir)?.volume_preparation()?;
            self.refuse_flags_the_bank_sets(&prep)?;
            check_model(&runtime.model, &prep.model_sha256, dir)?;
            volume.layers = prep.layers.clone();
            volume.proj_dim = prep.proj_dim;
            volume.void_threshold = prep.void_threshold;
            cube.size = prep.size;
            cube.margin = prep.margin;
            cube.crop = prep.crop;
            seed = prep.seed;
            fixed = Some((prep.space, prep.nyul));
        }
        let mut cfg = volume.extract_config(
            &cube,
            &runtime,
            self.out.clone(),
            shard,
            (self.threads, seed),
            RunOptions {
                force: self.common.force,
                progress: self.common.progress(),
                report: self.common.reporter(),
            },
        )?;
        cfg.save_projection = self.save_projection.clone();
        let folder = ExtractFolder {
            input: self.input.clone(),
            masks: self.masks.clone(),
            nyul: volume.nyul.clone(),
            save_nyul: self.save_nyul.clone(),
            preprocess: cube.preprocess(),
            fixed,
        };
        Ok((cfg, folder))
    }

    /// With `--bank`, the preparation flags are the bank's: one given on the command line is refused
    /// (a different value would make tokens the bank refuses; the same one is redundant).
    fn refuse_flags_the_bank_sets(&self, prep: &crate::bank::VolumePreparation) -> Result<()> {
        let mut given: Vec<String> = self
            .volume
            .volume
            .flags()
            .into_iter()
            .chain(self.volume.cube.flags())
            .filter(|f| f != "--batch")
            .collect();
        if self.seed != prep.seed && self.seed != 0 {
            given.push("--seed".into());
        }
        if given.is_empty() {
            return Ok(());
        }
        Err(crate::Error::bad_argument(
            given.join(", "),
            "--bank sets the token settings, the crop, the world space and the Nyúl landmarks from the \
             bank: drop these flags",
        ))
    }
}

/// Refuses a model other than the bank's (by SHA-256), naming `--model`.
fn check_model(model: &std::path::Path, bank_sha256: &str, bank: &std::path::Path) -> Result<()> {
    let sha = crate::formats::hash::sha256_file(model)?;
    if sha == bank_sha256 {
        return Ok(());
    }
    Err(crate::Error::bad_argument(
        "--model",
        format!(
            "{} has SHA-256 {sha}, the bank {} was made with the model of SHA-256 {bank_sha256}: give \
             that model",
            model.display(),
            bank.display()
        ),
    ))
}

/// Runs `mri-ad extract`.
pub fn run(args: ExtractArgs) -> Result<()> {
    let (cfg, folder) = args.config()?;
    extract_folder(&cfg, &folder).map(|_| ())
}
