//! Unit tests of the parent module.

use super::testutil::decode;
use super::*;

#[test]
fn log_ticks_are_unique_sorted_and_inside_the_range() {
    let (bold, light) = log_ticks(0.004, 0.35);
    assert_eq!(bold, vec![0.005, 0.01, 0.02, 0.05, 0.1, 0.2]);
    assert_eq!(light.len(), 5 + 6 + 1, "{light:?}");
    assert!(light.contains(&0.009) && light.contains(&0.3), "{light:?}");
    let mut all: Vec<f64> = bold.iter().chain(&light).copied().collect();
    all.sort_by(f64::total_cmp);
    all.dedup();
    assert_eq!(all.len(), bold.len() + light.len(), "a tick appears twice");
    assert!(all.iter().all(|&v| (0.004..=0.35).contains(&v)));
    assert_eq!(log_ticks(1.0, 29.0).0, vec![1.0, 2.0, 5.0, 10.0, 20.0]);
    assert_eq!(log_ticks(0.0, 1.0), (vec![], vec![]));
    let labels: Vec<String> = [0.005, 0.05, 0.3, 1.0, 20.0].map(log_tick_label).into();
    assert_eq!(labels, ["0.005", "0.05", "0.3", "1", "20"]);
}

#[test]
fn roc_points_step_through_ties_and_end_at_one() {
    let pts = roc_points(&[0.9, 0.8, 0.8, 0.1], &[true, true, false, false]);
    assert_eq!(pts, vec![(0.0, 0.0), (0.0, 0.5), (0.5, 1.0), (1.0, 1.0)]);
    assert!(roc_points(&[0.1, 0.2], &[true, true]).is_empty());
}

#[test]
fn charts_decode_with_their_size_and_draw_text_and_curves() {
    let dir = tempfile::tempdir().unwrap();
    let roc = dir.path().join("roc.png");
    roc_curve(&roc, &[0.9, 0.7, 0.4, 0.2], &[true, false, true, false]).unwrap();
    let (w, h, px) = decode(&roc);
    assert_eq!((w, h), (640, 600));
    // The curve colour is present, and so is dark text (the title).
    let c = palette(0);
    let has = |rgb: (u8, u8, u8)| px.chunks(3).any(|p| (p[0], p[1], p[2]) == rgb);
    assert!(has((c.0, c.1, c.2)));
    let dark_top = px[..(40 * w as usize * 3)]
        .chunks(3)
        .filter(|p| p[0] < 80 && p[1] < 80 && p[2] < 80)
        .count();
    assert!(dark_top > 50, "title glyphs drawn: {dark_top} dark pixels");
    // Undefined ROC (one class) and odd histogram inputs still give images.
    roc_curve(&roc, &[0.5, 0.5], &[true, true]).unwrap();
    let hist = dir.path().join("hist.png");
    score_histograms(
        &hist,
        &[
            ("healthy".into(), vec![0.3, 0.3, 0.3]),
            ("query".into(), vec![]),
        ],
        &[("healthy".into(), vec![0.3; 10])],
    )
    .unwrap();
    assert_eq!(decode(&hist).0, 1200);
    score_histograms(&hist, &[], &[]).unwrap();
    // No temporary file is left behind.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");
}

#[test]
fn scaling_plot_draws_both_curves_and_survives_an_empty_curve() {
    use crate::score::scaling::TauBuffer;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scaling.png");
    // A table whose rows follow m_i = i (τ_i = ln((i+1)/i) ≈ 1/i) and one flagged row with a jump.
    let n = 12;
    let mut dist = Vec::new();
    for r in 0..4 {
        for b in 0..n {
            dist.push(if b == r {
                f32::INFINITY
            } else if r == 3 && b > 6 {
                50.0 * (b + 1) as f32
            } else {
                (b + 1) as f32
            });
        }
    }
    let table = crate::knn::DistTable {
        n_collections: n,
        offsets: vec![0, 4],
        arg: vec![crate::knn::NO_TOKEN; 4 * n],
        dist,
        compared: 0,
    };
    let mut buf = TauBuffer::new(4, n);
    buf.add_table(&table, crate::score::msm::Distance::Euclidean);
    let curve = buf.finish(&[4], |_| true, |r| r == 3, "test");
    similarity_scaling(&path, &curve).unwrap();
    let (w, h, px) = decode(&path);
    assert_eq!((w, h), (900, 640));
    for c in [palette(0), palette(3)] {
        assert!(
            px.chunks(3).any(|p| (p[0], p[1], p[2]) == (c.0, c.1, c.2)),
            "curve colour {c:?} drawn"
        );
    }
    let empty = TauBuffer::new(0, 3).finish(&[], |_| true, |_| false, "none");
    similarity_scaling(&path, &empty).unwrap();
    let (_, _, px) = decode(&path);
    let c = palette(3);
    assert!(!px.chunks(3).any(|p| (p[0], p[1], p[2]) == (c.0, c.1, c.2)));
}
