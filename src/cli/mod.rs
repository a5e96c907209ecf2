//! Command-line layer: clap definitions, converted to validated library configurations.
//!
//! Nothing outside `cli/` depends on clap. Each subcommand has its own file with an `Args` struct (clap
//! derive) and a `run` function that builds the library's plain `Config`, validates it and calls the library.

// The doc comments below are clap's --help text, written for the terminal ([L,M,D], <case>), not rustdoc.
#![allow(rustdoc::broken_intra_doc_links, rustdoc::invalid_html_tags)]

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

use self::settings::Given;
use crate::backbone::RuntimeSettings;
use crate::extract::VolumeSettings;
use crate::settings::Settings;
use crate::volume::CubeSettings;
use crate::{Error, Result};

pub mod bank;
pub mod check;
pub mod eval;
pub mod extract;
pub mod score;
pub mod score2d;
pub mod settings;
pub mod shard;

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
    /// Build a healthy reference bank from token files: the tokens and the distances among them, stored
    /// once, so that `score --bank BANK --tokens DIR` scores new cases against it computing only the pairs
    /// with a new case.
    #[command(allow_negative_numbers = true)]
    Bank(bank::BankArgs),
    /// Score one batch of token files in K blocks run as separate jobs (a cluster, a workflow): the same
    /// outputs as `score --tokens`, each job holding a few cases' rows at a time. Steps: plan, distances,
    /// links, graph, ratios, finish, join (README "Sharded scoring").
    Shard(shard::ShardArgs),
    /// Recompute the metrics of a finished `score` run against lesion label maps (writes eval.json).
    #[command(allow_negative_numbers = true)]
    Eval(eval::EvalArgs),
    /// Score a batch of 2D images (PNG/JPEG/TIFF; plain folder with optional masks, or the MVTec AD layout):
    /// DINOv2 tokens of four blocks, LNAMD, MuSc or CoDeGraph, RsCIN image scores, maps, overlays and,
    /// with ground truth, image and pixel metrics (AUROC, AP, F1-max, AUPRO).
    #[command(allow_negative_numbers = true)]
    Score2d(Box<score2d::Score2dArgs>),
}

impl Cli {
    /// Parses the process's arguments; exits (code 2) with clap's message on a malformed command line.
    pub fn from_command_line() -> Self {
        Cli::parse()
    }
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
    /// Write into a non-empty output folder, replacing the files this command writes (other files are
    /// kept). Into a run folder that holds the finished results of other inputs or settings (`score`,
    /// `score2d`): those results are removed first (a token cache is kept and reused where it matches).
    #[arg(long)]
    pub force: bool,
}

impl CommonArgs {
    /// Whether progress bars are shown.
    pub fn progress(&self) -> bool {
        !self.no_progress && !self.quiet
    }

    /// The reporter of a run: its messages on stderr, none with `--quiet`.
    pub fn reporter(&self) -> crate::messages::Reporter {
        crate::messages::Reporter::new(self.quiet, |line| eprintln!("{line}"))
    }
}

/// The volume flags of `extract` and `score`: the model and where it runs, the tokenizer and Nyúl, the
/// cube ([`RuntimeSettings`], [`VolumeSettings`], [`CubeSettings`]).
#[derive(Debug, Clone, clap::Args)]
pub struct VolumeArgs {
    #[command(flatten)]
    pub runtime: Given<RuntimeSettings>,
    #[command(flatten)]
    pub volume: Given<VolumeSettings>,
    #[command(flatten)]
    pub cube: Given<CubeSettings>,
}

/// The input folders of `score` and `check` on volumes.
#[derive(Debug, Clone, clap::Args)]
pub struct InputArgs {
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
}

/// The settings of `score` on volumes only: ignored with `--tokens`, refused by `score2d`.
pub const VOLUME_SETTINGS: [&[crate::settings::Setting]; 4] = [
    RuntimeSettings::SETTINGS,
    VolumeSettings::SETTINGS,
    CubeSettings::SETTINGS,
    crate::eval::MapSettings::SETTINGS,
];

/// A `--config` TOML file (keys = flag names without the dashes), read once; each settings struct takes
/// its keys out of it ([`ConfigFile::take`]), so what is left at the end is unknown.
#[derive(Debug, Default)]
pub struct ConfigFile {
    pub path: Option<PathBuf>,
    table: toml::Table,
}

impl ConfigFile {
    /// Reads `path` (none: an empty file). A file that is not TOML is an error naming it.
    pub fn read(path: Option<&Path>) -> Result<Self> {
        let Some(path) = path else {
            return Ok(ConfigFile::default());
        };
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let table = toml::from_str(&text)
            .map_err(|e| Error::bad_input(path, format!("invalid --config file: {e}")))?;
        Ok(ConfigFile {
            path: Some(path.to_path_buf()),
            table,
        })
    }

    /// The settings `S`: defaults, then this file's keys of `S` (taken out), then the flags `given`.
    pub fn take<S: Settings>(&mut self, given: &Given<S>) -> Result<S> {
        S::from_layers(&mut self.table, self.path.as_deref(), &given.values)
    }

    /// Takes out the keys of the settings `of` without using them; returns them, sorted.
    pub fn drop_keys(&mut self, of: &[&[crate::settings::Setting]]) -> Vec<String> {
        let keys: Vec<String> = self
            .table
            .keys()
            .filter(|k| of.iter().flat_map(|s| s.iter()).any(|s| &s.key() == *k))
            .cloned()
            .collect();
        keys.iter().for_each(|k| {
            self.table.remove(k);
        });
        keys
    }

    /// Refuses the keys left: none of the settings in `known` (every key a file of this command may hold).
    pub fn refuse_unknown(&self, known: &[&[crate::settings::Setting]]) -> Result<()> {
        let (Some(path), Some(key)) = (&self.path, self.table.keys().next()) else {
            return Ok(());
        };
        let mut keys: Vec<String> = known
            .iter()
            .flat_map(|s| s.iter().map(|s| s.key()))
            .collect();
        keys.sort();
        Err(Error::bad_input(
            path,
            format!(
                "invalid --config file: unknown key `{key}`; the keys are the flag names without the dashes: {}",
                keys.join(", ")
            ),
        ))
    }
}

impl<S: Settings> Given<S> {
    /// The settings of the flags given alone (a command without `--config`).
    pub fn settings(&self) -> Result<S> {
        ConfigFile::default().take(self)
    }
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Score(args) => score::run(*args),
        Command::Check(args) => check::run(args),
        Command::Extract(args) => extract::run(*args),
        Command::Eval(args) => eval::run(args),
        Command::Bank(args) => bank::run(args),
        Command::Shard(args) => shard::run(args),
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

    fn score_args(argv: &[&str]) -> super::score::ScoreArgs {
        use clap::Parser;
        let cli = super::Cli::parse_from(
            ["mri-ad", "score", "--out", "o", "--query", "q"]
                .iter()
                .chain(argv),
        );
        match cli.command {
            super::Command::Score(a) => *a,
            _ => unreachable!(),
        }
    }

    #[test]
    fn every_setting_is_a_flag_with_its_default_in_the_help() {
        use clap::CommandFactory;
        let mut cmd = super::Cli::command();
        let score = cmd.find_subcommand_mut("score").unwrap();
        let help = |long: &str| {
            let arg = score.get_arguments().find(|a| a.get_long() == Some(long));
            arg.unwrap_or_else(|| panic!("no --{long}"))
                .get_help()
                .unwrap()
                .to_string()
        };
        assert!(
            help("alpha-musc").ends_with("[default: 0.3]"),
            "{}",
            help("alpha-musc")
        );
        assert!(help("resolution-percentile").ends_with("[default: 25]"));
        assert!(help("layers").ends_with("[default: 6,9,12]"));
        assert!(help("crop").ends_with("[default: batch]"));
        assert!(help("upsample").ends_with("[default: centres]"));
        assert!(!help("keep-void").contains("[default"), "a switch has none");
        assert!(!help("nyul").contains("[default"), "an unset path has none");
    }

    #[test]
    fn explicit_flags_beat_the_config_file_which_beats_the_defaults() {
        let args = score_args(&["--size", "168", "--model", "m.onnx", "--tukey-k", "2"]);
        assert_eq!(args.volume.cube.flags(), ["--size"]);
        assert!(args.volume.volume.flags().is_empty());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "size = 112\nlayers = [3, 6]\ncrop = \"volume\"\nmodel = \"other.onnx\"\nupsample = \"corners\"\ntukey-k = 5.0\nbeta = 0.5",
        )
        .unwrap();
        let mut file = super::ConfigFile::read(Some(&path)).unwrap();
        let v: super::VolumeSettings = file.take(&args.volume.volume).unwrap();
        let c: super::CubeSettings = file.take(&args.volume.cube).unwrap();
        let r: super::RuntimeSettings = file.take(&args.volume.runtime).unwrap();
        let m: crate::eval::MapSettings = file.take(&args.maps).unwrap();
        let s: crate::score::ScoreConfig = file.take(&args.scoring.given).unwrap();
        assert_eq!(c.size, 168, "flag wins");
        assert_eq!(r.model, std::path::Path::new("m.onnx"), "flag wins");
        assert_eq!(s.tukey_k, 2.0, "flag wins");
        assert_eq!(v.layers, [3, 6], "file beats the default");
        assert_eq!(c.crop, crate::volume::CropMode::Volume);
        assert_eq!(m.upsample, crate::eval::Upsample::Corners);
        assert_eq!(s.beta, 0.5, "file beats the default");
        assert_eq!(v.proj_dim, 128, "default kept");
        file.refuse_unknown(&[]).unwrap();
        std::fs::write(&path, "crop = \"none\"").unwrap();
        let err = super::ConfigFile::read(Some(&path))
            .unwrap()
            .take::<super::CubeSettings>(&Default::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("c.toml") && err.contains("none"), "{err}");
    }

    #[test]
    fn every_choice_word_reads_back_as_its_value() {
        use crate::settings::{Kind, Settings};
        fn words<S: Settings>() {
            for s in S::SETTINGS {
                if let Kind::Choice(words) = s.kind {
                    for w in words {
                        let t: toml::Table = [(s.key(), toml::Value::String(w.to_string()))]
                            .into_iter()
                            .collect();
                        let v: S = toml::Value::Table(t)
                            .try_into()
                            .unwrap_or_else(|e| panic!("{} = {w}: {e}", s.key()));
                        assert_eq!(v.to_table()[&s.key()].as_str(), Some(*w));
                    }
                }
            }
        }
        words::<crate::score::ScoreConfig>();
        words::<super::VolumeSettings>();
        words::<super::CubeSettings>();
        words::<super::RuntimeSettings>();
        words::<crate::eval::MapSettings>();
    }
}
