//! The backbone, tokenizer and Nyúl settings of volumes ([`VolumeSettings`], declared once through
//! [`crate::settings`]) and the [`ExtractConfig`] they make with the runtime and cube settings.

use std::path::PathBuf;

use super::{ExtractConfig, Shard};
use crate::tokens::TokenizerConfig;
use crate::Result;

use crate::settings::checks::{at_least_one, unit};

crate::settings::declare_settings! {
    /// The backbone, tokenizer and Nyúl settings of volumes: shared by `extract` and `score` (the cube's
    /// geometry is [`crate::volume::CubeSettings`]).
    pub struct VolumeSettings {
        /// Slices per backbone call (14 = one pooling group). Other values run other kernels, so the
        /// tokens change slightly (on CUDA up to about 2e-4, on the CPU about 3e-8; onnx/README.md); the
        /// value is recorded in each token sidecar, and cached token files are reused whatever it was.
        batch: usize = 14, check = at_least_one;
        /// Backbone blocks to use, 1-based (the model must export `layer_<k>` for each).
        layers: Vec<usize> = vec![6, 9, 12], check = crate::backbone::check_layers;
        /// Random projection dimension d' (fused token width 3d').
        proj_dim: usize = 128, check = at_least_one;
        /// A token is void when more than this fraction of its 14³ voxels is background: void tokens
        /// make no graph links and, unless --keep-void, are left out of the search (score 0).
        void_threshold: f64 = 0.5, check = unit;
        /// Nyúl landmarks to use (JSON written by a score run as nyul.json or by extract --save-nyul); by
        /// default they are learned from the volumes (the healthy ones in `score`).
        nyul: Option<PathBuf> = None;
    }
}

/// How an extraction run reports and what it may replace.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Accept an output folder that holds other files than token files.
    pub force: bool,
    pub progress: bool,
    pub report: crate::messages::Reporter,
}

impl VolumeSettings {
    /// The extraction configuration of these settings, for cubes of `cube`, run with `runtime` into `out`
    /// (validated).
    pub fn extract_config(
        &self,
        cube: &crate::volume::CubeSettings,
        runtime: &crate::backbone::RuntimeSettings,
        out: PathBuf,
        shard: Shard,
        (threads, seed): (usize, u64),
        options: RunOptions,
    ) -> Result<ExtractConfig> {
        let cfg = ExtractConfig {
            out,
            shard,
            model: runtime.model.clone(),
            ort_lib: runtime.ort_lib.clone(),
            device: runtime.device,
            threads,
            layers: self.layers.clone(),
            proj_dim: self.proj_dim,
            seed,
            size: cube.size,
            tokenizer: TokenizerConfig {
                batch: self.batch,
                void_threshold: self.void_threshold,
                record_batches: false,
            },
            force: options.force,
            progress: options.progress,
            report: options.report,
            save_projection: None,
            reuse_from: Vec::new(),
        };
        cfg.validate()?;
        Ok(cfg)
    }
}
