//! Crop to the brain (ALGORITHM.md §3.1 (iii), §12 Q11): the bounding box of the brain mask plus a margin.
//!
//! **Input.** The canonical brain mask (`[z][y][x]`), a margin in voxels.
//!
//! **Output.** A [`CropBox`]: half-open voxel ranges in canonical `(x, y, z)` order. Nothing is copied: the
//! resize step reads the canonical volume through the box and treats everything outside it as zero
//! padding, so "crop, then pad to a cube" is one resampling.
//!
//! **Traps.** `(x, y, z)` order here, `[z][y][x]` in arrays. The bounds are signed: a batch box
//! ([`crate::volume::space`]) lives in the voxel frame of the batch's reference grid and may reach past
//! that grid (another volume's brain can extend beyond the reference's field of view); the part outside a
//! volume's own grid reads as zero. A box made by [`CropBox::around`] lies within its grid.

use ndarray::Array3;

use super::mask::bounding_box;

/// Half-open canonical voxel ranges `lo[a]..hi[a]`, `a` = x, y, z.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CropBox {
    pub lo: [i64; 3],
    pub hi: [i64; 3],
}

/// How far (in voxels) a continuous point may lie outside a box and still count as inside: absorbs the
/// rounding of coordinates that land on the box's first or last voxel centre.
pub const EDGE_TOLERANCE: f64 = 1e-6;

impl CropBox {
    /// The bounding box of `mask` grown by `margin` voxels on each side and clipped to the grid; `None` when
    /// the mask is empty.
    pub fn around(mask: &Array3<bool>, margin: usize) -> Option<Self> {
        let (lo, hi) = bounding_box(mask)?;
        let s = mask.shape();
        let size = [s[2], s[1], s[0]];
        let tight = CropBox {
            lo: lo.map(|v| v as i64),
            hi: hi.map(|v| v as i64),
        };
        tight.grown(margin).intersection(&CropBox::full(size))
    }

    /// The whole grid of size `(X, Y, Z)`.
    pub fn full(size: [usize; 3]) -> Self {
        CropBox {
            lo: [0; 3],
            hi: size.map(|v| v as i64),
        }
    }

    /// The smallest box holding both.
    pub fn union(&self, other: &CropBox) -> CropBox {
        CropBox {
            lo: std::array::from_fn(|a| self.lo[a].min(other.lo[a])),
            hi: std::array::from_fn(|a| self.hi[a].max(other.hi[a])),
        }
    }

    /// The common part of both, `None` when they do not overlap.
    pub fn intersection(&self, other: &CropBox) -> Option<CropBox> {
        let b = CropBox {
            lo: std::array::from_fn(|a| self.lo[a].max(other.lo[a])),
            hi: std::array::from_fn(|a| self.hi[a].min(other.hi[a])),
        };
        (0..3).all(|a| b.lo[a] < b.hi[a]).then_some(b)
    }

    /// The box grown by `margin` voxels on every side.
    pub fn grown(&self, margin: usize) -> CropBox {
        let m = margin as i64;
        CropBox {
            lo: self.lo.map(|v| v - m),
            hi: self.hi.map(|v| v + m),
        }
    }

    /// Number of voxels along each axis.
    pub fn extent(&self) -> [usize; 3] {
        std::array::from_fn(|a| (self.hi[a] - self.lo[a]).max(0) as usize)
    }

    /// Whether canonical voxel `(x, y, z)` is inside.
    pub fn contains(&self, c: [usize; 3]) -> bool {
        (0..3).all(|a| self.lo[a] <= c[a] as i64 && (c[a] as i64) < self.hi[a])
    }

    /// Whether the continuous point `p` lies between the first and last voxel centres of the box (within
    /// [`EDGE_TOLERANCE`]).
    pub fn holds(&self, p: [f64; 3]) -> bool {
        (0..3).all(|a| {
            p[a] >= self.lo[a] as f64 - EDGE_TOLERANCE
                && p[a] <= (self.hi[a] - 1) as f64 + EDGE_TOLERANCE
        })
    }

    /// The box's part inside a grid of size `(X, Y, Z)` as unsigned ranges (the voxels that can be read),
    /// `None` when nothing of it is inside.
    pub fn within(&self, size: [usize; 3]) -> Option<([usize; 3], [usize; 3])> {
        let b = self.intersection(&CropBox::full(size))?;
        Some((b.lo.map(|v| v as usize), b.hi.map(|v| v as usize)))
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
        let u = b.union(&CropBox {
            lo: [1, 0, 3],
            hi: [2, 2, 9],
        });
        assert_eq!((u.lo, u.hi), ([0, 0, 2], [6, 8, 9]));
        assert!(CropBox::around(&Array3::from_elem((2, 2, 2), false), 1).is_none());
    }

    #[test]
    fn a_box_may_reach_past_the_grid_and_reads_only_inside() {
        let b = CropBox {
            lo: [-3, 2, 0],
            hi: [5, 12, 4],
        };
        assert_eq!(b.extent(), [8, 10, 4]);
        assert_eq!(b.within([4, 10, 10]), Some(([0, 2, 0], [4, 10, 4])));
        assert_eq!(b.within([4, 2, 10]), None, "y range 2..12 misses 0..2");
        assert!(b.holds([-3.0, 11.0, 3.0]) && b.holds([-3.0 - 1e-9, 2.0, 0.0]));
        assert!(!b.holds([-3.01, 5.0, 1.0]) && !b.holds([0.0, 11.5, 1.0]));
        assert_eq!(b.grown(1).lo, [-4, 1, -1]);
    }
}
