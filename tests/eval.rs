//! Metrics against scikit-learn and an independent numpy/scipy Dice protocol (scripts/oracles/ref_metrics.py):
//! ties, a single class, an empty lesion mask and healthy cases included.

mod common;

use common::{run_script, s};
use mri_ad::eval::{auroc, average_precision, dice_protocol, f1_max, Upsample};
use ndarray::Array3;
use ndarray_npy::NpzWriter;
use rand::{Rng, SeedableRng};

fn close(a: f64, b: f64, what: &str) {
    assert!((a - b).abs() <= 1e-6, "{what}: ours {a}, reference {b}");
}

#[test]
fn metrics_agree_with_scikit_learn_and_numpy() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(8);
    let mut sets: Vec<(String, Vec<f32>, Vec<bool>)> = Vec::new();
    // Continuous scores; heavy ties (scores quantised to 5 levels); perfect separation; one class only.
    let n = 400;
    let labels: Vec<bool> = (0..n).map(|_| rng.random::<f32>() < 0.3).collect();
    let cont: Vec<f32> = labels
        .iter()
        .map(|&l| rng.random::<f32>() + if l { 0.4 } else { 0.0 })
        .collect();
    let ties: Vec<f32> = cont.iter().map(|v| (v * 4.0).floor() / 4.0).collect();
    let perfect: Vec<f32> = labels.iter().map(|&l| if l { 2.0 } else { 1.0 }).collect();
    sets.push(("continuous".into(), cont.clone(), labels.clone()));
    sets.push(("ties".into(), ties, labels.clone()));
    sets.push(("perfect".into(), perfect, labels.clone()));
    sets.push(("negatives_only".into(), cont.clone(), vec![false; n]));
    sets.push(("positives_only".into(), cont, vec![true; n]));

    // Dice protocol: 4 cases on a 4³ token grid (56³ voxels): two with lesions, one healthy, one whose
    // lesion the map misses.
    let g = 4;
    let size = 14 * g;
    let mut maps = Vec::new();
    let mut masks = Vec::new();
    for case in 0..4 {
        let centre = [20 + 5 * case, 28, 30 - 3 * case];
        let mask = Array3::from_shape_fn((size, size, size), |(z, y, x)| {
            let d2 = [z, y, x]
                .iter()
                .zip(centre)
                .map(|(&a, c)| (a as f64 - c as f64).powi(2))
                .sum::<f64>();
            case != 2 && d2 < 81.0
        });
        let lesion_tokens = mri_ad::eval::pool_labels(mask.view(), 14);
        let map = Array3::from_shape_fn((g, g, g), |(z, y, x)| {
            let hot = case != 3 && lesion_tokens[[z, y, x]];
            rng.random::<f32>() * 0.5 + if hot { 1.0 } else { 0.0 }
        });
        maps.push(map);
        masks.push(mask);
    }

    // Points for the hottest-voxel distance: inside, on the edge, near and far from the lesions.
    let points = ndarray::Array2::from_shape_vec(
        (5, 3),
        vec![20u64, 28, 30, 29, 28, 30, 33, 35, 24, 0, 0, 0, 55, 55, 55],
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.npz");
    {
        let mut npz = NpzWriter::new(std::fs::File::create(&path).unwrap());
        for (name, sc, lb) in &sets {
            npz.add_array(format!("scores_{name}"), &ndarray::Array1::from(sc.clone()))
                .unwrap();
            npz.add_array(format!("labels_{name}"), &ndarray::Array1::from(lb.clone()))
                .unwrap();
        }
        for (i, (m, k)) in maps.iter().zip(&masks).enumerate() {
            npz.add_array(format!("tokens_{i}"), m).unwrap();
            npz.add_array(format!("mask_{i}"), k).unwrap();
            npz.add_array(format!("points_{i}"), &points).unwrap();
        }
        npz.finish().unwrap();
    }
    let out = run_script("oracles/ref_metrics.py", &[s(&path)]);
    let reference: serde_json::Value = serde_json::from_str(out.trim()).unwrap();

    for (name, sc, lb) in &sets {
        let r = &reference["sets"][name];
        match (auroc(sc, lb), r["auroc"].as_f64()) {
            (Some(a), Some(b)) => close(a, b, &format!("{name} AUROC")),
            (a, b) => assert!(a.is_none() && b.is_none(), "{name} AUROC: {a:?} vs {b:?}"),
        }
        match (average_precision(sc, lb), r["ap"].as_f64()) {
            (Some(a), Some(b)) => close(a, b, &format!("{name} AP")),
            (a, b) => assert!(a.is_none() && b.is_none(), "{name} AP: {a:?} vs {b:?}"),
        }
        match (f1_max(sc, lb), r["f1max"].as_array()) {
            (Some((f, t)), Some(b)) => {
                close(f, b[0].as_f64().unwrap(), &format!("{name} F1-max"));
                close(t, b[1].as_f64().unwrap(), &format!("{name} F1 threshold"));
            }
            (a, b) => assert!(a.is_none() && b.is_none(), "{name} F1: {a:?} vs {b:?}"),
        }
    }
    let mut dice_by_mode = Vec::new();
    for mode in [Upsample::Centres, Upsample::Corners] {
        let ours = dice_protocol(&maps, &masks, 14, mode);
        // §8.3 at t*, then the supplementary Dice at the exact voxel-level F1-max threshold.
        for (what, ours, r) in [
            ("t*", &ours.at_t_star, &reference["dice"][mode.to_string()]),
            (
                "voxel threshold",
                &ours.at_voxel_threshold,
                &reference["dice"][mode.to_string()]["at_voxel_threshold"],
            ),
        ] {
            close(
                ours.threshold.unwrap(),
                r["threshold"].as_f64().unwrap(),
                &format!("{what} ({mode})"),
            );
            for (i, d) in ours.per_case.iter().enumerate() {
                close(
                    *d,
                    r["per_case"][i].as_f64().unwrap(),
                    &format!("Dice case {i} at {what} ({mode})"),
                );
            }
            close(
                ours.mean,
                r["mean"].as_f64().unwrap(),
                &format!("mean Dice at {what}"),
            );
            close(
                ours.mean_lesion.unwrap(),
                r["mean_lesion"].as_f64().unwrap(),
                &format!("lesion Dice at {what}"),
            );
        }
        close(
            ours.at_voxel_threshold.f1_max.unwrap(),
            reference["dice"][mode.to_string()]["at_voxel_threshold"]["f1max"]
                .as_f64()
                .unwrap(),
            "voxel F1-max",
        );
        // Token-level Dice per case (the token grid does not depend on the upsampling).
        assert_eq!(ours.token_per_case.len(), 4);
        for (i, d) in ours.token_per_case.iter().enumerate() {
            close(
                *d,
                reference["token_dice"][i].as_f64().unwrap(),
                &format!("token Dice, case {i}"),
            );
        }
        let (t_star, v) = (&ours.at_t_star, &ours.at_voxel_threshold);
        assert_ne!(ours.token_per_case, t_star.per_case);
        // The two thresholds differ here, and so do the Dice values.
        assert!(
            (v.threshold.unwrap() - t_star.threshold.unwrap()).abs() > 1e-3,
            "{v:?}"
        );
        assert_ne!(v.per_case, t_star.per_case);
        dice_by_mode.push(ours.at_t_star.per_case);
    }
    // The two upsamplings place the maps differently, so the comparison tells them apart.
    assert_ne!(dice_by_mode[0], dice_by_mode[1]);
    let ours = dice_protocol(&maps, &masks, 14, Upsample::Centres);
    // The hottest-voxel distance (eval::distance_to_mask) against scipy's Euclidean distance transform, on
    // every case with a lesion (case 2 has none: no distance).
    let mut inside = 0;
    for (i, mask) in masks.iter().enumerate() {
        for (k, p) in points.outer_iter().enumerate() {
            let ours = mri_ad::eval::distance_to_mask(
                mask.view(),
                (p[0] as usize, p[1] as usize, p[2] as usize),
            );
            match reference["distance"][i.to_string()][k].as_f64() {
                Some(r) => {
                    close(ours.unwrap(), r, &format!("distance case {i} point {k}"));
                    inside += (r == 0.0) as usize;
                }
                None => assert!(ours.is_none() && !mask.iter().any(|&v| v), "case {i}"),
            }
        }
    }
    assert!(
        inside > 0 && inside < 15,
        "points both inside and outside: {inside}"
    );
    // The healthy case predicted empty gets 1 by convention; the missed lesion 0: the protocol is exercised.
    println!(
        "Dice per case {:?}, t* = {:?}",
        ours.at_t_star.per_case, ours.at_t_star.threshold
    );
    assert!(ours.at_t_star.per_case.iter().any(|&d| d > 0.3 && d < 1.0));
}
