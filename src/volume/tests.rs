//! Unit tests of the parent module.

use super::*;

fn vol(data: Array3<f32>, affine: Affine) -> Volume {
    let header = nifti::header_for_affine(&affine);
    Volume {
        path: "v.nii".into(),
        data,
        header,
        affine,
    }
}

/// The same voxels stored with the i and j axes reversed (LPS storage of a RAS grid): the same world grid.
fn flipped_ij(data: &Array3<f32>, a: &Affine) -> (Array3<f32>, Affine) {
    let (nz, ny, nx) = data.dim();
    let flipped =
        Array3::from_shape_fn((nz, ny, nx), |(k, j, i)| data[[k, ny - 1 - j, nx - 1 - i]]);
    let mut b = *a;
    for r in 0..3 {
        b[r][3] += a[r][0] * (nx - 1) as f64 + a[r][1] * (ny - 1) as f64;
        b[r][0] = -a[r][0];
        b[r][1] = -a[r][1];
    }
    (flipped, b)
}

fn batch_config(margin: usize) -> PreprocessConfig {
    PreprocessConfig {
        size: 28,
        margin,
        crop: CropMode::Batch,
    }
}

fn files<'a>(paths: &'a [&'a std::path::Path]) -> Vec<VolumeFiles<'a>> {
    paths
        .iter()
        .map(|p| VolumeFiles {
            image: p,
            mask: None,
        })
        .collect()
}

#[test]
fn batch_space_is_the_union_and_another_storage_of_the_grid_is_the_same_grid() {
    let dir = tempfile::tempdir().unwrap();
    let a = nifti::identity();
    let mut small = Array3::<f32>::zeros((20, 20, 20));
    small.slice_mut(ndarray::s![4..14, 8..15, 3..9]).fill(1.0);
    let mut large = Array3::<f32>::zeros((20, 20, 20));
    large.slice_mut(ndarray::s![3..15, 8..16, 2..9]).fill(2.0);
    large[[9, 12, 4]] = 3.0;
    let (p1, p2, p3) = (
        dir.path().join("small.nii"),
        dir.path().join("large.nii"),
        dir.path().join("large_lps.nii"),
    );
    nifti::write_volume(&p1, &small, &a).unwrap();
    nifti::write_volume(&p2, &large, &a).unwrap();
    let (lps, b) = flipped_ij(&large, &a);
    assert_eq!(nifti::orientation_code(&b), "LPS");
    nifti::write_volume(&p3, &lps, &b).unwrap();
    let progress = crate::progress::Progress::new(false);
    let (pre, geometry) =
        Preprocessor::for_batch(batch_config(1), &files(&[&p1, &p2, &p3]), 2, &progress).unwrap();
    let plan = geometry.plan.unwrap();
    assert!(plan.members.iter().all(|m| m.fit == space::Fit::Common));
    let space = pre.space.clone().unwrap();
    // (x, y, z) order: x from 3..9 ∪ 2..9, y 8..15 ∪ 8..16, z 4..14 ∪ 3..15, each ± 1
    assert_eq!((space.crop.lo, space.crop.hi), ([1, 7, 2], [10, 17, 16]));
    let prepare = |p: &std::path::Path| pre.prepare(&nifti::read_volume(p).unwrap(), None).unwrap();
    let (one, two, three) = (prepare(&p1), prepare(&p2), prepare(&p3));
    assert_eq!(one.transform.grid, two.transform.grid);
    assert_eq!(one.transform.crop, two.transform.crop);
    assert_eq!(two.transform.placement, Placement::Frame);
    assert_eq!(three.transform.placement, Placement::Frame);
    assert_eq!(
        three.cube, two.cube,
        "the LPS copy gives the very same cube"
    );
    // A map goes back onto each storage: the LPS map is the RAS map with i and j reversed.
    let back2 = two.transform.map_to_native(&two.cube, 0.0).unwrap();
    let back3 = three.transform.map_to_native(&three.cube, 0.0).unwrap();
    assert_eq!(flipped_ij(&back2, &a).0, back3);
    let own = Preprocessor::new(PreprocessConfig {
        crop: CropMode::Volume,
        ..batch_config(1)
    })
    .unwrap();
    let alone = own
        .prepare(&nifti::read_volume(&p1).unwrap(), None)
        .unwrap();
    assert_ne!(alone.transform.crop, space.crop);
}

#[test]
fn a_shifted_volume_is_refused_and_an_unreadable_one_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let a = nifti::identity();
    let mut brain = Array3::<f32>::zeros((24, 24, 24));
    brain.slice_mut(ndarray::s![6..18, 6..18, 6..18]).fill(1.0);
    let paths: Vec<std::path::PathBuf> = ["h0", "h1", "h2", "moved"]
        .iter()
        .map(|n| dir.path().join(format!("{n}.nii")))
        .collect();
    for p in &paths[..3] {
        nifti::write_volume(p, &brain, &a).unwrap();
    }
    let mut moved = a;
    moved[1][3] = 4.0; // 4 mm of a 12 mm brain
    nifti::write_volume(&paths[3], &brain, &moved).unwrap();
    let progress = crate::progress::Progress::new(false);
    let all: Vec<&std::path::Path> = paths.iter().map(|p| p.as_path()).collect();
    let e = Preprocessor::for_batch(batch_config(2), &files(&all), 2, &progress).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("moved.nii") && msg.contains("4.0 mm") && msg.contains("--crop volume"),
        "{msg}"
    );
    assert_eq!(e.exit_code(), 2);
    // --crop volume takes it.
    let volume = PreprocessConfig {
        crop: CropMode::Volume,
        ..batch_config(2)
    };
    assert!(Preprocessor::for_batch(volume, &files(&all), 2, &progress).is_ok());
    // Every volume is read before the space is planned: an unreadable file is reported first, the
    // first bad input in order, with one worker or several.
    let junk = dir.path().join("junk.nii");
    std::fs::write(&junk, b"not an image").unwrap();
    for workers in [1, 3] {
        let order = [all[0], all[3], junk.as_path(), all[1]];
        let e = Preprocessor::for_batch(batch_config(2), &files(&order), workers, &progress)
            .unwrap_err();
        assert!(e.to_string().contains("junk.nii"), "{workers}: {e}");
    }
}

#[test]
fn size_must_be_a_multiple_of_14() {
    assert!(Preprocessor::new(PreprocessConfig {
        size: 30,
        margin: 0,
        crop: CropMode::Volume,
    })
    .is_err());
    assert!(Preprocessor::new(PreprocessConfig {
        size: 28,
        margin: 0,
        crop: CropMode::Volume,
    })
    .is_ok());
}

#[test]
fn all_zero_volume_is_refused_and_map_goes_back_on_the_native_grid() {
    let pre = Preprocessor::new(PreprocessConfig {
        size: 28,
        margin: 1,
        crop: CropMode::Volume,
    })
    .unwrap();
    let mut a = nifti::identity();
    a[0][0] = -1.5; // LAS, anisotropic
    a[2][2] = 2.0;
    let zero = vol(Array3::zeros((10, 12, 14)), a);
    let e = pre.prepare(&zero, None).unwrap_err();
    assert!(e.to_string().contains("brain mask is empty"), "{e}");
    let mut d = Array3::zeros((10, 12, 14));
    for k in 2..8 {
        for j in 3..10 {
            for i in 1..12 {
                d[[k, j, i]] = (1 + i + j + k) as f32;
            }
        }
    }
    let v = vol(d.clone(), a);
    let p = pre.prepare(&v, None).unwrap();
    assert_eq!(p.cube.shape(), [28, 28, 28]);
    let back = p.transform.map_to_native(&p.cube, 0.0).unwrap();
    assert_eq!(back.shape(), d.shape());
    // Inside the brain the round trip reproduces the (piecewise linear) intensities closely.
    for ((k, j, i), &x) in d.indexed_iter() {
        if (3..7).contains(&k) && (4..9).contains(&j) && (2..11).contains(&i) {
            assert!((back[[k, j, i]] - x).abs() < 1e-3, "{i} {j} {k}");
        }
    }
    // A user mask on another grid is refused.
    let mut b = a;
    b[1][3] = 5.0;
    let other = vol(d.mapv(|x| (x > 0.0) as u8 as f32), b);
    let e = pre.prepare(&v, Some(&other)).unwrap_err();
    assert!(matches!(e, Error::Mismatch { .. }), "{e}");
    // A mask on the grid: the brain is the mask, voxels outside it are 0, and the cube's brain is the
    // cube of the skull-stripped volume.
    let mut noisy = d.clone();
    noisy
        .iter_mut()
        .for_each(|x| *x = if *x > 0.0 { *x } else { 7.0 });
    let mask = vol(d.mapv(|x| (x > 0.0) as u8 as f32), a);
    let masked = pre.prepare(&vol(noisy, a), Some(&mask)).unwrap();
    assert_eq!(masked.cube, p.cube);
    assert_eq!(masked.mask, p.mask);
    assert!(p
        .transform
        .map_to_native(&Array3::zeros((3, 3, 3)), 0.0)
        .is_err());
}
