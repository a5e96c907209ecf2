//! Brain mask (ALGORITHM.md §3.2 step 0, §11 row 46): `Ω = 1[V > 0]`, or a mask volume the user gives.
//!
//! **Input.** A canonical `[z][y][x]` intensity array, or a user mask volume on the image's own grid (any
//! value > 0 is brain).
//!
//! **Output.** A boolean array of the same shape.
//!
//! **Traps.** The `> 0` rule assumes a skull-stripped volume with a zero background (BraTS; IXI after HD-BET).
//! Volumes with negative intensities (z-scored data) or a noisy background need a user mask. On the S³ cube
//! Ω is recomputed after resizing and **before** standardisation, because standardisation can map the
//! background to non-zero values.

use ndarray::Array3;

/// `Ω = 1[V > 0]`.
pub fn threshold_mask(data: &Array3<f32>) -> Array3<bool> {
    data.mapv(|v| v > 0.0)
}

/// Number of voxels in a mask.
pub fn count(mask: &Array3<bool>) -> usize {
    mask.iter().filter(|&&m| m).count()
}

/// The fraction of voxels > 0 in the eight corner blocks of an array (each block an eighth of every axis,
/// at least one voxel): the background of the field of view, where a skull-stripped scan is 0 and a raw
/// scan holds noise (see [`crate::volume::space::not_skull_stripped`]). Any index order.
pub fn corner_fraction(data: &Array3<f32>) -> f64 {
    let shape = data.shape();
    let edge: [usize; 3] = std::array::from_fn(|a| shape[a].div_ceil(8).max(1));
    let ranges: [[std::ops::Range<usize>; 2]; 3] =
        std::array::from_fn(|a| [0..edge[a], shape[a] - edge[a]..shape[a]]);
    let (mut positive, mut total) = (0usize, 0usize);
    for corner in 0..8 {
        let [r0, r1, r2] = std::array::from_fn(|a| ranges[a][corner >> a & 1].clone());
        let block = data.slice(ndarray::s![r0, r1, r2]);
        positive += block.iter().filter(|&&v| v > 0.0).count();
        total += block.len();
    }
    positive as f64 / total as f64
}

/// Bounding box of the true voxels as half-open ranges in canonical `(x, y, z)` order, `None` when empty.
pub fn bounding_box(mask: &Array3<bool>) -> Option<([usize; 3], [usize; 3])> {
    let mut lo = [usize::MAX; 3];
    let mut hi = [0usize; 3];
    let mut any = false;
    for ((z, y, x), &m) in mask.indexed_iter() {
        if m {
            any = true;
            for (a, v) in [x, y, z].into_iter().enumerate() {
                lo[a] = lo[a].min(v);
                hi[a] = hi[a].max(v + 1);
            }
        }
    }
    any.then_some((lo, hi))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_and_box() {
        let mut d = Array3::<f32>::zeros((4, 5, 6));
        assert_eq!(bounding_box(&threshold_mask(&d)), None);
        d[[1, 2, 3]] = 1.0;
        d[[2, 4, 0]] = 0.5;
        d[[3, 0, 5]] = -2.0;
        let m = threshold_mask(&d);
        assert_eq!(count(&m), 2);
        assert_eq!(bounding_box(&m), Some(([0, 2, 1], [4, 5, 3])));
    }

    #[test]
    fn corner_fraction_counts_the_eight_corner_blocks() {
        // 16 × 16 × 8: corner blocks of 2 × 2 × 1 voxels, 32 in all.
        let mut d = Array3::<f32>::zeros((16, 16, 8));
        assert_eq!(corner_fraction(&d), 0.0);
        d.fill(3.0);
        assert_eq!(corner_fraction(&d), 1.0);
        d.fill(0.0);
        d[[0, 0, 0]] = 1.0;
        d[[15, 14, 7]] = 1.0;
        d[[8, 8, 4]] = 1.0; // the centre does not count
        assert_eq!(corner_fraction(&d), 2.0 / 32.0);
    }
}
