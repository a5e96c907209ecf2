//! The numeric pieces of the 2D path against independent numpy/scipy references (scripts/oracles/ref_*.py): LNAMD and
//! its box mean, bilinear align-corners upsampling, RsCIN, AUPRO and the GMM threshold. Inputs are seeded random
//! with ties, constant maps, borders and degenerate cases; every comparison also shows that a plausible wrong
//! variant (divisor, padding, tie rule, rescaling) would have been caught by the same tolerance.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use common::{run_script, s};
use mri_ad::eval::{rscin::rscin, upsample_bilinear};
use mri_ad::tokens::lnamd::{box_mean, lnamd};
use ndarray::{Array1, Array2, ArrayD};
use ndarray_npy::{NpzReader, NpzWriter};
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};

type Rng8 = rand_chacha::ChaCha8Rng;
/// (name, grid (H, W), channels, r, generator kind)
type LnamdCase = (&'static str, (usize, usize), usize, usize, &'static str);
/// (name, grid, output size)
type BilinearCase = (&'static str, (usize, usize), (usize, usize));
/// (name, maps, masks)
type AuproCase<'a> = (&'static str, &'a [Array2<f32>], &'a [Array2<bool>]);

/// Largest difference, relative where the reference is larger than 1 in magnitude.
fn max_diff<'a>(
    ours: impl IntoIterator<Item = f64>,
    reference: impl IntoIterator<Item = &'a f64>,
) -> f64 {
    ours.into_iter()
        .zip(reference)
        .map(|(a, &b)| (a - b).abs() / b.abs().max(1.0))
        .fold(0.0, f64::max)
}

/// Reads every array of an .npz written by numpy (all float64 here).
fn read_npz(path: &Path) -> BTreeMap<String, ArrayD<f64>> {
    let mut npz = NpzReader::new(std::fs::File::open(path).unwrap()).unwrap();
    let names = npz.names().unwrap();
    names
        .into_iter()
        .map(|n| {
            let a: ArrayD<f64> = npz.by_name(&n).unwrap();
            (n.trim_end_matches(".npy").to_string(), a)
        })
        .collect()
}

fn normal(rng: &mut Rng8) -> f32 {
    StandardNormal.sample(rng)
}

#[test]
fn lnamd_and_bilinear_match_numpy() {
    let mut rng = Rng8::seed_from_u64(21);
    let cases: [LnamdCase; 7] = [
        ("rect_r1", (7, 9), 16, 1, "normal"),
        ("rect_r3", (7, 9), 16, 3, "normal"),
        ("rect_r5", (7, 9), 16, 5, "normal"),
        ("row_r3", (1, 6), 5, 3, "normal"),
        ("ties_r5", (5, 5), 4, 5, "integers"),
        ("constant_r3", (4, 4), 8, 3, "constant"),
        ("full_r3", (37, 37), 384, 3, "normal"),
    ];
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("lnamd_in.npz");
    let output = dir.path().join("lnamd_out.npz");
    let mut ours: BTreeMap<String, (Array2<f32>, Array2<f32>)> = BTreeMap::new();
    let mut maps: BTreeMap<String, Array2<f32>> = BTreeMap::new();
    {
        let mut npz = NpzWriter::new(std::fs::File::create(&input).unwrap());
        for &(name, grid, c, r, kind) in &cases {
            let m = grid.0 * grid.1;
            let tokens = Array2::from_shape_fn((m, c), |(p, ch)| match kind {
                "normal" => 3.0 + 2.0 * normal(&mut rng) + 0.01 * (p + ch) as f32,
                "integers" => rng.random_range(0..3) as f32,
                _ => 1.75,
            });
            npz.add_array(format!("tokens_{name}"), &tokens).unwrap();
            npz.add_array(
                format!("grid_{name}"),
                &Array1::from(vec![grid.0 as i64, grid.1 as i64]),
            )
            .unwrap();
            npz.add_array(format!("r_{name}"), &Array1::from(vec![r as i64]))
                .unwrap();
            let normed = mri_ad::tokens::lnamd::layer_norm_map(tokens.view());
            let b = box_mean(normed.view(), grid, r).unwrap();
            let z = lnamd(tokens.view(), grid, r).unwrap();
            ours.insert(name.to_string(), (b, z));
        }
        // Bilinear: a generic case, the real 37 → 518 case, a one-row grid, a one-cell grid, one output pixel.
        let bil: [BilinearCase; 5] = [
            ("generic", (5, 7), (23, 31)),
            ("musc", (37, 37), (518, 518)),
            ("onerow", (1, 4), (3, 9)),
            ("onecell", (1, 1), (4, 5)),
            ("onepixel", (3, 4), (1, 1)),
        ];
        for (name, g, size) in bil {
            let map = Array2::from_shape_fn(g, |_| normal(&mut rng));
            npz.add_array(format!("map_{name}"), &map).unwrap();
            npz.add_array(
                format!("size_{name}"),
                &Array1::from(vec![size.0 as i64, size.1 as i64]),
            )
            .unwrap();
            maps.insert(name.to_string(), upsample_bilinear(map.view(), size));
        }
        npz.finish().unwrap();
    }
    run_script("oracles/ref_lnamd.py", &[s(&input), s(&output)]);
    let reference = read_npz(&output);
    let get = |k: &str| {
        reference
            .get(k)
            .unwrap_or_else(|| panic!("reference lacks {k}"))
    };

    let tol = 1e-5;
    let mut worst = 0.0f64;
    for &(name, grid, _, r, kind) in &cases {
        let (b, z) = &ours[name];
        let d_box = max_diff(
            b.iter().map(|&v| v as f64),
            get(&format!("box_{name}")).iter(),
        );
        let d_z = max_diff(
            z.iter().map(|&v| v as f64),
            get(&format!("lnamd_{name}")).iter(),
        );
        println!("LNAMD {name}: box {d_box:.2e}, output {d_z:.2e}");
        assert!(d_box <= tol, "{name}: box mean differs by {d_box}");
        assert!(d_z <= tol, "{name}: LNAMD differs by {d_z}");
        worst = worst.max(d_box).max(d_z);
        if kind == "constant" {
            assert!(
                z.iter().all(|&v| v == 0.0),
                "a constant map must give zero tokens"
            );
            continue;
        }
        if r > 1 && grid.0 > 1 {
            // The wrong divisor (in-grid count) and the wrong padding (edge) are far outside the tolerance.
            let d_count = max_diff(
                b.iter().map(|&v| v as f64),
                get(&format!("boxcount_{name}")).iter(),
            );
            let d_edge = max_diff(
                z.iter().map(|&v| v as f64),
                get(&format!("lnamdedge_{name}")).iter(),
            );
            println!("  wrong divisor {d_count:.2e}, wrong padding {d_edge:.2e}");
            assert!(
                d_count > 100.0 * tol,
                "{name}: divisor r² not distinguishable"
            );
            assert!(
                d_edge > 100.0 * tol,
                "{name}: zero padding not distinguishable"
            );
        }
    }
    for (name, up) in &maps {
        let d = max_diff(
            up.iter().map(|&v| v as f64),
            get(&format!("up_{name}")).iter(),
        );
        println!("bilinear {name}: {d:.2e}");
        assert_eq!(
            up.shape(),
            get(&format!("up_{name}")).shape(),
            "bilinear {name} shape"
        );
        assert!(d <= tol, "bilinear {name} differs by {d}");
        worst = worst.max(d);
    }
    println!("LNAMD + bilinear: max difference {worst:.2e}");

    // Speed at the real size: M = 1369, C = 1024 (printed; the parity above is the check).
    let big = Array2::from_shape_fn((1369, 1024), |_| normal(&mut rng));
    for r in [1, 3, 5] {
        let t = Instant::now();
        let z = lnamd(big.view(), (37, 37), r).unwrap();
        let ms = t.elapsed().as_secs_f64() * 1e3;
        println!("LNAMD 1369×1024 r={r}: {ms:.1} ms");
        assert_eq!(z.dim(), (1369, 1024));
    }
    let t = Instant::now();
    let ln = mri_ad::tokens::lnamd::layer_norm_map(big.view());
    println!(
        "  of which layer norm: {:.1} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    let t = Instant::now();
    box_mean(ln.view(), (37, 37), 5).unwrap();
    println!(
        "  of which box mean r=5: {:.1} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
}

#[test]
fn rscin_matches_numpy() {
    let mut rng = Rng8::seed_from_u64(5);
    // (name, N, D, windows, kind)
    let cases: Vec<(&str, usize, usize, Vec<usize>, &str)> = vec![
        ("raw_dot", 12, 8, vec![1, 2, 3], "normal"),
        ("unit", 10, 16, vec![1, 8, 9], "unit"),
        ("ties", 9, 3, vec![1, 2, 3], "binary"),
        ("equal_raw", 6, 4, vec![1, 2, 3], "equal"),
    ];
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("rscin_in.npz");
    let output = dir.path().join("rscin_out.npz");
    let mut ours: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    {
        let mut npz = NpzWriter::new(std::fs::File::create(&input).unwrap());
        for (name, n, d, windows, kind) in &cases {
            let mut emb = Array2::from_shape_fn((*n, *d), |(_, j)| match *kind {
                // binary vectors with a constant first coordinate: many equal dot products, none zero
                "binary" => {
                    if j == 0 {
                        1.0
                    } else {
                        rng.random_range(0..2) as f32
                    }
                }
                _ => 0.5 + normal(&mut rng),
            });
            if *kind == "unit" {
                for mut row in emb.rows_mut() {
                    let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
                    row.mapv_inplace(|v| v / norm);
                }
            }
            let raw: Vec<f64> = if *kind == "equal" {
                vec![0.7; *n]
            } else {
                // raw scores quantised to give ties in ŝ too
                (0..*n)
                    .map(|_| (rng.random::<f64>() * 8.0).floor() / 4.0 + 1.0)
                    .collect()
            };
            npz.add_array(format!("raw_{name}"), &Array1::from(raw.clone()))
                .unwrap();
            npz.add_array(format!("emb_{name}"), &emb).unwrap();
            npz.add_array(
                format!("windows_{name}"),
                &Array1::from(windows.iter().map(|&k| k as i64).collect::<Vec<_>>()),
            )
            .unwrap();
            ours.insert(name.to_string(), rscin(&raw, emb.view(), windows).unwrap());
        }
        npz.finish().unwrap();
    }
    run_script("oracles/ref_rscin.py", &[s(&input), s(&output)]);
    let reference = read_npz(&output);
    let mut worst = 0.0f64;
    for (name, ..) in &cases {
        let r = &reference[&format!("out_{name}")];
        let d = max_diff(ours[*name].iter().copied(), r.iter());
        println!("RsCIN {name}: {d:.2e}");
        assert!(
            d <= 1e-9,
            "RsCIN {name} differs by {d}: {:?} vs {r}",
            ours[*name]
        );
        worst = worst.max(d);
        if *name == "ties" {
            let hi = &reference[&format!("outhi_{name}")];
            let d_hi = max_diff(ours[*name].iter().copied(), hi.iter());
            println!("  with the opposite tie rule: {d_hi:.2e}");
            assert!(d_hi > 1e-3, "the tie case does not exercise the tie rule");
        }
        if *name == "equal_raw" {
            assert!(ours[*name].iter().all(|&v| v == 0.0));
        }
    }
    println!("RsCIN: max difference {worst:.2e}");
}

/// A ground-truth shape painted into a mask.
enum Shape {
    Disk(f64, f64, f64),
    Rect(usize, usize, usize, usize),
    Pixel(usize, usize),
}

fn paint(size: (usize, usize), shapes: &[Shape]) -> Array2<bool> {
    Array2::from_shape_fn(size, |(i, j)| {
        shapes.iter().any(|sh| match *sh {
            Shape::Disk(cy, cx, r) => (i as f64 - cy).powi(2) + (j as f64 - cx).powi(2) <= r * r,
            Shape::Rect(y0, y1, x0, x1) => (y0..y1).contains(&i) && (x0..x1).contains(&j),
            Shape::Pixel(y, x) => (i, j) == (y, x),
        })
    })
}

#[test]
fn aupro_matches_numpy() {
    use mri_ad::eval::aupro::{aupro, label_regions_8};
    use Shape::*;
    let mut rng = Rng8::seed_from_u64(13);
    // Several images of different sizes: blobs, a single pixel, a diagonal pair (one region only with
    // 8-connectivity), a region in the corner, an elongated region touching the border, a healthy image.
    let masks = vec![
        paint(
            (40, 50),
            &[
                Disk(10.0, 12.0, 4.0),
                Disk(28.0, 35.0, 6.0),
                Pixel(3, 40),
                Pixel(20, 44),
                Pixel(21, 45),
            ],
        ),
        paint((40, 50), &[Rect(0, 5, 0, 7), Rect(15, 18, 30, 50)]),
        paint((32, 36), &[]),
        paint((45, 30), &[Disk(22.0, 15.0, 9.0), Pixel(44, 0)]),
    ];
    // Maps: textured background plus a raise of different strength per image inside the masks, so PRO
    // varies with the threshold and regions are partly found.
    let maps: Vec<Array2<f32>> = masks
        .iter()
        .enumerate()
        .map(|(n, mask)| {
            Array2::from_shape_fn(mask.dim(), |(i, j)| {
                let texture = 0.3 * ((i as f32 * 0.4 + n as f32).sin() * (j as f32 * 0.3).cos());
                let raise = if mask[[i, j]] {
                    0.1 + 0.1 * n as f32
                } else {
                    0.0
                };
                texture + raise + 0.5 * rng.random::<f32>()
            })
        })
        .collect();
    let quantised: Vec<Array2<f32>> = maps
        .iter()
        .map(|m| m.mapv(|v| (v * 4.0).round() / 4.0))
        .collect();
    let constant: Vec<Array2<f32>> = masks
        .iter()
        .map(|m| Array2::from_elem(m.dim(), 0.25))
        .collect();
    let perfect: Vec<Array2<f32>> = masks
        .iter()
        .map(|m| {
            m.mapv(|v| {
                if v {
                    2.0 + rng.random::<f32>()
                } else {
                    rng.random::<f32>()
                }
            })
        })
        .collect();
    let healthy: Vec<Array2<bool>> = masks
        .iter()
        .map(|m| Array2::from_elem(m.dim(), false))
        .collect();
    let cases: [AuproCase; 5] = [
        ("noisy", &maps, &masks),
        ("ties", &quantised, &masks),
        ("constant", &constant, &masks),
        ("perfect", &perfect, &masks),
        ("noregion", &maps, &healthy),
    ];

    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("aupro_in.npz");
    let output = dir.path().join("aupro_out.npz");
    {
        let mut npz = NpzWriter::new(std::fs::File::create(&input).unwrap());
        for (name, mp, mk) in &cases {
            for (i, (m, k)) in mp.iter().zip(mk.iter()).enumerate() {
                npz.add_array(format!("map__{name}__{i}"), m).unwrap();
                npz.add_array(format!("mask__{name}__{i}"), k).unwrap();
            }
        }
        npz.finish().unwrap();
    }
    run_script("oracles/ref_aupro.py", &[s(&input), s(&output)]);
    let reference = read_npz(&output);

    // Region labels: identical to scipy.ndimage.label with a 3×3 structure.
    let mut regions = 0;
    for (i, mask) in masks.iter().enumerate() {
        let (labels, n) = label_regions_8(mask.view());
        let r = &reference[&format!("labels__noisy__{i}")];
        assert!(
            labels.iter().zip(r.iter()).all(|(&a, &b)| a as f64 == b),
            "image {i}: labels differ from scipy"
        );
        assert_eq!(n as f64, r.iter().copied().fold(0.0, f64::max));
        regions += n;
    }
    assert_eq!(
        regions,
        8, // 4 (two disks, a pixel, the diagonal pair) + 2 + 0 + 2
        "the diagonal pair must be one region"
    );

    let mut worst = 0.0f64;
    for (name, mp, mk) in &cases {
        let views: Vec<_> = mp.iter().map(|m| m.view()).collect();
        let mviews: Vec<_> = mk.iter().map(|m| m.view()).collect();
        let ours = aupro(&views, &mviews).unwrap();
        let r = reference[&format!("aupro_{name}")][0];
        let r03 = reference[&format!("aupro03_{name}")][0];
        println!("AUPRO {name}: ours {ours:?}, numpy {r}, numpy with /0.3 {r03}");
        match ours {
            Some(a) => {
                assert!((a - r).abs() <= 1e-9, "{name}: AUPRO {a} vs {r}");
                worst = worst.max((a - r).abs());
            }
            None => assert!(r.is_nan(), "{name}: ours None, numpy {r}"),
        }
        match *name {
            "noisy" | "ties" => {
                let a = ours.unwrap();
                assert!(
                    a > 0.05 && a < 0.95,
                    "{name}: AUPRO {a} does not exercise the curve"
                );
                assert!(
                    (a - r03).abs() > 1e-3,
                    "{name}: rescaling not distinguishable from /0.3"
                );
            }
            "perfect" => assert!((ours.unwrap() - 1.0).abs() < 1e-12),
            _ => assert!(ours.is_none(), "{name} must be undefined"),
        }
    }
    println!("AUPRO: max difference {worst:.2e}");
}

#[test]
fn gmm_threshold_matches_numpy() {
    use mri_ad::eval::gmm::{gmm_threshold, DEFAULT_ALPHA_TAIL, DEFAULT_Q_TR};
    let mut rng = Rng8::seed_from_u64(34);
    let mut gauss = |n: usize, mu: f32, sd: f32| -> Vec<f32> {
        (0..n).map(|_| mu + sd * normal(&mut rng)).collect()
    };
    let two: Vec<f32> = [
        gauss(3000, 1.0, 0.3),
        gauss(2000, 3.0, 0.5),
        gauss(100, 10.0, 1.0),
    ]
    .concat();
    let one = gauss(5000, 2.0, 0.7);
    let ties: Vec<f32> = [gauss(800, 0.0, 1.0), gauss(400, 2.5, 0.6)]
        .concat()
        .iter()
        .map(|v| (v * 4.0).round() / 4.0)
        .collect();
    let small = gauss(7, 0.0, 1.0);
    // A realistic per-image map: a 37×37 score grid with a hot blob, upsampled to 259×259.
    let noise = gauss(37 * 37, 0.0, 0.04);
    let grid = Array2::from_shape_fn((37, 37), |(i, j)| {
        let blob = if (i as f32 - 25.0).powi(2) + (j as f32 - 10.0).powi(2) < 16.0 {
            0.3
        } else {
            0.0
        };
        0.35 + noise[i * 37 + j] + blob
    });
    let map: Vec<f32> = upsample_bilinear(grid.view(), (259, 259))
        .iter()
        .copied()
        .collect();
    let cases: Vec<(&str, Vec<f32>, f64, f64)> = vec![
        ("two", two, DEFAULT_Q_TR, DEFAULT_ALPHA_TAIL),
        ("one", one.clone(), 1.0, DEFAULT_ALPHA_TAIL),
        ("one_truncated", one, DEFAULT_Q_TR, DEFAULT_ALPHA_TAIL),
        ("ties", ties, 0.9, 0.05),
        ("constant", vec![0.5; 100], DEFAULT_Q_TR, DEFAULT_ALPHA_TAIL),
        ("small", small, 0.8, 0.2),
        ("single", vec![1.25], DEFAULT_Q_TR, DEFAULT_ALPHA_TAIL),
        ("map", map, DEFAULT_Q_TR, DEFAULT_ALPHA_TAIL),
    ];
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("gmm_in.npz");
    let output = dir.path().join("gmm_out.npz");
    let mut ours = BTreeMap::new();
    {
        let mut npz = NpzWriter::new(std::fs::File::create(&input).unwrap());
        for (name, values, q, a) in &cases {
            npz.add_array(format!("values_{name}"), &Array1::from(values.clone()))
                .unwrap();
            npz.add_array(format!("params_{name}"), &Array1::from(vec![*q, *a]))
                .unwrap();
            let t = Instant::now();
            let g = gmm_threshold(values, *q, *a).unwrap();
            println!(
                "GMM {name}: {} values, {:.1} ms",
                values.len(),
                t.elapsed().as_secs_f64() * 1e3
            );
            ours.insert(name.to_string(), g);
        }
        npz.finish().unwrap();
    }
    run_script("oracles/ref_gmm.py", &[s(&input), s(&output)]);
    let reference = read_npz(&output);
    let mut worst = 0.0f64;
    let mut chosen = Vec::new();
    for (name, ..) in &cases {
        let g = &ours[*name];
        let r = |k: &str| {
            reference[&format!("{k}_{name}")]
                .iter()
                .copied()
                .collect::<Vec<f64>>()
        };
        assert_eq!(
            g.components as f64,
            r("components")[0],
            "{name}: K differs: {g:?}"
        );
        let diffs = [
            ("tau", max_diff([g.tau], &r("tau"))),
            ("means", max_diff(g.means.clone(), &r("means"))),
            ("stds", max_diff(g.stds.clone(), &r("stds"))),
            ("weights", max_diff(g.weights.clone(), &r("weights"))),
            ("bic", max_diff(g.bic, &r("bic"))),
            ("truncation", max_diff([g.truncation], &r("truncation"))),
        ];
        println!(
            "GMM {name}: K = {}, τ = {:.6}, diffs {diffs:?}",
            g.components, g.tau
        );
        for (what, d) in diffs {
            assert!(d <= 1e-6, "{name}: {what} differs by {d}: {g:?}");
            worst = worst.max(d);
        }
        chosen.push(g.components);
    }
    // Both model choices are exercised, and the two-cluster case finds its clusters.
    assert!(chosen.contains(&1) && chosen.contains(&2), "{chosen:?}");
    let two = &ours["two"];
    assert_eq!(two.components, 2);
    assert!(
        (two.means[0] - 1.0).abs() < 0.1 && (two.means[1] - 3.0).abs() < 0.2,
        "{two:?}"
    );
    println!("GMM: max difference {worst:.2e}");
}
