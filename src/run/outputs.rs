//! The outputs every run kind writes: `token_scores/<case>.npy`, `graph.json` (CoDeGraph),
//! `scores.csv`, `config.toml` (the effective settings, itself a `--config` file), the batch plots,
//! `summary.json` and `index.html` ([`BatchOutputs`]), with the scoring part of `summary.json`.

use std::path::Path;
use std::time::Instant;

use serde_json::json;

use super::summary::{DistanceKernel, ScoringSummary, Summary, Timing, VoidTokens};
use crate::formats::atomic;
use crate::report::{self, ScoreRow};
use crate::score::{ScoreConfig, ScoreResult};
use crate::{Error, Result};

/// A struct of settings as a TOML table (the form of a `--config` file).
pub fn toml_table(settings: &impl serde::Serialize) -> Result<toml::Table> {
    match toml::Value::try_from(settings).map_err(Error::internal)? {
        toml::Value::Table(t) => Ok(t),
        other => Err(Error::internal(format!(
            "settings serialised to a {}, not a table",
            other.type_str()
        ))),
    }
}

/// The settings of a run as its `config.toml` table: the scoring keys of `config` plus `extra` (for `score`
/// on volumes, the backbone and preprocessing keys).
pub fn run_settings(config: &ScoreConfig, extra: &toml::Table) -> Result<toml::Table> {
    let mut table = toml_table(config)?;
    table.extend(extra.clone());
    Ok(table)
}

/// Writes the effective settings ([`run_settings`]) as `config.toml`, a valid `--config` file.
pub fn write_config_toml(out: &Path, config: &ScoreConfig, extra: &toml::Table) -> Result<()> {
    let table = run_settings(config, extra)?;
    let text = toml::to_string(&table).map_err(Error::internal)?;
    atomic::write_bytes(&out.join("config.toml"), text.as_bytes())
}

/// Writes `token_scores/` and `graph.json`, and returns the scoring part of `summary.json`. Shared by
/// `score --tokens`, `score` on volumes and `score2d`; each also writes its own `scores.csv` (the 2D table
/// has more columns) and its `config.toml` with [`write_config_toml`].
pub fn write_scoring_outputs(
    out: &Path,
    names: &[String],
    result: &ScoreResult,
    config: &ScoreConfig,
    dim: usize,
) -> Result<ScoringSummary> {
    report::write_token_scores(out, names, &result.token_scores)?;
    if let Some(g) = &result.graph {
        atomic::write_json(
            &out.join("graph.json"),
            &report::graph_json(g, names, &result.excluded, &result.subsets),
        )?;
    }
    let excluded_total: usize = result.excluded.iter().map(Vec::len).sum();
    Ok(ScoringSummary {
        config: config.clone(),
        seed: config.seed,
        msm_k: if result.subsets.len() == 1 {
            json!(result.k)
        } else {
            json!(result.subsets.iter().map(|p| p.k).collect::<Vec<_>>())
        },
        parts: result
            .subsets
            .iter()
            .map(|p| p.cases.iter().map(|&i| names[i].clone()).collect())
            .collect(),
        void_tokens: VoidTokens {
            in_search: config.keep_void,
            active_tokens: result.active_tokens,
            total_tokens: result.total_tokens,
        },
        excluded_tokens: excluded_total,
        excluded_fraction: excluded_total as f64 / result.total_tokens as f64,
        outlier_communities: result
            .graph
            .as_ref()
            .map(|g| g.communities.iter().filter(|c| c.outlier).count()),
        distance_kernel: DistanceKernel {
            token_pairs_compared: result.pairs_compared,
            seconds: result.kernel_seconds,
            gflops: 2.0 * dim as f64 * result.pairs_compared
                / result.kernel_seconds.max(1e-9)
                / 1e9,
        },
        memory_estimate_mib: result.memory_estimate as f64 / 1048576.0,
        similarity_scaling: result.scaling.to_json(),
    })
}

/// What every run kind writes once its batch is scored, in one place ([`BatchOutputs::write`]):
/// `token_scores/`, `graph.json` (CoDeGraph), `scores.csv`, `config.toml` and the batch plots; and, once
/// the caller has completed the summary, `summary.json` and `index.html` ([`BatchOutputs::finish`]).
pub struct BatchOutputs<'a> {
    pub out: &'a Path,
    /// The rows of `scores.csv`, one per case in batch order.
    pub rows: &'a [ScoreRow],
    pub result: &'a ScoreResult,
    pub score: &'a ScoreConfig,
    /// More keys for `config.toml` (the volume settings of `score` on volumes).
    pub config_extra: &'a toml::Table,
    /// The tokens' width (for the kernel's GFLOP/s).
    pub dim: usize,
    /// Draw the batch plots (false: `--no-plots`).
    pub plots: bool,
}

/// What [`BatchOutputs::write`] wrote.
pub struct Written {
    pub scoring: ScoringSummary,
    /// The plots, `(path relative to the run folder, caption)`.
    pub plots: Vec<(String, String)>,
    /// "write outputs" and "plots: batch".
    pub timings: Vec<Timing>,
}

impl BatchOutputs<'_> {
    /// Writes the scoring outputs, `scores.csv`, `config.toml` and the plots.
    pub fn write(&self) -> Result<Written> {
        let t = Instant::now();
        let names: Vec<String> = self.rows.iter().map(|r| r.case.clone()).collect();
        let scoring = write_scoring_outputs(self.out, &names, self.result, self.score, self.dim)?;
        report::write_scores_csv(&self.out.join("scores.csv"), self.rows)?;
        write_config_toml(self.out, self.score, self.config_extra)?;
        let mut timings = vec![Timing::new("write outputs", t.elapsed().as_secs_f64())];
        let t = Instant::now();
        let plots = if self.plots {
            report::write_batch_plots(self.out, self.rows, self.result)?
        } else {
            Vec::new()
        };
        timings.push(Timing::new("plots: batch", t.elapsed().as_secs_f64()));
        Ok(Written {
            scoring,
            plots,
            timings,
        })
    }

    /// Writes `summary.json` and `index.html` (linking `links`).
    pub fn finish(&self, summary: &Summary, links: &report::html::IndexLinks) -> Result<()> {
        summary.write(self.out)?;
        report::html::write_index(self.out, self.rows, summary, links)
    }
}
