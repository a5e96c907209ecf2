//! `mri-ad score2d` end to end with the tiny random ViT on tiny images written by Pillow
//! (scripts/fixtures/make_test_images2d.py): the run folder, maps at each image's size, ground truth from masks and
//! from the MVTec layout, every supported pixel format decoded like Pillow (checked through the model's
//! `cls` and RsCIN against scripts/oracles/ref_score2d.py), PIL-exact resizing, determinism, and the bad inputs.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::*;
use ndarray::{Array1, Array2};
use serde_json::Value;

const SIZE: &str = "84"; // 6×6 token grid

fn make(kind: &str, dir: &Path) {
    run_script("fixtures/make_test_images2d.py", &[kind, s(dir)]);
}

/// `score2d` with the tiny model on CPU; extra flags appended.
fn score2d(images: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let model = tiny_model(0);
    let mut args = vec![
        "score2d",
        "--images",
        s(images),
        "--out",
        s(out),
        "--model",
        s(&model),
        "--device",
        "cpu",
        "--size",
        SIZE,
        "--layers",
        "1,2,3,4",
        "--no-progress",
        "--threads",
        "2",
    ];
    args.extend_from_slice(extra);
    run_mri_ad(&args)
}

fn read_json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// scores.csv as rows of column → value.
fn read_csv(p: &Path) -> Vec<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(p).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    lines
        .map(|l| {
            header
                .iter()
                .zip(l.split(','))
                .map(|(h, v)| (h.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

/// A run whose background was not void: the summary says so and no input has a void token.
fn assert_nothing_void(summary: &Value) {
    assert_eq!(summary["void_background"]["active"], false, "{summary}");
    assert!(summary["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .all(|i| i["void_tokens"] == 0));
}

fn png_size(p: &Path) -> (u32, u32) {
    let (w, h) = image::image_dimensions(p).unwrap();
    (h, w)
}

fn all_files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(
                    p.strip_prefix(dir).unwrap().to_path_buf(),
                    std::fs::read(&p).unwrap(),
                );
            }
        }
    }
    out
}

#[test]
fn plain_folder_with_masks_writes_the_run_folder() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    make("plain", &data);
    let out = dir.path().join("run");
    let o = score2d(
        &data.join("images"),
        &out,
        &["--masks", s(&data.join("masks"))],
    );
    ok(&o);
    for f in [
        "scores.csv",
        "summary.json",
        "config.toml",
        "graph.json",
        ".mri-ad-run",
        "index.html",
        "plots/roc.png",
        "plots/histogram.png",
        "plots/scaling.png",
        "plots/graph.png",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    assert!(png_size(&out.join("plots/histogram.png")).0 >= 300);
    let page = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert!(
        page.contains("src=\"plots/roc.png\""),
        "index.html shows the ROC"
    );
    let rows = read_csv(&out.join("scores.csv"));
    assert_eq!(rows.len(), 8);
    let header = std::fs::read_to_string(out.join("scores.csv")).unwrap();
    assert!(header.starts_with("rank,case,group,score,label,community,raw_score\n"));
    let summary = read_json(&out.join("summary.json"));
    let mut pixels = 0u64;
    let mut positives = 0u64;
    for r in &rows {
        let case = &r["case"];
        let defect = case.starts_with('d');
        assert_eq!(r["label"], if defect { "1" } else { "0" }, "{case}");
        assert_eq!(r["group"], if defect { "defect" } else { "good" }, "{case}");
        // the map has the image's own size; the token scores the 6×6 grid
        let img = data.join("images").join(format!("{case}.png"));
        let (h, w) = png_size(&img);
        let map: Array2<f32> =
            ndarray_npy::read_npy(out.join("maps").join(format!("{case}.npy"))).unwrap();
        assert_eq!(map.dim(), (h as usize, w as usize), "{case}");
        let tokens: Array1<f32> =
            ndarray_npy::read_npy(out.join("token_scores").join(format!("{case}.npy"))).unwrap();
        assert_eq!(tokens.len(), 36);
        // align corners: the map's corners are the corner tokens; its maximum is the raw score
        assert_eq!(map[[0, 0]], tokens[0]);
        assert_eq!(map[[h as usize - 1, w as usize - 1]], tokens[35]);
        let max = map.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let raw: f64 = r["raw_score"].parse().unwrap();
        assert!((max as f64 - raw).abs() < 1e-6, "{case}: {max} vs {raw}");
        assert_eq!(
            png_size(&out.join("overlays").join(format!("{case}.png"))),
            (h, w)
        );
        pixels += (h * w) as u64;
        if defect {
            let m = image::open(data.join("masks").join(if case == "d0" {
                "d0.png"
            } else {
                "d1_mask.png"
            }))
            .unwrap()
            .to_luma8();
            positives += m.pixels().filter(|p| p.0[0] > 0).count() as u64;
        }
    }
    let m = &summary["metrics"];
    assert_eq!(m["pixel"]["pixels"].as_u64(), Some(pixels));
    assert_eq!(m["pixel"]["positive_pixels"].as_u64(), Some(positives));
    assert_eq!(m["pixel"]["method"], "exact");
    for key in [
        &m["image"]["auroc"],
        &m["image"]["ap"],
        &m["image"]["f1_max"],
        &m["pixel"]["auroc"],
        &m["pixel"]["ap"],
        &m["pixel"]["f1_max"],
        &m["aupro"],
    ] {
        let v = key
            .as_f64()
            .unwrap_or_else(|| panic!("metric missing: {m}"));
        assert!((0.0..=1.0).contains(&v), "{m}");
    }
    // a bright blob on a smooth texture: the defect pixels outscore the rest even with random weights
    assert!(m["pixel"]["auroc"].as_f64().unwrap() > 0.8, "{m}");
    assert_eq!(summary["views"].as_array().unwrap().len(), 12);
    assert_eq!(summary["backbone"]["grid"], serde_json::json!([1, 6, 6]));
    // CoDeGraph by default: the graph stage used the r = 1 views (block-major order, 3 degrees)
    assert_eq!(
        summary["scoring"]["config"]["graph-views"],
        serde_json::json!([0, 3, 6, 9])
    );
    let graph = read_json(&out.join("graph.json"));
    assert_eq!(graph["cases"].as_array().unwrap().len(), 8);
    // Textured images without a black border: auto leaves every token in.
    assert_nothing_void(&summary);
}

#[test]
fn pixel_formats_decode_like_pillow_and_rscin_uses_the_cls_embeddings() {
    use mri_ad::formats::images::{read_image, Pixels};
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("formats");
    make("formats", &images);
    // Every file decodes to Pillow's values (8-bit / 255, 16-bit / 65535, alpha dropped, palette
    // expanded); JPEG decoders are not bit-exact across implementations, so JPEG only up to a few levels.
    let mut names: Vec<String> = std::fs::read_dir(&images)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names.len(), 9, "{names:?}");
    let code = format!(
        "import sys, os, numpy as np; sys.path.insert(0, 'scripts/oracles'); from ref_score2d import decode; \
         d = '{0}'; [np.save(os.path.join(d, '..', n + '.npy'), decode(os.path.join(d, n))) for n in os.listdir(d)]",
        s(&images)
    );
    run_python(&["-c", &code]);
    for n in &names {
        let pil: ndarray::Array3<f64> =
            ndarray_npy::read_npy(dir.path().join(format!("{n}.npy"))).unwrap();
        let img = read_image(&images.join(n)).unwrap();
        let ours: ndarray::Array3<f32> = match img.pixels {
            Pixels::Grey(g) => g.insert_axis(ndarray::Axis(0)),
            Pixels::Rgb(c) => c,
        };
        assert_eq!(ours.dim(), pil.dim(), "{n}");
        let diffs: Vec<f64> = ours
            .iter()
            .zip(pil.iter())
            .map(|(a, b)| (*a as f64 - b).abs())
            .collect();
        let max = diffs.iter().copied().fold(0.0, f64::max);
        let mean = diffs.iter().sum::<f64>() / diffs.len() as f64;
        if n.ends_with(".jpg") {
            assert!(
                max <= 6.0 / 255.0 && mean < 1.0 / 255.0,
                "{n}: max {max}, mean {mean}"
            );
        } else {
            assert!(max < 1e-6, "{n}: max difference {max}");
        }
        let expect = match n.as_str() {
            "grey8.png" => "8-bit grey",
            "grey16.png" | "grey16t.tif" => "16-bit grey",
            "greyalpha.png" => "8-bit grey+alpha (alpha ignored)",
            "palette.png" | "rgb.png" | "rgb8.tif" | "rgbj.jpg" => "8-bit RGB",
            "rgba.png" => "8-bit RGBA (alpha ignored)",
            other => panic!("unexpected file {other}"),
        };
        assert_eq!(img.format, expect, "{n}");
    }
    let out = dir.path().join("run");
    ok(&score2d(&images, &out, &["--method", "musc"]));
    let summary = read_json(&out.join("summary.json"));
    assert_eq!(summary["inputs"].as_array().unwrap().len(), 9);
    // No labels: no metrics, every image in group `image`.
    assert!(summary["metrics"].is_null());
    assert!(read_csv(&out.join("scores.csv"))
        .iter()
        .all(|r| r["group"] == "image" && r["label"].is_empty()));
    // Pillow decoding + PIL float resize + ImageNet normalisation + onnxruntime `cls` + numpy RsCIN on the
    // run's raw scores reproduce the run's final scores (without the JPEG, whose decoding differs slightly).
    std::fs::remove_file(images.join("rgbj.jpg")).unwrap();
    let out = dir.path().join("run-nojpeg");
    ok(&score2d(&images, &out, &["--method", "musc"]));
    let model = tiny_model(0);
    let report: Value =
        serde_json::from_str(&run_script("oracles/ref_score2d.py", &[s(&out), s(&model)])).unwrap();
    assert_eq!(report["cases"], 8);
    let d = report["score_max_abs_diff"].as_f64().unwrap();
    assert!(d < 1e-6, "RsCIN scores differ from the reference by {d}");
}

#[test]
fn resizing_matches_pillow_bilinear() {
    use mri_ad::formats::images::resize_bilinear;
    let dir = tempfile::tempdir().unwrap();
    let src = Array2::from_shape_fn((37, 53), |(y, x)| {
        ((y * 31 + x * 17) % 23) as f32 / 23.0 + 0.01 * y as f32
    });
    let input = dir.path().join("src.npy");
    ndarray_npy::write_npy(&input, &src).unwrap();
    for (h, w) in [(14, 14), (28, 70), (112, 98), (37, 20)] {
        let ours = resize_bilinear(src.view(), (h, w));
        let reference = dir.path().join(format!("ref_{h}_{w}.npy"));
        let code = format!(
            "import numpy as np; from PIL import Image; a = np.load('{}'); \
             np.save('{}', np.asarray(Image.fromarray(a, 'F').resize(({w}, {h}), Image.BILINEAR)))",
            s(&input),
            s(&reference)
        );
        run_python(&["-c", &code]);
        let pil: Array2<f32> = ndarray_npy::read_npy(&reference).unwrap();
        assert_eq!(pil.dim(), ours.dim());
        let diff = pil
            .iter()
            .zip(ours.iter())
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(diff < 1e-5, "{h}×{w}: max difference {diff}");
    }
}

#[test]
fn mvtec_root_scores_each_class_as_its_own_batch() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("mvtec");
    make("mvtec", &root);
    let out = dir.path().join("run");
    ok(&score2d(&root, &out, &["--method", "musc"]));
    let top = read_json(&out.join("summary.json"));
    assert_eq!(top["layout"], "mvtec");
    let classes = top["classes"].as_array().unwrap();
    assert_eq!(classes.len(), 2);
    let mut aurocs = Vec::new();
    for (c, name) in classes.iter().zip(["bottle", "tile"]) {
        assert_eq!(c["class"], name);
        let sub = out.join(name);
        let rows = read_csv(&sub.join("scores.csv"));
        assert_eq!(rows.len(), 6);
        for r in &rows {
            let crack = r["case"].starts_with("crack_");
            assert!(r["case"].starts_with("good_") || crack, "{r:?}");
            assert_eq!(r["group"], if crack { "crack" } else { "good" });
            assert_eq!(r["label"], if crack { "1" } else { "0" });
        }
        let s = read_json(&sub.join("summary.json"));
        assert_eq!(s["class"], name);
        assert_eq!(s["cases"], 6);
        aurocs.push(s["metrics"]["pixel"]["auroc"].as_f64().unwrap());
        assert!(sub.join("maps/crack_000.npy").is_file());
    }
    let mean = top["mean_over_classes"]["pixel_auroc"]["mean"]
        .as_f64()
        .unwrap();
    assert!((mean - (aurocs[0] + aurocs[1]) / 2.0).abs() < 1e-12);
    let all = read_csv(&out.join("scores.csv"));
    assert_eq!(all.len(), 12);
    assert_eq!(all.iter().filter(|r| r["class"] == "tile").count(), 6);

    // One class folder: the run folder is the class's own.
    let out1 = dir.path().join("run1");
    ok(&score2d(&root.join("tile"), &out1, &["--method", "musc"]));
    let one = read_json(&out1.join("summary.json"));
    assert_eq!(one["class"], "tile");
    assert_eq!(
        std::fs::read(out1.join("scores.csv")).unwrap(),
        std::fs::read(out.join("tile/scores.csv")).unwrap(),
        "a class scores the same alone and inside the root"
    );
}

#[test]
fn runs_are_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    make("plain", &data);
    let masks = data.join("masks");
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    let c = dir.path().join("c");
    ok(&score2d(&data.join("images"), &a, &["--masks", s(&masks)]));
    ok(&score2d(&data.join("images"), &b, &["--masks", s(&masks)]));
    // Another backbone batch size may change the last bits of ONNX Runtime's output, not the results.
    ok(&score2d(
        &data.join("images"),
        &c,
        &["--masks", s(&masks), "--batch", "3"],
    ));
    let (ra, rc) = (
        read_csv(&a.join("scores.csv")),
        read_csv(&c.join("scores.csv")),
    );
    for (x, y) in ra.iter().zip(&rc) {
        assert_eq!(x["case"], y["case"]);
        let (u, v): (f64, f64) = (x["score"].parse().unwrap(), y["score"].parse().unwrap());
        assert!((u - v).abs() < 1e-4, "{}: {u} vs {v}", x["case"]);
    }
    let (fa, fb) = (all_files(&a), all_files(&b));
    assert_eq!(fa.keys().collect::<Vec<_>>(), fb.keys().collect::<Vec<_>>());
    for (k, v) in &fa {
        if k.ends_with("summary.json") || k.ends_with("index.html") {
            continue; // both show the wall times, which differ
        }
        assert!(v == &fb[k], "{} differs between runs", k.display());
    }
}

#[test]
fn void_background_leaves_exact_zero_patches_out_of_the_search() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("background");
    make("background", &images);
    let out = dir.path().join("run");
    // auto (the default): every image has an exact-zero border, so the background is void, with a notice.
    let o = score2d(&images, &out, &[]);
    ok(&o);
    assert!(
        stderr(&o).contains("every image has an exact-zero border"),
        "{}",
        stderr(&o)
    );
    let summary = read_json(&out.join("summary.json"));
    assert_eq!(summary["void_background"]["mode"], "auto");
    assert_eq!(summary["void_background"]["active"], true);
    assert_eq!(summary["void_background"]["threshold"], 0.5);
    // The void tokens recomputed with Pillow (float resize, exact zeros in every channel, more than half
    // of the 14×14 patch) are the run's, and every one of them scores exactly 0.
    let model = tiny_model(0);
    let report: Value =
        serde_json::from_str(&run_script("oracles/ref_score2d.py", &[s(&out), s(&model)])).unwrap();
    assert_eq!(report["void_scored"], 0, "{report}");
    let inputs = summary["inputs"].as_array().unwrap();
    assert_eq!(inputs.len(), 6);
    let mut total = 0;
    for inp in inputs {
        let case = inp["case"].as_str().unwrap();
        let n = inp["void_tokens"].as_u64().unwrap();
        assert_eq!(Some(n), report["void_tokens"][case].as_u64(), "{case}");
        assert!(n > 0 && n < 36, "{case}: {n} void tokens of 36");
        let scores: Array1<f32> =
            ndarray_npy::read_npy(out.join(format!("token_scores/{case}.npy"))).unwrap();
        assert!(
            scores.iter().filter(|&&v| v > 0.0).count() >= 36 - n as usize - 1,
            "{case}: the tokens inside the ellipse are scored"
        );
        total += n;
    }
    // With `off` nothing is void and the background tokens are scored like the rest.
    let plain = dir.path().join("run-plain");
    ok(&score2d(&images, &plain, &["--void-background", "off"]));
    let summary = read_json(&plain.join("summary.json"));
    assert_nothing_void(&summary);
    let zero: usize = inputs
        .iter()
        .map(|inp| {
            let case = inp["case"].as_str().unwrap();
            let t: Array1<f32> =
                ndarray_npy::read_npy(plain.join(format!("token_scores/{case}.npy"))).unwrap();
            t.iter().filter(|&&v| v == 0.0).count()
        })
        .sum();
    assert!(
        (zero as u64) < total,
        "with --void-background off the background is scored ({zero} zero scores vs {total} void tokens)"
    );
    // An image that is all background cannot be scored with the background void: exit 2 naming it.
    image::GrayImage::new(60, 60)
        .save(images.join("black.png"))
        .unwrap();
    expect_bad(&images, &[], "black.png", "exact-zero background");
    expect_bad(
        &images,
        &["--void-background", "on"],
        "black.png",
        "--void-background off",
    );
}

/// Runs score2d expecting exit 2 with an error naming `file` and `problem`, no output folder, inputs intact.
fn expect_bad(images: &Path, extra: &[&str], file: &str, problem: &str) {
    let parent = images.parent().unwrap();
    let before = all_files(parent);
    let out = parent.join("out-never");
    let o = score2d(images, &out, extra);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let last = err.lines().last().unwrap_or("");
    assert!(
        last.starts_with("mri-ad: error: ") && last.contains(file) && last.contains(problem),
        "expected an error naming {file:?} and {problem:?}, got:\n{err}"
    );
    assert!(!out.exists(), "an output folder was left behind");
    assert_eq!(before, all_files(parent), "inputs were modified");
}

#[test]
fn bad_inputs_exit_2_naming_the_file_and_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let fresh = |name: &str| {
        let d = dir.path().join(name);
        make("plain", &d);
        d
    };
    // An unreadable image (not an image at all) and a truncated PNG.
    let d = fresh("garbage");
    std::fs::write(d.join("images/n3.png"), b"this is not a png").unwrap();
    expect_bad(
        &d.join("images"),
        &[],
        "n3.png",
        "not a valid PNG, JPEG or TIFF",
    );
    let d = fresh("truncated");
    let p = d.join("images/n4.png");
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    expect_bad(&d.join("images"), &[], "n4.png", "cannot decode");
    // A mask of another size than its image.
    let d = fresh("masksize");
    image::GrayImage::new(50, 40)
        .save(d.join("masks/d0.png"))
        .unwrap();
    expect_bad(
        &d.join("images"),
        &["--masks", s(&d.join("masks"))],
        "d0.png",
        "mask size",
    );
    // A mask without an image.
    let d = fresh("straymask");
    image::GrayImage::new(84, 84)
        .save(d.join("masks/zz.png"))
        .unwrap();
    expect_bad(
        &d.join("images"),
        &["--masks", s(&d.join("masks"))],
        "zz.png",
        "a mask without an image",
    );
    // Fewer than 3 images, and an empty folder.
    let d = fresh("two");
    for e in std::fs::read_dir(d.join("images")).unwrap() {
        let p = e.unwrap().path();
        if !["n2.png", "n3.png"].iter().any(|n| p.ends_with(n)) {
            std::fs::remove_file(p).unwrap();
        }
    }
    expect_bad(&d.join("images"), &[], "images", "at least 3 images");
    let empty = dir.path().join("empty/images");
    std::fs::create_dir_all(&empty).unwrap();
    expect_bad(&empty, &[], "images", "no images");
    // An MVTec defect image without its ground-truth mask.
    let root = dir.path().join("mv/root");
    make("mvtec", &root);
    std::fs::remove_file(root.join("tile/ground_truth/crack/001_mask.png")).unwrap();
    expect_bad(&root, &[], "001.png", "no ground-truth mask");
    // A float TIFF with values outside [0, 1].
    let d = fresh("float");
    let code = format!(
        "import numpy as np; from PIL import Image; \
         Image.fromarray(np.full((20, 30), 7.5, np.float32), 'F').save('{}')",
        s(&d.join("images/f.tif"))
    );
    run_python(&["-c", &code]);
    let o = score2d(&d.join("images"), &d.join("out-f"), &[]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("f.tif") && !err.contains("panicked"), "{err}");
    assert!(!d.join("out-f").exists());
    // Bad flags.
    let d = fresh("flags");
    for (flags, what) in [
        (&["--size", "100"][..], "--size"),
        (&["--lnamd-degrees", "1,2"][..], "--lnamd-degrees"),
        (&["--rscin-windows", "0"][..], "--rscin-windows"),
        (&["--rscin-windows", "1,20"][..], "--rscin-windows"),
        (&["--graph-views", "12"][..], "--graph-views"),
    ] {
        let o = score2d(&d.join("images"), &d.join("out-flags"), flags);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{flags:?}: {err}");
        assert!(err.contains(what), "{flags:?}: {err}");
        assert!(!d.join("out-flags").exists());
    }
    // A --config file with volume keys (a `score` run's config.toml) is refused, naming the file and keys.
    let cfg = d.join("volume.toml");
    std::fs::write(&cfg, "size = 224\ntukey-k = 3.0\n").unwrap();
    let o = score2d(
        &d.join("images"),
        &d.join("out-flags"),
        &["--config", s(&cfg)],
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("volume.toml") && err.contains("size"), "{err}");
    assert!(!d.join("out-flags").exists());
    // A non-empty output folder without --force.
    let busy = d.join("busy");
    std::fs::create_dir_all(&busy).unwrap();
    std::fs::write(busy.join("keep.txt"), b"x").unwrap();
    let o = score2d(&d.join("images"), &busy, &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--force"));
    assert_eq!(std::fs::read_dir(&busy).unwrap().count(), 1);
}

#[test]
fn a_model_without_cls_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    make("plain", &data);
    let model = dir.path().join("nocls.onnx");
    let code = format!(
        "import onnx; m = onnx.load('{}'); keep = [o for o in m.graph.output if o.name != 'cls']; \
         del m.graph.output[:]; m.graph.output.extend(keep); onnx.save(m, '{}')",
        s(&tiny_model(0)),
        s(&model)
    );
    run_python(&["-c", &code]);
    let out = dir.path().join("run");
    let o = run_mri_ad(&[
        "score2d",
        "--images",
        s(&data.join("images")),
        "--out",
        s(&out),
        "--model",
        s(&model),
        "--device",
        "cpu",
        "--size",
        SIZE,
        "--layers",
        "1,2,3,4",
        "--no-progress",
    ]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("nocls.onnx") && err.contains("no `cls` output"),
        "{err}"
    );
    assert!(!out.exists());
}

#[test]
fn run_folders_follow_the_request_rules_of_score() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("mvtec");
    make("mvtec", &root);
    let out = dir.path().join("run");
    ok(&score2d(&root, &out, &["--method", "musc"]));
    assert!(out.join("bottle/scores.csv").is_file());
    let marker = read_json(&out.join(".mri-ad-run"));
    assert_eq!(marker["request"]["inputs"].as_array().unwrap().len(), 12);
    assert_eq!(
        read_json(&out.join("tile/.mri-ad-run"))["request"]["inputs"]
            .as_array()
            .unwrap()
            .len(),
        6
    );
    // The same request again: no --force needed.
    ok(&score2d(&root, &out, &["--method", "musc"]));
    // Another setting: refused, naming it, and nothing is touched.
    let before = std::fs::read(out.join("summary.json")).unwrap();
    let o = score2d(&root, &out, &["--method", "musc", "--lnamd-degrees", "1,3"]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(
        e.contains("--lnamd-degrees") && e.contains("--force"),
        "{e}"
    );
    assert_eq!(std::fs::read(out.join("summary.json")).unwrap(), before);
    // With --force, a run of one class replaces the root's: the class folders it wrote are removed.
    ok(&score2d(
        &root.join("tile"),
        &out,
        &["--method", "musc", "--force"],
    ));
    assert!(!out.join("bottle").exists() && !out.join("tile").exists());
    assert_eq!(read_json(&out.join("summary.json"))["class"], "tile");
    // A finished folder whose marker records no request (an earlier mri-ad) needs --force.
    let old = dir.path().join("old");
    std::fs::create_dir_all(&old).unwrap();
    std::fs::write(old.join(".mri-ad-run"), b"mri-ad run folder\n").unwrap();
    std::fs::write(old.join("summary.json"), b"{}").unwrap();
    let o = score2d(&root.join("tile"), &old, &["--method", "musc"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("not recorded"), "{}", stderr(&o));
}
