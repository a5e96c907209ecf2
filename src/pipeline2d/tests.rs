//! Unit tests of the parent module.

use super::*;
use crate::backbone::fake::FakeEmbedder;
use ndarray::Array2;

#[test]
fn void_background_names_round_trip() {
    for name in VoidBackground::NAMES {
        assert_eq!(name.parse::<VoidBackground>().unwrap().to_string(), name);
    }
    assert!("maybe"
        .parse::<VoidBackground>()
        .unwrap_err()
        .contains("auto"));
}

#[test]
fn a_run_with_the_fake_backbone_returns_what_a_plot_needs() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("img");
    std::fs::create_dir_all(&images).unwrap();
    for i in 0..5u32 {
        let img = image::GrayImage::from_fn(40 + i, 44, |x, y| {
            let bump = if i == 0 && x > 20 && y > 20 { 55 } else { 0 };
            image::Luma([((x * 7 + y * 3 + i * 11) % 200) as u8 + bump])
        });
        img.save(images.join(format!("c{i}.png"))).unwrap();
    }
    let out = dir.path().join("run");
    let cfg = Score2dConfig {
        images: images.clone(),
        masks: None,
        out: out.clone(),
        model: "unused.onnx".into(),
        ort_lib: None,
        device: Device::Cpu,
        batch: 2,
        layers: vec![1, 2],
        size: 42,
        degrees: vec![1, 3],
        rscin_windows: vec![1, 2],
        void_background: VoidBackground::Auto,
        score: ScoreConfig {
            leiden_restarts: 4,
            ..ScoreConfig::default()
        },
        force: false,
        report: crate::messages::Reporter::silent(),
        progress: false,
    };
    let twice = Score2dConfig {
        layers: vec![2, 2],
        ..cfg.clone()
    };
    let err = twice.validate().unwrap_err().to_string();
    assert!(
        err.contains("--layers") && err.contains("twice"),
        "as extract: {err}"
    );
    // block-major views: (block 1, r 1), (1, 3), (2, 1), (2, 3): the r = 1 views feed the graph
    assert_eq!(cfg.effective_score().graph_views, vec![0, 2]);
    let inputs = prepare(&cfg, "sha").unwrap();
    assert!(!out.exists(), "prepare writes nothing");
    let mut fake = FakeEmbedder::new(&[1, 2], 8, 0);
    let run = run_with(&cfg, inputs, &mut fake, "sha").unwrap();
    assert_eq!((fake.images_embedded, fake.calls), (5, 3));
    assert_eq!(run.layout, "plain");
    let class = &run.classes[0];
    assert_eq!(class.out, out);
    assert_eq!(class.grid, (3, 3));
    assert_eq!(class.cases.len(), 5);
    assert_eq!(class.cases[2].size, (44, 42));
    assert!(class.graph().is_some());
    for (a, c) in class.cases.iter().enumerate() {
        assert!(c.label.is_none() && c.group == "image");
        let scores = &class.result.token_scores[a];
        assert_eq!(scores.len(), 9);
        // the raw score is the maximum of the written map, which has the image's size; the map
        // interpolates the tokens, so it never exceeds them (align corners: it hits only the grid
        // points whose coordinates o·(g−1)/(s−1) are integers)
        let map: Array2<f32> =
            ndarray_npy::read_npy(out.join(format!("maps/{}.npy", c.name))).unwrap();
        assert_eq!(map.dim(), c.size);
        let map_max = map.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let token_max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        assert_eq!(c.raw_score, map_max as f64);
        assert!(map_max <= token_max && map[[0, 0]] == scores[0]);
        assert!(c.score.is_finite());
        assert!(out.join(format!("overlays/{}.png", c.name)).is_file());
    }
    assert_eq!(run.summary.details["views"].as_array().unwrap().len(), 4);
    assert!(run.summary.metrics.is_none());
}
