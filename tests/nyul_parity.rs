//! Acceptance 4 of the I/O issue: our Nyúl standardisation agrees with an independent numpy implementation
//! (`scripts/oracles/ref_nyul.py`) within 1e-4, on the same volumes: real preprocessed cubes (the geometry test
//! volumes, whose intensities are smooth with a bright blob) plus synthetic cubes with skewed, integer
//! (tied) and negative intensity distributions.

mod common;

use mri_ad::formats::nifti;
use mri_ad::volume::nyul::{self, NyulModel};
use mri_ad::volume::{CropMode, PreprocessConfig, Preprocessor};
use ndarray::Array3;
use ndarray_npy::WriteNpyExt;
use rand::{Rng, SeedableRng};

#[test]
fn nyul_matches_numpy() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let vols = dir.join("vols");
    common::run_script("oracles/ref_geometry.py", &["make", common::s(&vols)]);
    let pre = Preprocessor::new(PreprocessConfig {
        size: 28,
        margin: 2,
        crop: CropMode::Volume,
    })
    .unwrap();
    let mut cubes: Vec<(Array3<f32>, Array3<bool>)> = Vec::new();
    let mut names: Vec<_> = std::fs::read_dir(&vols)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".nii.gz"))
        .collect();
    names.sort();
    for p in names {
        let prep = pre.prepare(&nifti::read_volume(&p).unwrap(), None).unwrap();
        cubes.push((prep.cube, prep.mask));
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let shape = (20, 22, 24);
    // Skewed (squared uniform), integer-valued with many ties, and shifted negative intensities.
    let skew = Array3::from_shape_fn(shape, |_| rng.random::<f32>().powi(2) * 900.0 + 1.0);
    let ints = Array3::from_shape_fn(shape, |_| rng.random_range(1..12) as f32);
    let neg = Array3::from_shape_fn(shape, |_| rng.random::<f32>() * 50.0 - 80.0);
    let ball = Array3::from_shape_fn(shape, |(z, y, x)| {
        let d = (z as f32 - 10.0).powi(2) + (y as f32 - 11.0).powi(2) + (x as f32 - 12.0).powi(2);
        d < 81.0
    });
    cubes.push((skew.clone(), ball.clone()));
    cubes.push((ints, Array3::from_elem(shape, true)));
    cubes.push((neg, ball));
    let lms: Vec<[f64; 13]> = cubes
        .iter()
        .map(|(c, m)| nyul::landmarks(c, m, "cube".as_ref()).unwrap())
        .collect();
    let model = NyulModel::fit(&lms).unwrap();
    model.save(&dir.join("model.json")).unwrap();
    for (i, ((c, m), l)) in cubes.iter().zip(&lms).enumerate() {
        let out = model.apply(c, l);
        let w = |name: String, f: &dyn Fn(std::fs::File)| {
            f(std::fs::File::create(dir.join(name)).unwrap())
        };
        w(format!("cube_{i}.npy"), &|f| c.write_npy(f).unwrap());
        w(format!("mask_{i}.npy"), &|f| m.write_npy(f).unwrap());
        w(format!("std_{i}.npy"), &|f| out.write_npy(f).unwrap());
    }
    let report = common::run_script("oracles/ref_nyul.py", &[common::s(dir)]);
    println!("{report}");
    assert!(
        report.contains(&format!("volumes={}", cubes.len())),
        "{report}"
    );
}
