//! Unit tests of the parent module.

use super::*;

#[test]
fn distance_to_mask_is_zero_inside_and_euclidean_outside() {
    let mut m = Array3::from_elem((6, 7, 8), false);
    assert_eq!(distance_to_mask(m.view(), (1, 1, 1)), None);
    m[[2, 3, 4]] = true;
    m[[5, 6, 7]] = true;
    assert_eq!(distance_to_mask(m.view(), (2, 3, 4)), Some(0.0));
    assert_eq!(distance_to_mask(m.view(), (2, 3, 5)), Some(1.0));
    // nearest is (2,3,4): (0,1,2) away → √5, not (5,6,7)
    let d = distance_to_mask(m.view(), (2, 4, 6)).unwrap();
    assert!((d - 5f64.sqrt()).abs() < 1e-12, "{d}");
    assert!((distance_to_mask(m.view(), (5, 6, 5)).unwrap() - 2.0).abs() < 1e-12);
}

#[test]
fn upsample_names_round_trip_through_text_and_serde() {
    for u in Upsample::ALL {
        assert_eq!(u.to_string().parse::<Upsample>(), Ok(u));
        assert_eq!(serde_json::to_value(u).unwrap(), u.name());
    }
    assert!("center"
        .parse::<Upsample>()
        .unwrap_err()
        .contains("centres"));
}

#[test]
fn a_hot_token_peaks_inside_its_own_block_with_centres_only() {
    // One hot token at axis position i of a 16-cell axis over 224 voxels. Centres: every voxel at the
    // maximum lies in the token's own block and the block's middle (voxel 14i+6 or 14i+7) is one of
    // them. Corners: the peak is at round(i·223/15), on the cube's faces for the edge tokens.
    for i in [0usize, 3, 8, 15] {
        let grid = Array3::from_shape_fn((1, 1, 16), |(_, _, x)| (x == i) as u8 as f32);
        let maxima = |mode| {
            let up = upsample_trilinear(grid.view(), [1, 1, 224], mode);
            let top = up.iter().copied().fold(f32::MIN, f32::max);
            (0..224)
                .filter(|&o| up[[0, 0, o]] == top)
                .collect::<Vec<usize>>()
        };
        let at = maxima(Upsample::Centres);
        assert!(
            at.iter().all(|o| o / 14 == i),
            "token {i}: maxima at {at:?}"
        );
        assert!(
            at.contains(&(14 * i + 6)) || at.contains(&(14 * i + 7)),
            "token {i}: {at:?}"
        );
        let at = maxima(Upsample::Corners)[0];
        assert_eq!(at, (i as f64 * 223.0 / 15.0).round() as usize);
        if i == 0 || i == 15 {
            assert_eq!(
                at,
                i / 15 * 223,
                "the edge tokens sit on the cube's faces, 6.5 voxels out"
            );
        }
    }
}

#[test]
fn hand_computed_values() {
    // scores 0.9(+) 0.8(-) 0.8(+) 0.1(-): pairs (+,-): (0.9,0.8)=1 (0.9,0.1)=1 (0.8,0.8)=½ (0.8,0.1)=1
    let s = [0.9, 0.8, 0.8, 0.1];
    let l = [true, false, true, false];
    assert_eq!(auroc(&s, &l), Some(3.5 / 4.0));
    // thresholds 0.9: P=1 R=½; 0.8: P=2/3 R=1 → AP = ½·1 + ½·2/3
    assert!((average_precision(&s, &l).unwrap() - (0.5 + 1.0 / 3.0)).abs() < 1e-12);
    // F1 at 0.9: 2/3; at 0.8: 0.8 → best 0.8 at 0.8
    let (f1, t) = f1_max(&s, &l).unwrap();
    assert!((f1 - 0.8).abs() < 1e-12 && (t - 0.8f32 as f64).abs() < 1e-12);
    assert_eq!(auroc(&s, &[false; 4]), None);
    assert_eq!(f1_max(&s, &[false; 4]), None);
}

#[test]
fn histogram_auroc_is_close_to_the_exact_one() {
    let (scores, labels) = super::testdata::labelled_scores(1, 20000, 0.1, 1.0, 0.3);
    let mut h = ScoreHistogram::new(0.0, 1.3, 1 << 20);
    h.add(scores.iter().copied(), labels.iter().copied());
    let exact = auroc(&scores, &labels).unwrap();
    assert!(
        (h.auroc().unwrap() - exact).abs() < 1e-5,
        "{} vs {exact}",
        h.auroc().unwrap()
    );
    let mut coarse = ScoreHistogram::new(0.0, 1.3, 4);
    coarse.add(scores.iter().copied(), labels.iter().copied());
    assert!(
        (coarse.auroc().unwrap() - exact).abs() > 1e-3,
        "coarse bins must lose precision"
    );
}

#[test]
fn histogram_f1_max_is_the_exact_one_up_to_a_bin() {
    let (scores, labels) = super::testdata::labelled_scores(2, 50000, 0.05, 1.0, 0.6);
    let (exact, t_exact) = f1_max(&scores, &labels).unwrap();
    let mut h = ScoreHistogram::new(0.0, 1.6, 1 << 20);
    h.add(scores.iter().copied(), labels.iter().copied());
    let (f1, t) = h.f1_max().unwrap();
    assert!(f1 <= exact + 1e-12 && exact - f1 < 1e-3, "{f1} vs {exact}");
    assert!((t - t_exact).abs() < 1e-3, "{t} vs {t_exact}");
    // The F1 it reports is the F1 of predicting `score ≥ threshold` (the lower edge of its bin).
    let (tp, fp, pos) = scores
        .iter()
        .zip(&labels)
        .fold((0, 0, 0), |(tp, fp, pos), (&v, &l)| {
            let p = v as f64 >= t;
            (tp + (p && l) as u64, fp + (p && !l) as u64, pos + l as u64)
        });
    let direct = 2.0 * tp as f64 / (tp + fp + pos) as f64;
    assert!((direct - f1).abs() < 1e-12, "{direct} vs {f1}");
    // Four bins cannot place the threshold well.
    let mut coarse = ScoreHistogram::new(0.0, 1.6, 4);
    coarse.add(scores.iter().copied(), labels.iter().copied());
    assert!(exact - coarse.f1_max().unwrap().0 > 0.05);
    assert_eq!(ScoreHistogram::new(0.0, 1.0, 8).f1_max(), None);
}

#[test]
fn merged_histograms_equal_one_histogram_of_all_the_scores() {
    let scores = [0.1f32, 0.5, 0.5, 0.9, 0.3, 0.7];
    let labels = [false, true, false, true, false, true];
    let mut all = ScoreHistogram::new(0.0, 1.0, 8);
    all.add(scores.iter().copied(), labels.iter().copied());
    // In halves, merged in either order.
    let half = |r: std::ops::Range<usize>| {
        let mut h = ScoreHistogram::new(0.0, 1.0, 8);
        h.add(scores[r.clone()].iter().copied(), labels[r].iter().copied());
        h
    };
    for (first, second) in [(half(0..3), half(3..6)), (half(3..6), half(0..3))] {
        let mut merged = first;
        merged.merge(&second);
        assert_eq!((&merged.pos, &merged.neg), (&all.pos, &all.neg));
        assert_eq!(merged.auroc(), all.auroc());
    }
}

#[test]
#[should_panic(expected = "same bins")]
fn histograms_with_other_bins_are_not_merged() {
    let mut a = ScoreHistogram::new(0.0, 1.0, 8);
    a.merge(&ScoreHistogram::new(0.0, 2.0, 8));
}

#[test]
fn dice_convention_and_upsampling() {
    assert_eq!(
        dice([false, false].into_iter(), [false, false].into_iter()),
        1.0
    );
    assert_eq!(
        dice([true, false].into_iter(), [false, false].into_iter()),
        0.0
    );
    assert_eq!(
        dice([true, true].into_iter(), [true, false].into_iter()),
        2.0 / 3.0
    );
    let g = Array3::from_shape_fn((2, 2, 2), |(z, y, x)| (4 * z + 2 * y + x) as f32);
    let up = upsample_trilinear(g.view(), [3, 3, 3], Upsample::Corners);
    // align corners: the corners are the input values, the centre their mean.
    assert_eq!(up[[0, 0, 0]], 0.0);
    assert_eq!(up[[2, 2, 2]], 7.0);
    assert_eq!(up[[1, 1, 1]], 3.5);
    // centres: 2 cells over 4 voxels; voxels 0, 1 belong to cell 0 (sampling 0 clamped, 0.25), 2, 3 to
    // cell 1 (0.75, 1 clamped).
    let up = upsample_trilinear(g.view(), [4, 4, 4], Upsample::Centres);
    assert_eq!(up[[0, 0, 0]], 0.0);
    assert_eq!(up[[0, 0, 1]], 0.25);
    assert_eq!(up[[0, 0, 2]], 0.75);
    assert_eq!(up[[3, 3, 3]], 7.0);
    assert_eq!(up[[1, 1, 1]], 0.25 * 7.0);
    let g2 = Array2::from_shape_vec((2, 3), vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]).unwrap();
    let up2 = upsample_bilinear(g2.view(), (3, 5));
    // corners exact; row 1 is the mean of the two rows; column 1 samples x = 0.5.
    assert_eq!(up2[[0, 0]], 0.0);
    assert_eq!(up2[[2, 4]], 5.0);
    assert_eq!(up2[[1, 2]], 2.5);
    assert_eq!(up2[[0, 1]], 0.5);
    assert_eq!(upsample_bilinear(g2.view(), (1, 1))[[0, 0]], 0.0);
    let one = Array2::from_elem((1, 1), 7.0f32);
    assert!(upsample_bilinear(one.view(), (4, 3))
        .iter()
        .all(|&v| v == 7.0));
    let mask = Array3::from_shape_fn((4, 4, 4), |(z, y, x)| z == 3 && y == 0 && x == 2);
    let pooled = pool_labels(mask.view(), 2);
    assert_eq!(pooled.iter().filter(|&&v| v).count(), 1);
    assert!(pooled[[1, 0, 1]]);
}
