//! Throughput of `extract` against plain ONNX Runtime inference of the same batches, in the same process.
//!
//! Shape: one 224³ phantom volume (an ellipsoidal brain as a tight crop leaves it: it nearly touches the
//! anterior/posterior faces, with background margins elsewhere), the default model (ViT-S/14, blocks 6, 9,
//! 12), d' = 128, batch 14, CPU.
//!
//! Prints: slices of the volume, slices inferred, slices saved by the background reuse, seconds for the whole
//! `extract` (hashing, reading, tokenizing, writing), seconds of plain `Session::run` over the very same
//! batches (same inputs, same selected outputs, same session settings), both as slices/s, and their ratio.
//!
//! Run: `scripts/bench/bench_extract.sh` (sets ORT_DYLIB_PATH from .venv and builds the default model), or
//! `ORT_DYLIB_PATH=... cargo bench --bench extract -- [--size 224] [--model onnx/dinov2_vits14.onnx]
//! [--layers 6,9,12] [--threads 0] [--batch 14] [--device cpu]`.

use std::path::PathBuf;
use std::time::Instant;

use mri_ad::backbone::ort::{Device, OrtConfig, OrtEmbedder};
use mri_ad::backbone::{fill_one, PATCH};
use mri_ad::extract::{ExtractConfig, Shard};
use mri_ad::pipeline::cubes::NpyCubes;
use mri_ad::tokens::TokenizerConfig;
use ndarray::{Array3, Array4, Axis};

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("bad value for {name}: {v}"))
        })
        .unwrap_or(default)
}

fn phantom(size: usize) -> Array3<f32> {
    let s = size as f32;
    Array3::from_shape_fn((size, size, size), |(z, y, x)| {
        let (fz, fy, fx) = (
            (z as f32 + 0.5) / s - 0.5,
            (y as f32 + 0.5) / s - 0.5,
            (x as f32 + 0.5) / s - 0.5,
        );
        let r = (fz / 0.40).powi(2) + (fy / 0.48).powi(2) + (fx / 0.36).powi(2);
        if r >= 1.0 {
            0.0
        } else {
            let t = 0.55
                + 0.2 * (x as f32 * 0.21).sin() * (y as f32 * 0.17).cos()
                + 0.1 * (z as f32 * 0.29).sin()
                - 0.25 * r;
            t.clamp(0.02, 1.0)
        }
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let size: usize = arg(&args, "--size", 224);
    let model: PathBuf = arg(&args, "--model", PathBuf::from("onnx/dinov2_vits14.onnx"));
    let layers: String = arg(&args, "--layers", "6,9,12".to_string());
    let layers: Vec<usize> = layers
        .split(',')
        .map(|v| v.parse().expect("layers"))
        .collect();
    let threads: usize = arg(&args, "--threads", 0);
    let batch: usize = arg(&args, "--batch", PATCH);
    let device: String = arg(&args, "--device", "cpu".to_string());
    let device: Device = device.parse()?;

    let dir = tempfile::tempdir()?;
    let input = dir.path().join("in");
    std::fs::create_dir(&input)?;
    let cube = phantom(size);
    ndarray_npy::write_npy(input.join("phantom.npy"), &cube)?;
    let cfg = ExtractConfig {
        out: dir.path().join("out"),
        shard: Shard::ALL,
        model: model.clone(),
        ort_lib: None,
        device,
        threads,
        layers: layers.clone(),
        proj_dim: 128,
        seed: 0,
        size,
        tokenizer: TokenizerConfig {
            batch,
            void_threshold: 0.5,
            record_batches: true,
        },
        force: false,
        progress: false,
        report: mri_ad::messages::Reporter::silent(),
        save_projection: None,
        reuse_from: Vec::new(),
    };
    println!("extract benchmark: one {size}³ volume, model {}, blocks {layers:?}, batch {batch}, device {device:?}, threads {threads} (0 = ORT default)", model.display());

    // 1. the whole extract (model loading included)
    let t0 = Instant::now();
    let summary = mri_ad::extract::run(&cfg, &NpyCubes::new(&input))?;
    let extract_s = t0.elapsed().as_secs_f64();
    let stats = summary.per_case[0].stats.clone().expect("computed");

    // 2. plain ONNX Runtime inference of the same batches with a session of the same settings
    let mut plain = OrtEmbedder::load(&OrtConfig {
        model: model.clone(),
        ort_lib: None,
        device,
        threads,
        layers: layers.clone(),
    })?;
    let mut batches: Vec<Vec<(mri_ad::tokens::SliceAxis, usize)>> = stats.batch_log.clone();
    batches.push(Vec::new()); // the one background image computed to fill the background cache
    let mut plain_s = 0.0;
    let mut images = 0;
    for b in &batches {
        let n = b.len().max(1);
        let mut px = Array4::<f32>::zeros((n, 3, size, size));
        if b.is_empty() {
            fill_one(
                ndarray::Array2::zeros((size, size)).view(),
                px.index_axis_mut(Axis(0), 0),
            );
        }
        for (i, (axis, t)) in b.iter().enumerate() {
            fill_one(axis.slice(cube.view(), *t), px.index_axis_mut(Axis(0), i));
        }
        let t = Instant::now();
        plain.run_plain(px.view())?;
        plain_s += t.elapsed().as_secs_f64();
        images += n;
    }
    let inferred = stats.inferred + stats.background_computed;
    assert_eq!(images, inferred, "the plain run covers the same images");
    let extract_rate = inferred as f64 / extract_s;
    let plain_rate = inferred as f64 / plain_s;
    println!("slices of the volume:              {}", stats.slices);
    println!(
        "slices inferred:                   {} (+{} background image computed once)",
        stats.inferred, stats.background_computed
    );
    println!(
        "slices saved by background reuse:  {} ({:.1}%)",
        stats.background_reused,
        100.0 * stats.background_reused as f64 / stats.slices as f64
    );
    println!("backbone batches:                  {}", stats.batches + 1);
    println!("extract, whole run:                {extract_s:.2} s per volume = {extract_rate:.2} inferred slices/s ({:.2} volume slices/s)", stats.slices as f64 / extract_s);
    println!(
        "  of which inside Embedder::embed: {:.2} s",
        stats.embed_seconds
    );
    println!("plain ONNX Runtime, same batches:  {plain_s:.2} s = {plain_rate:.2} slices/s");
    println!(
        "ratio extract / plain (slices/s):  {:.3}",
        extract_rate / plain_rate
    );
    println!("provider: {}", summary.provider.unwrap_or_default());
    Ok(())
}
