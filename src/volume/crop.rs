//! Crop to the brain (ALGORITHM.md §3.1 (iii), §12 Q11): the bounding box of the brain mask plus a margin.
//!
//! **Input.** The canonical brain mask (`[z][y][x]`), a margin in voxels.
//!
//! **Output.** A [`CropBox`]: half-open voxel ranges in canonical `(x, y, z)` order, clipped to the grid.
//! Nothing is copied: the resize step reads the canonical volume through the box and treats everything
//! outside it as zero padding, so "crop, then pad to a cube" is one resampling.
//!
//! **Traps.** `(x, y, z)` order here, `[z][y][x]` in arrays. For a batch registered to one atlas the box may be
//! the union over the batch ([`CropBox::union`]), which gives every volume the same cube geometry.

use ndarray::Array3;

use super::mask::bounding_box;

/// Half-open canonical voxel ranges `lo[a]..hi[a]`, `a` = x, y, z.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CropBox {
    pub lo: [usize; 3],
    pub hi: [usize; 3],
}

impl CropBox {
    /// The bounding box of `mask` grown by `margin` voxels on each side and clipped to the grid; `None` when
    /// the mask is empty.
    pub fn around(mask: &Array3<bool>, margin: usize) -> Option<Self> {
        let (lo, hi) = bounding_box(mask)?;
        let s = mask.shape();
        let size = [s[2], s[1], s[0]];
        Some(CropBox {
            lo: std::array::from_fn(|a| lo[a].saturating_sub(margin)),
            hi: std::array::from_fn(|a| (hi[a] + margin).min(size[a])),
        })
    }

    /// The whole grid of size `(X, Y, Z)`.
    pub fn full(size: [usize; 3]) -> Self {
        CropBox {
            lo: [0; 3],
            hi: size,
        }
    }

    /// The smallest box holding both.
    pub fn union(&self, other: &CropBox) -> CropBox {
        CropBox {
            lo: std::array::from_fn(|a| self.lo[a].min(other.lo[a])),
            hi: std::array::from_fn(|a| self.hi[a].max(other.hi[a])),
        }
    }

    /// Number of voxels along each axis.
    pub fn extent(&self) -> [usize; 3] {
        std::array::from_fn(|a| self.hi[a] - self.lo[a])
    }

    /// Whether canonical voxel `(x, y, z)` is inside.
    pub fn contains(&self, c: [usize; 3]) -> bool {
        (0..3).all(|a| self.lo[a] <= c[a] && c[a] < self.hi[a])
    }

    /// Whether the box lies within a grid of size `(X, Y, Z)` and is not empty.
    pub fn fits(&self, size: [usize; 3]) -> bool {
        (0..3).all(|a| self.lo[a] < self.hi[a] && self.hi[a] <= size[a])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn margin_is_clipped() {
        let mut m = Array3::from_elem((10, 8, 6), false);
        m[[4, 3, 2]] = true;
        m[[5, 6, 3]] = true;
        let b = CropBox::around(&m, 2).unwrap();
        assert_eq!(b.lo, [0, 1, 2]);
        assert_eq!(b.hi, [6, 8, 8]);
        assert_eq!(b.extent(), [6, 7, 6]);
        assert!(b.contains([0, 1, 2]) && !b.contains([0, 0, 2]));
        assert!(b.fits([6, 8, 10]) && !b.fits([5, 8, 10]));
        let u = b.union(&CropBox {
            lo: [1, 0, 3],
            hi: [2, 2, 9],
        });
        assert_eq!((u.lo, u.hi), ([0, 0, 2], [6, 8, 9]));
        assert!(CropBox::around(&Array3::from_elem((2, 2, 2), false), 1).is_none());
    }
}
