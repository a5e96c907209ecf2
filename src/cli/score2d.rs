//! `mri-ad score2d`: the 2D path on an image folder ([`crate::pipeline2d`]).
//!
//! Precedence of the scoring settings as in `score`: the spec's defaults, then `--config FILE`, then the
//! flags. The image-specific flags (`--size`, `--layers`, `--lnamd-degrees`, `--rscin-windows`, ...) are
//! flags only, and a `--config` file holding the volume keys of `score` (size, layers, model, ...) is
//! refused rather than half-applied; the effective values are written to `summary.json`.

use std::path::PathBuf;

use crate::pipeline2d::{self, Score2dConfig, VoidBackground};
use crate::settings::Settings;
use crate::Result;

/// Arguments of `mri-ad score2d`.
#[derive(Debug, clap::Args)]
pub struct Score2dArgs {
    /// Images: a plain folder of PNG/JPEG/TIFF files (grey or RGB, 8- or 16-bit; alpha ignored), or an MVTec
    /// AD class folder (<class>/test/<defect>/*.png with <class>/ground_truth/<defect>/*_mask.png, `good` =
    /// normal), or the MVTec AD root (every class scored as its own batch, into --out/<class>/).
    #[arg(long, value_name = "DIR")]
    pub images: PathBuf,
    /// Masks for a plain folder: `<stem>.<ext>` or `<stem>_mask.<ext>` per image, positive where > 0, of the
    /// image's own size (another size is an error). Images without a mask are normal. Enables the metrics.
    #[arg(long, value_name = "DIR")]
    pub masks: Option<PathBuf>,
    /// Output folder (created). The same command again rewrites its results; a run folder with the results
    /// of other images or settings, or any other non-empty folder, needs --force.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    #[command(flatten)]
    pub runtime: super::settings::Given<crate::backbone::RuntimeSettings>,
    /// Model input edge S (multiple of 14): every image is resized to S×S (PIL bilinear, antialiased), the
    /// token grid is (S/14)×(S/14).
    #[arg(long, default_value_t = 518)]
    pub size: usize,
    /// Backbone blocks to use, 1-based (the model must export `layer_<k>` for each); 3,6,9,12 for ViT-S,
    /// 6,12,18,24 for ViT-L.
    #[arg(long, value_delimiter = ',', default_value = "3,6,9,12")]
    pub layers: Vec<usize>,
    /// LNAMD aggregation degrees r (odd): one view per block and degree (zero-padded r×r box mean with
    /// divisor r², ALGORITHM.md §4.1). With CoDeGraph the r = 1 views feed the graph stage unless
    /// --graph-views picks others (view index = block index · (number of degrees) + degree index).
    #[arg(long, value_delimiter = ',', default_value = "1,3,5")]
    pub lnamd_degrees: Vec<usize>,
    /// RsCIN window sizes κ (image scores refined with the CLS embeddings; ALGORITHM.md §7.1): 1,2,3 for
    /// MVTec AD and most sets, 1,8,9 for VisA.
    #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
    pub rscin_windows: Vec<usize>,
    /// Images per backbone call (speed and memory only).
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Exact-zero background as void, as `score` does on volumes: a token whose 14×14 patch of the
    /// resized image is more than half exact-zero pixels (every channel 0) is left out of the search (score
    /// 0) and creates no graph links, nor do tokens within --link-margin of it; otherwise the brain's
    /// outline on skull-stripped MRI slices makes normal images look like recurring anomalies
    /// (docs/score2d.md). auto: on when every image of the batch has an exact-zero border (a notice says
    /// so), off otherwise (photographs).
    #[arg(long, default_value = "auto", value_parser = VoidBackground::NAMES)]
    pub void_background: String,
    #[command(flatten)]
    pub scoring: super::score::ScoringArgs,
    #[command(flatten)]
    pub common: super::CommonArgs,
}

impl Score2dArgs {
    /// The validated configuration.
    pub fn to_config(&self) -> Result<Score2dConfig> {
        let mut file = super::ConfigFile::read(self.scoring.config.as_deref())?;
        let score = file.take(&self.scoring.given)?;
        super::score::refuse_radius_without_window(&self.scoring, &score)?;
        let runtime = self.runtime.settings()?;
        let volume_keys = file.drop_keys(&super::VOLUME_SETTINGS);
        if let (Some(path), false) = (&file.path, volume_keys.is_empty()) {
            return Err(crate::Error::bad_input(
                path,
                format!(
                    "{} {} {} of `score` on volumes; score2d reads only the scoring keys from --config \
                     (give its model, size and layers as flags)",
                    if volume_keys.len() == 1 { "the key" } else { "the keys" },
                    volume_keys.join(", "),
                    if volume_keys.len() == 1 { "is a setting" } else { "are settings" },
                ),
            ));
        }
        file.refuse_unknown(&[crate::score::ScoreConfig::SETTINGS])?;
        let cfg = Score2dConfig {
            images: self.images.clone(),
            masks: self.masks.clone(),
            out: self.out.clone(),
            model: runtime.model,
            ort_lib: runtime.ort_lib,
            device: runtime.device,
            batch: self.batch,
            layers: self.layers.clone(),
            size: self.size,
            degrees: self.lnamd_degrees.clone(),
            rscin_windows: self.rscin_windows.clone(),
            void_background: self
                .void_background
                .parse()
                .map_err(|e: String| crate::Error::bad_argument("--void-background", e))?,
            score,
            force: self.common.force,
            report: self.common.reporter(),
            progress: self.common.progress(),
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

/// Runs `mri-ad score2d`.
pub fn run(args: Score2dArgs) -> Result<()> {
    let cfg = args.to_config()?;
    pipeline2d::run(&cfg).map(|_| ())
}
