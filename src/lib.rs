//! # mri-ad
//!
//! Zero-shot anomaly detection and segmentation for 3D brain MRI (and 2D images) without training and
//! without labels. Every case of a batch is scored against all the *other* cases (MuSc mutual scoring);
//! CoDeGraph first finds the cases that share a recurring anomaly and removes exactly those tokens from the
//! reference set, so recurring lesions cannot vouch for each other. The method is specified in
//! `shared/docs/ALGORITHM.md`; the software design in `shared/docs/DESIGN.md`.
//!
//! ## Data flow
//!
//! ```text
//! token files ──formats::tokens──▶ TokenSet per case: tokens [L, M, D] f32, valid [M], grid (gz, gy, gx)
//!   ──knn──▶ per view: distance of every token to its nearest token in every other case (+ which token)
//!   ──score::codegraph──▶ suspicious links ▶ case graph ▶ Leiden-CPM ▶ outlier communities ▶ excluded tokens
//!   ──score::msm──▶ final token scores [M] per case (top-k mean over the other cases, averaged over views)
//!   ──report──▶ scores.csv, token_scores/<case>.npy, graph.json, summary.json
//! ```
//!
//! Everything from `knn` on is dimension-agnostic: a 3D volume is a token set on a (16, 16, 16) grid, a 2D
//! image one on a (1, 37, 37) grid. [`pipeline`] composes the stages for volumes (`mri-ad score`),
//! [`pipeline2d`] for images (`mri-ad score2d`: DINOv2 tokens of four blocks, LNAMD views, RsCIN image
//! scores; `docs/score2d.md`).
//!
// Index loops read more clearly than iterator chains in the numeric kernels.
#![allow(clippy::needless_range_loop)]

pub mod backbone;
pub mod bank;
pub mod cli;
pub mod error;
pub mod eval;
pub mod extract;
pub mod formats;
pub mod knn;
pub mod messages;
pub mod parallel;
pub mod pipeline;
pub mod pipeline2d;
pub mod progress;
pub mod report;
pub mod run;
pub mod score;
pub mod settings;
pub mod shard;
pub mod tokens;
pub mod tokenset;
pub mod volume;

pub use error::{Error, Result};
pub use tokenset::TokenSet;
