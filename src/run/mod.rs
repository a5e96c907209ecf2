//! The run layer: what every kind of run (`score` on volumes, `score --tokens`, `score2d`) shares about
//! its output folder.
//!
//! * [`folder`]: the run-folder protocol: the marker `.mri-ad-run` and the request it records, the
//!   `--force` rules, the outputs a replacing run removes.
//! * [`lock`]: the lock of an output folder (`.mri-ad-lock`): one run writes a folder at a time.
//! * [`outdir`]: the rule for a plain output folder (empty, or `--force`).
//! * [`outputs`]: the writers of the outputs every run kind writes (`token_scores/`, `graph.json`,
//!   `config.toml`) and the settings table they come from.
//! * [`summary`]: `summary.json` of every run kind, one type.

pub mod folder;
pub mod lock;
pub mod outdir;
pub mod outputs;
pub mod summary;
