//! `mri-ad score` (in progress).
use crate::Result;

/// Arguments of `mri-ad score`.
#[derive(Debug, clap::Args)]
pub struct ScoreArgs {}

/// Runs `mri-ad score`.
pub fn run(_args: ScoreArgs) -> Result<()> {
    Err(crate::Error::bad_argument("score", "not implemented yet"))
}
