//! Benchmark of the batch scorer (issue "batch scorer", acceptance 4), with references measured in the
//! same run.
//!
//! Shape "brain-40": N = 40 cases, a 16³ grid (M = 4096) with 70% void tokens (as skull-stripped brain
//! volumes have), D = 384 (3·d', d' = 128), L = 2 layers; a planted recurring anomaly in 15% of the cases so
//! that every CoDeGraph stage (links, communities, targeted filtering, refined scoring) does real work.
//! The token files are written by `scripts/fixtures/make_tokens.py` (cached under `bench-out/`).
//!
//! Prints: wall time per stage; the distance kernel's GFLOP/s (2·D flops per token pair compared, each
//! unordered pair of cases computed once); beside it (a) plain faer GEMMs of the same shapes (one
//! `n_a × D × n_b` product per case pair, in parallel, nothing else) and (b) a vectorised numpy
//! implementation (`scripts/bench/bench_numpy_knn.py`: each unordered pair once with one BLAS matmul, row and
//! column minima), and the ratios; the share of CoDeGraph's stages after the distances; peak memory
//! (VmHWM) of this process and of the numpy process.
//!
//! Run: `scripts/bench/bench_scorer.sh [N]` (N = 40 default; 150 for the large run), or
//! `MRI_AD_PYTHON=.venv/bin/python cargo bench --bench knn -- <token folder>`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use faer::{Accum, MatRef, Par};
use mri_ad::formats::tokens::read_batch;
use mri_ad::progress::Progress;
use mri_ad::score::{score_batch, Method, ScoreConfig};
use rayon::prelude::*;

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|v| v.parse::<f64>().ok()))
                .flatten()
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// Plain faer GEMMs of the kernel's shapes: every unordered pair of cases, one product each, in parallel.
fn faer_reference(rows: &[Vec<f32>], counts: &[usize], dim: usize, layers: usize) -> (f64, f64) {
    let n = rows.len();
    let pairs: Vec<(usize, usize)> = (0..n)
        .flat_map(|a| (a + 1..n).map(move |b| (a, b)))
        .collect();
    let t = Instant::now();
    let mut flops = 0.0;
    for _ in 0..layers {
        let checks: Vec<f32> = pairs
            .par_iter()
            .map(|&(a, b)| {
                let lhs = MatRef::from_row_major_slice(&rows[a], counts[a], dim);
                let rhs = MatRef::from_row_major_slice(&rows[b], counts[b], dim);
                let mut out = faer::Mat::<f32>::zeros(counts[a], counts[b]);
                faer::linalg::matmul::matmul(
                    out.as_mut(),
                    Accum::Replace,
                    lhs,
                    rhs.transpose(),
                    1.0f32,
                    Par::Seq,
                );
                out[(0, 0)]
            })
            .collect();
        std::hint::black_box(checks);
        flops += pairs
            .iter()
            .map(|&(a, b)| 2.0 * dim as f64 * counts[a] as f64 * counts[b] as f64)
            .sum::<f64>();
    }
    let secs = t.elapsed().as_secs_f64();
    (flops / secs / 1e9, secs)
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let dir = PathBuf::from(args.first().expect(
        "usage: cargo bench --bench knn -- <token folder> (see scripts/bench/bench_scorer.sh)",
    ));
    let files = read_batch(&dir).expect("read the token folder");
    let sets: Vec<_> = files.into_iter().map(|f| f.set).collect();
    let (layers, m, dim) = sets[0].tokens.dim();
    let n = sets.len();
    let valid: usize = sets.iter().map(|s| s.n_valid()).sum();
    println!(
        "shape: N = {n}, M = {m} (grid {:?}), {:.0}% void, D = {dim}, L = {layers}; threads = {}",
        sets[0].grid,
        100.0 * (1.0 - valid as f64 / (n * m) as f64),
        rayon::current_num_threads()
    );

    // (a) plain faer GEMMs over the same shapes (valid rows of layer 0, reused for every layer).
    let rows: Vec<Vec<f32>> = sets
        .iter()
        .map(|s| {
            let layer = s.tokens.index_axis(ndarray::Axis(0), 0);
            layer
                .outer_iter()
                .zip(&s.valid)
                .filter(|(_, &v)| v)
                .flat_map(|(t, _)| t.to_vec())
                .collect()
        })
        .collect();
    let counts: Vec<usize> = sets.iter().map(|s| s.n_valid()).collect();
    let (faer_gflops, faer_secs) = faer_reference(&rows, &counts, dim, layers);
    drop(rows);

    // The scorer itself (CoDeGraph, defaults).
    let config = ScoreConfig {
        method: Method::Codegraph,
        ..ScoreConfig::default()
    };
    let t = Instant::now();
    let result = score_batch(&sets, &config, &Progress::hidden()).expect("score");
    let total = t.elapsed().as_secs_f64();
    let kernel_gflops = 2.0 * dim as f64 * result.pairs_compared / result.kernel_seconds / 1e9;
    println!("\nstage timings (CoDeGraph, defaults):");
    for timing in &result.timings {
        println!("  {:<24} {:>8.3} s", timing.stage, timing.seconds);
    }
    let after = total - result.kernel_seconds;
    println!("  {:<24} {:>8.3} s", "total", total);
    let excluded: usize = result.excluded.iter().map(Vec::len).sum();
    let outliers = result
        .graph
        .as_ref()
        .map(|g| g.communities.iter().filter(|c| c.outlier).count())
        .unwrap_or(0);
    println!("  outlier communities: {outliers}, tokens excluded: {excluded}");
    // With few non-singleton communities the Tukey rule flags nothing (ALGORITHM.md §6.4); to time
    // Algorithm 2 and the refined scoring with real exclusions, run once more with the densest community
    // forced to be an outlier.
    let forced = (outliers == 0).then(|| {
        let forced_config = ScoreConfig {
            outlier_rule: mri_ad::score::codegraph::communities::OutlierRule::TopDensest,
            top_densest: 1,
            min_communities: 1,
            ..config.clone()
        };
        let t = Instant::now();
        let r = score_batch(&sets, &forced_config, &Progress::hidden()).expect("score");
        let total = t.elapsed().as_secs_f64();
        let excluded: usize = r.excluded.iter().map(Vec::len).sum();
        for timing in r.timings.iter().filter(|t| t.stage.starts_with("graph")) {
            println!("  forced: {:<16} {:>8.3} s", timing.stage, timing.seconds);
        }
        (total - r.kernel_seconds, r.kernel_seconds, 1, excluded)
    });
    drop(sets);
    let rust_peak = peak_rss_mib();

    // (b) numpy, same files, same process tree, after ours.
    let python = std::env::var("MRI_AD_PYTHON").unwrap_or_else(|_| ".venv/bin/python".into());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/bench/bench_numpy_knn.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg(&dir)
        .output()
        .expect("run the numpy reference (set MRI_AD_PYTHON)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "numpy reference failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let field = |key: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(f64::NAN)
    };
    let (np_secs, np_gflops, np_peak) = (field("seconds:"), field("gflops:"), field("peak_mib:"));

    println!("\ndistance kernel (exact, 2·D flops per token pair, each unordered case pair once):");
    println!(
        "  mri-ad kernel      {:>8.2} s  {:>7.1} GFLOP/s",
        result.kernel_seconds, kernel_gflops
    );
    println!(
        "  (a) plain faer GEMM {:>7.2} s  {:>7.1} GFLOP/s   kernel/GEMM = {:.2}",
        faer_secs,
        faer_gflops,
        kernel_gflops / faer_gflops
    );
    println!(
        "  (b) numpy (BLAS)   {:>8.2} s  {:>7.1} GFLOP/s   numpy time / kernel time = {:.2}",
        np_secs,
        np_gflops,
        np_secs / result.kernel_seconds
    );
    println!(
        "CoDeGraph stages after the distances: {:.3} s = {:.1}% of the kernel time",
        after,
        100.0 * after / result.kernel_seconds
    );
    if let Some((after, kernel, outliers, excluded)) = forced {
        println!(
            "  with filtering forced (--outlier-rule top-densest --top-densest 1 --min-communities 1: {outliers} community, {excluded} \
             tokens excluded): {after:.3} s = {:.1}% of its kernel time",
            100.0 * after / kernel
        );
    }
    println!(
        "peak memory: mri-ad process {:.0} MiB (estimate of tables + scratch {:.0} MiB); numpy {:.0} MiB",
        rust_peak,
        result.memory_estimate as f64 / 1048576.0,
        np_peak
    );
}
