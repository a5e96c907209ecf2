//! Step 12 of `ALGORITHM.md` §3.2: void flags.
//!
//! Input: the brain mask `Ω[z][y][x]` of the canonical cube (edge `14·G`). Output: `valid` `[G³]` in raster
//! order; a token is void (`valid = false`) when `1 − mean(Ω over its 14³ cube) > threshold` (default 0.5,
//! "primarily void": more than half of its voxels are background).
//!
//! Traps: the threshold compares the *void* fraction; a token exactly half brain is valid.

use ndarray::{s, ArrayView3};

use crate::backbone::PATCH;

/// Validity of every token (true = not void), raster order `p = (z·G + y)·G + x`.
pub fn valid_tokens(mask: ArrayView3<bool>, threshold: f64) -> Vec<bool> {
    let g = mask.dim().0 / PATCH;
    let cube = (PATCH * PATCH * PATCH) as f64;
    let mut valid = Vec::with_capacity(g * g * g);
    for z in 0..g {
        for y in 0..g {
            for x in 0..g {
                let block = mask.slice(s![
                    z * PATCH..(z + 1) * PATCH,
                    y * PATCH..(y + 1) * PATCH,
                    x * PATCH..(x + 1) * PATCH
                ]);
                let brain = block.iter().filter(|&&b| b).count() as f64;
                valid.push(1.0 - brain / cube <= threshold);
            }
        }
    }
    valid
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array3;

    #[test]
    fn void_fraction_rule() {
        let mut m = Array3::from_elem((28, 28, 28), false);
        // token (0, 1, 1): exactly half brain → valid; token (1, 0, 0): one voxel short of half → void
        m.slice_mut(s![0..7, 14..28, 14..28]).fill(true);
        m.slice_mut(s![14..21, 0..14, 0..14]).fill(true);
        m[[20, 13, 13]] = false;
        // token (1, 1, 0): full → valid
        m.slice_mut(s![14..28, 14..28, 0..14]).fill(true);
        let v = valid_tokens(m.view(), 0.5);
        assert_eq!(v.len(), 8);
        assert_eq!(
            v,
            vec![false, false, false, true, false, false, true, false]
        );
        assert!(valid_tokens(m.view(), 0.6)[4]);
    }
}
