//! Step 3 and step 7 of `ALGORITHM.md` §3.2: which image a slice is, and where its tokens go.
//!
//! Input: the canonical cube `V[z][y][x]` (z: axial / superior–inferior, y: coronal / anterior–posterior,
//! x: sagittal / left–right). Output: slice `t` of an axis as a 2D image, and the map from a pooled token
//! `(k, i, j)` (slice group `k`, patch row `i`, patch column `j`) to canonical `(z, y, x)`.
//!
//! | axis     | slice `t`      | rows | cols | `(k, i, j)` →  |
//! |----------|----------------|------|------|----------------|
//! | axial    | `V[t, :, :]`   | y    | x    | `(k, i, j)`    |
//! | coronal  | `V[:, t, :]`   | z    | x    | `(i, k, j)`    |
//! | sagittal | `V[:, :, t]`   | z    | y    | `(i, j, k)`    |
//!
//! Traps: no flips or transposes for display (Q12 allows any fixed convention; this one is the spec's
//! table, and the Python reference `scripts/oracles/ref_tokenizer.py` uses the same); coronal and sagittal
//! slices are strided views, copy them before feeding a model.

use ndarray::{ArrayView2, ArrayView3, Axis as NdAxis};

/// One of the three slicing axes, in fusion order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SliceAxis {
    Axial,
    Coronal,
    Sagittal,
}

impl SliceAxis {
    /// The three axes in the order of the fused feature: `[axial; coronal; sagittal]`.
    pub const ALL: [SliceAxis; 3] = [SliceAxis::Axial, SliceAxis::Coronal, SliceAxis::Sagittal];

    /// Slice `t` of the cube along this axis, as an image (rows, cols) per the table above.
    pub fn slice<'a>(self, cube: ArrayView3<'a, f32>, t: usize) -> ArrayView2<'a, f32> {
        match self {
            SliceAxis::Axial => cube.index_axis_move(NdAxis(0), t),
            SliceAxis::Coronal => cube.index_axis_move(NdAxis(1), t),
            SliceAxis::Sagittal => cube.index_axis_move(NdAxis(2), t),
        }
    }

    /// Canonical `(z, y, x)` of the pooled token `(k, i, j)` of this axis.
    pub fn canonical(self, k: usize, i: usize, j: usize) -> (usize, usize, usize) {
        match self {
            SliceAxis::Axial => (k, i, j),
            SliceAxis::Coronal => (i, k, j),
            SliceAxis::Sagittal => (i, j, k),
        }
    }

    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            SliceAxis::Axial => "axial",
            SliceAxis::Coronal => "coronal",
            SliceAxis::Sagittal => "sagittal",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array3;

    #[test]
    fn slices_and_canonical_positions_follow_the_spec_table() {
        // value encodes its own (z, y, x)
        let v = Array3::from_shape_fn((3, 4, 5), |(z, y, x)| (100 * z + 10 * y + x) as f32);
        let a = SliceAxis::Axial.slice(v.view(), 2);
        assert_eq!(a.dim(), (4, 5));
        assert_eq!(a[[3, 1]], 231.0); // rows y, cols x
        let c = SliceAxis::Coronal.slice(v.view(), 3);
        assert_eq!(c.dim(), (3, 5));
        assert_eq!(c[[1, 4]], 134.0); // rows z, cols x
        let s = SliceAxis::Sagittal.slice(v.view(), 4);
        assert_eq!(s.dim(), (3, 4));
        assert_eq!(s[[2, 1]], 214.0); // rows z, cols y
                                      // a voxel at slice t, row r, col c of an axis has canonical coordinates canonical(t, r, c)
        for axis in SliceAxis::ALL {
            let (rows, cols) = axis.slice(v.view(), 0).dim();
            let n = match axis {
                SliceAxis::Axial => 3,
                SliceAxis::Coronal => 4,
                SliceAxis::Sagittal => 5,
            };
            for t in 0..n {
                let img = axis.slice(v.view(), t);
                for r in 0..rows {
                    for c in 0..cols {
                        let (z, y, x) = axis.canonical(t, r, c);
                        assert_eq!(img[[r, c]], v[[z, y, x]], "{axis:?} t={t} r={r} c={c}");
                    }
                }
            }
        }
    }
}
