//! Command-line layer: clap definitions, converted to validated library configurations.
//!
//! Nothing outside `cli/` depends on clap. Each subcommand has its own file with an `Args` struct (clap
//! derive) and a `run` function that builds the library's plain `Config`, validates it and calls the library.

// The doc comments below are clap's --help text, written for the terminal ([L,M,D], <case>), not rustdoc.
#![allow(rustdoc::broken_intra_doc_links, rustdoc::invalid_html_tags)]

use clap::parser::ValueSource;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

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

impl Cli {
    /// Parses `args` (the program name first) like [`Parser::parse_from`], and also records which backbone
    /// and preprocessing flags of `score` were given explicitly, which clap's derive does not keep: with
    /// `--tokens` they would have no effect, and `score` refuses them instead of ignoring them silently.
    /// Exits (code 2) with clap's message on a malformed command line.
    pub fn parse_recording<I, T>(args: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let matches = Cli::command().get_matches_from(args);
        let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
        if let (Command::Score(score), Some(("score", m))) =
            (&mut cli.command, matches.subcommand())
        {
            score.given_volume_flags = explicit_flags::<BackboneArgs>(m);
            score
                .given_volume_flags
                .extend(explicit_flags::<MapArgs>(m));
        }
        cli
    }
}

/// The flags of the argument group `A` that were given on the command line, as `--name`.
fn explicit_flags<A: Args>(matches: &clap::ArgMatches) -> Vec<String> {
    A::augment_args(clap::Command::new("group"))
        .get_arguments()
        .filter(|arg| matches.value_source(arg.get_id().as_str()) == Some(ValueSource::CommandLine))
        .map(|arg| format!("--{}", arg.get_long().unwrap_or(arg.get_id().as_str())))
        .collect()
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
    /// The reporter of a run: its messages on stderr, none with `--quiet`.
    pub fn reporter(&self) -> crate::messages::Reporter {
        crate::messages::Reporter::new(self.quiet, |line| eprintln!("{line}"))
    }
}

/// The model and where it runs: shared by `extract`, `score` and `score2d`.
#[derive(Debug, Clone, clap::Args)]
pub struct RuntimeArgs {
    /// The ONNX model (contract in onnx/README.md).
    #[arg(long, value_name = "FILE", default_value = "onnx/dinov2_vits14.onnx")]
    pub model: std::path::PathBuf,
    /// The ONNX Runtime shared library (libonnxruntime.so.*, from the onnxruntime or onnxruntime-gpu wheel);
    /// default: the ORT_DYLIB_PATH environment variable.
    #[arg(long, value_name = "FILE")]
    pub ort_lib: Option<std::path::PathBuf>,
    /// auto: CUDA if the CUDA execution provider really registers, else CPU with a notice; cuda: fail
    /// (exit 2) with the provider's error when it cannot run; cpu. CUDA and CPU features differ slightly
    /// (up to about 4e-4; onnx/README.md). The provider that ran is recorded in each token file's sidecar
    /// (and in summary.json by `score` and `score2d`); a run whose cached token files mix providers prints
    /// a notice.
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
    /// Slices per backbone call (default 14 = one pooling group). Other values run other kernels, so the
    /// tokens change slightly (on CUDA up to about 2e-4, on the CPU about 3e-8; onnx/README.md); the value
    /// is recorded in each token sidecar, and cached token files are reused whatever it was.
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
    /// A token is void when more than this fraction of its 14³ voxels is background: void tokens make no
    /// graph links and, unless --keep-void, are left out of the search (score 0).
    #[arg(long, default_value_t = 0.5)]
    pub void_threshold: f64,
    /// Margin in voxels around the brain's bounding box before resizing to the cube (voxels of the batch's
    /// reference grid with --crop batch).
    #[arg(long, default_value_t = 2)]
    pub margin: usize,
    /// batch: one crop box for all volumes (the union of their brain boxes in world space), so volumes
    /// registered to one atlas keep a common geometry whatever their storage orientation, voxel size or
    /// field of view (volumes on other grids than the batch's reference are resampled; volumes evidently
    /// not registered are refused with exit 2); volume: each volume's own brain box (for volumes that are
    /// not registered to one atlas).
    #[arg(long, default_value = "batch", value_parser = ["batch", "volume"])]
    pub crop: String,
    /// Nyúl landmarks to use (JSON written by a score run as nyul.json or by extract --save-nyul); by
    /// default they are learned from the volumes (the healthy ones in `score`).
    #[arg(long, value_name = "FILE")]
    pub nyul: Option<std::path::PathBuf>,
}

/// How `score` on volumes turns token scores into maps (not used by `extract`).
#[derive(Debug, Clone, clap::Args)]
pub struct MapArgs {
    /// Where each token's score is placed when the token grid is upsampled trilinearly to the voxels:
    /// centres = at the centre of the 14³ block the token describes; corners = align-corners, ALGORITHM.md
    /// §7.2 as written, which puts the outer tokens on the cube's faces (up to 6.5 voxels off at 224³).
    /// Used for the maps, the masks and every voxel metric.
    #[arg(long, default_value = "centres", value_parser = crate::eval::Upsample::NAMES)]
    pub upsample: String,
}

impl MapArgs {
    /// The parsed `--upsample`.
    pub fn upsample(&self) -> crate::eval::Upsample {
        self.upsample.parse().expect("clap checked the value")
    }
}

/// The backbone, preprocessing and map keys that a `--config` file of `score` may hold: the long names of
/// the [`BackboneArgs`] and [`MapArgs`] flags. Paths are taken as given, relative to the working directory
/// like the flags.
#[derive(Debug, Default, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct BackboneFile {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<std::path::PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ort_lib: Option<std::path::PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub batch: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layers: Option<Vec<usize>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proj_dim: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub void_threshold: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub margin: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crop: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nyul: Option<std::path::PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upsample: Option<String>,
}

impl BackboneFile {
    /// Every key, as in the file.
    pub const KEYS: [&'static str; 12] = [
        "model",
        "ort-lib",
        "device",
        "batch",
        "layers",
        "proj-dim",
        "size",
        "void-threshold",
        "margin",
        "crop",
        "nyul",
        "upsample",
    ];

    /// The keys this file sets, sorted.
    pub fn keys_set(&self) -> Vec<String> {
        self.to_table().keys().cloned().collect()
    }

    /// The set keys as a TOML table.
    pub fn to_table(&self) -> toml::Table {
        crate::run::outputs::toml_table(self).expect("a struct of plain values is a table")
    }
}

impl BackboneArgs {
    /// Takes each value of a `--config` file (`path`) whose flag was not given on the command line
    /// (`given`: the `--name`s given), so the precedence is defaults < file < flags.
    pub fn apply_file(
        &mut self,
        maps: &mut MapArgs,
        file: &BackboneFile,
        given: &[String],
        path: &std::path::Path,
    ) -> Result<()> {
        let take = |key: &str| !given.iter().any(|g| g == &format!("--{key}"));
        let check = |key: &str, v: &str, allowed: &[&str]| {
            if allowed.contains(&v) {
                Ok(())
            } else {
                Err(crate::Error::bad_input(
                    path,
                    format!("invalid --config file: {key} = {v:?}, expected one of {allowed:?}"),
                ))
            }
        };
        macro_rules! set {
            ($($key:literal => $target:expr, $value:expr);* $(;)?) => {
                $( if let (Some(v), true) = ($value.clone(), take($key)) { $target = v; } )*
            };
        }
        if let Some(d) = &file.device {
            check("device", d, &["auto", "cpu", "cuda"])?;
        }
        if let Some(c) = &file.crop {
            check("crop", c, &["batch", "volume"])?;
        }
        if let Some(u) = &file.upsample {
            check("upsample", u, &crate::eval::Upsample::NAMES)?;
        }
        set!(
            "model" => self.runtime.model, file.model;
            "device" => self.runtime.device, file.device;
            "batch" => self.batch, file.batch;
            "layers" => self.layers, file.layers;
            "proj-dim" => self.proj_dim, file.proj_dim;
            "size" => self.size, file.size;
            "void-threshold" => self.void_threshold, file.void_threshold;
            "margin" => self.margin, file.margin;
            "crop" => self.crop, file.crop;
            "upsample" => maps.upsample, file.upsample;
        );
        if let (Some(v), true) = (&file.ort_lib, take("ort-lib")) {
            self.runtime.ort_lib = Some(v.clone());
        }
        if let (Some(v), true) = (&file.nyul, take("nyul")) {
            self.nyul = Some(v.clone());
        }
        Ok(())
    }

    /// The effective values, with those of `maps`, as `--config` keys (written into the run's
    /// `config.toml`).
    pub fn to_file(&self, maps: &MapArgs) -> BackboneFile {
        BackboneFile {
            model: Some(self.runtime.model.clone()),
            ort_lib: self.runtime.ort_lib.clone(),
            device: Some(self.runtime.device.clone()),
            batch: Some(self.batch),
            layers: Some(self.layers.clone()),
            proj_dim: Some(self.proj_dim),
            size: Some(self.size),
            void_threshold: Some(self.void_threshold),
            margin: Some(self.margin),
            crop: Some(self.crop.clone()),
            nyul: self.nyul.clone(),
            upsample: Some(maps.upsample.clone()),
        }
    }

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
            report: common.reporter(),
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

    fn score_args(argv: &[&str]) -> super::score::ScoreArgs {
        let cli = super::Cli::parse_recording(
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
    fn config_keys_are_the_backbone_flags() {
        use clap::Args;
        let longs: Vec<String> = super::BackboneArgs::augment_args(clap::Command::new("x"))
            .get_arguments()
            .chain(super::MapArgs::augment_args(clap::Command::new("y")).get_arguments())
            .map(|a| a.get_long().unwrap().to_string())
            .collect();
        assert_eq!(longs, super::BackboneFile::KEYS);
        // Every key round-trips through the file format.
        let args = score_args(&["--ort-lib", "l.so", "--nyul", "n.json"]);
        let file = args.backbone.to_file(&args.maps);
        let mut keys = super::BackboneFile::KEYS.to_vec();
        keys.sort_unstable();
        assert_eq!(file.keys_set(), keys, "a table keeps its keys sorted");
        let back: super::BackboneFile = toml::from_str(&toml::to_string(&file).unwrap()).unwrap();
        assert_eq!(back, file);
    }

    #[test]
    fn explicit_flags_beat_the_config_file_which_beats_the_defaults() {
        let args = score_args(&["--size", "168", "--model", "m.onnx"]);
        assert_eq!(args.given_volume_flags, ["--model", "--size"]);
        let file: super::BackboneFile = toml::from_str(
            "size = 112\nlayers = [3, 6]\ncrop = \"volume\"\nmodel = \"other.onnx\"\nupsample = \"corners\"",
        )
        .unwrap();
        let mut b = args.backbone.clone();
        let mut maps = args.maps.clone();
        assert_eq!(maps.upsample(), crate::eval::Upsample::Centres, "default");
        b.apply_file(
            &mut maps,
            &file,
            &args.given_volume_flags,
            std::path::Path::new("c.toml"),
        )
        .unwrap();
        assert_eq!(b.size, 168, "flag wins");
        assert_eq!(b.runtime.model, std::path::Path::new("m.onnx"), "flag wins");
        assert_eq!(b.layers, [3, 6], "file beats the default");
        assert_eq!(b.crop, "volume");
        assert_eq!(
            maps.upsample(),
            crate::eval::Upsample::Corners,
            "file beats the default"
        );
        assert_eq!(b.proj_dim, 128, "default kept");
        let bad: super::BackboneFile = toml::from_str("crop = \"none\"").unwrap();
        let err = b
            .apply_file(&mut maps, &bad, &[], std::path::Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("c.toml") && err.contains("crop"), "{err}");
        // Defaults alone record nothing; the map flags are recorded like the backbone flags.
        assert!(score_args(&[]).given_volume_flags.is_empty());
        assert_eq!(
            score_args(&["--upsample", "corners"]).given_volume_flags,
            ["--upsample"]
        );
    }
}
