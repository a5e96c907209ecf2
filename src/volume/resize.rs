//! Resize the cropped brain to a cube of `S³` voxels, keeping the physical aspect ratio by zero padding
//! (ALGORITHM.md §3.1 (iv), §12 Q11), and the exact inverse mapping back.
//!
//! **Geometry.** The cube is an isotropic grid placed in a *frame*: the canonical voxel grid of the batch's
//! reference volume (see [`crate::volume::space`]; with `--crop volume`, each volume's own canonical grid).
//! Its longest physical side is the crop's longest side (in mm, voxel centre to voxel centre), the other
//! sides are padded symmetrically around the crop's centre. Cube voxel `n` (per axis, `0..S`) sits at frame
//! continuous voxel coordinate `p = centre + (n − (S−1)/2) · step`, with `step = L / (S−1) / spacing`
//! (align-corners: along the longest axis the first and last cube voxels coincide with the first and last
//! crop voxels). This is one affine map, so the cube has a world affine of its own
//! ([`CubeGrid::cube_affine`]): its axes `x, y, z` run along the frame's canonical axes (left→Right,
//! posterior→Anterior, inferior→Superior), and every voxel of the crop maps to a point inside the cube.
//!
//! **Where the voxels are read** ([`Placement`]). A volume whose canonical grid is the frame is read at `p`
//! directly. A volume on another grid of the same world space (other spacing, field of view or a small
//! rotation; its storage orientation is already undone by [`crate::volume::orient`]) is read at
//! `q = to_own · p`, its own canonical coordinates of the same world point: one trilinear step either way,
//! never two.
//!
//! **Input.** The canonical volume `[z][y][x]`, the [`CropBox`] (frame voxels), the frame's spacing.
//! **Output.** `S³` array `[z][y][x]`.
//!
//! **Interpolation.** Intensities: trilinear, with everything outside the crop box, and everything outside
//! the volume's own grid (its field of view), read as 0 (the padding). Maps back: trilinear in the cube
//! (align-corners), masks and labels: nearest voxel. Voxels of the native grid outside the crop box receive
//! a fill value.

use ndarray::Array3;
use rayon::prelude::*;

use super::crop::CropBox;
use crate::formats::nifti::{apply_affine, matmul, Affine};

/// The placement of the `S³` cube in canonical voxel coordinates.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CubeGrid {
    /// Cube edge `S`.
    pub size: usize,
    /// Canonical `(x, y, z)` coordinate of the cube's centre.
    pub centre: [f64; 3],
    /// Canonical voxels per cube voxel along `x, y, z`.
    pub step: [f64; 3],
    /// Cube voxel size in mm (isotropic).
    pub voxel_mm: f64,
}

impl CubeGrid {
    /// The cube of edge `size` around `crop`, for canonical voxel spacing `spacing` (mm, `x, y, z`).
    pub fn fit(crop: &CropBox, spacing: [f64; 3], size: usize) -> Self {
        let ext = crop.extent();
        let longest = (0..3)
            .map(|a| (ext[a].max(1) - 1) as f64 * spacing[a])
            .fold(0.0, f64::max)
            .max(spacing.iter().cloned().fold(f64::INFINITY, f64::min));
        let voxel_mm = longest / (size.max(2) - 1) as f64;
        CubeGrid {
            size,
            centre: std::array::from_fn(|a| (crop.lo[a] + crop.hi[a] - 1) as f64 / 2.0),
            step: std::array::from_fn(|a| voxel_mm / spacing[a]),
            voxel_mm,
        }
    }

    fn half(&self) -> f64 {
        (self.size as f64 - 1.0) / 2.0
    }

    /// Cube `(x, y, z)` (continuous) → canonical `(x, y, z)`.
    pub fn to_canonical(&self, n: [f64; 3]) -> [f64; 3] {
        std::array::from_fn(|a| self.centre[a] + (n[a] - self.half()) * self.step[a])
    }

    /// Canonical `(x, y, z)` → cube `(x, y, z)` (continuous).
    pub fn to_cube(&self, p: [f64; 3]) -> [f64; 3] {
        std::array::from_fn(|a| (p[a] - self.centre[a]) / self.step[a] + self.half())
    }

    /// Cube voxel `(x, y, z)` → world, given the canonical affine.
    pub fn cube_affine(&self, canonical_affine: &Affine) -> Affine {
        let mut m = [[0.0; 4]; 4];
        m[3][3] = 1.0;
        for (a, row) in m.iter_mut().take(3).enumerate() {
            row[a] = self.step[a];
            row[3] = self.centre[a] - self.half() * self.step[a];
        }
        matmul(canonical_affine, &m)
    }
}

/// Trilinear interpolation in `data` (`[z][y][x]`) at `(x, y, z)`, restricted to the box `lo..hi`: points
/// farther than `1e-6` voxel outside the box give `None`.
fn trilinear(data: &Array3<f32>, lo: [usize; 3], hi: [usize; 3], p: [f64; 3]) -> Option<f32> {
    const EPS: f64 = 1e-6;
    let mut i0 = [0usize; 3];
    let mut i1 = [0usize; 3];
    let mut t = [0f64; 3];
    for a in 0..3 {
        let (l, h) = (lo[a] as f64, (hi[a] - 1) as f64);
        if p[a] < l - EPS || p[a] > h + EPS {
            return None;
        }
        let q = p[a].clamp(l, h);
        let f = q.floor();
        i0[a] = f as usize;
        i1[a] = (i0[a] + 1).min(hi[a] - 1);
        t[a] = q - f;
    }
    let g = |x: usize, y: usize, z: usize| data[[z, y, x]] as f64;
    let mut acc = 0.0;
    for (cz, wz) in [(i0[2], 1.0 - t[2]), (i1[2], t[2])] {
        for (cy, wy) in [(i0[1], 1.0 - t[1]), (i1[1], t[1])] {
            for (cx, wx) in [(i0[0], 1.0 - t[0]), (i1[0], t[0])] {
                let w = wx * wy * wz;
                if w != 0.0 {
                    acc += w * g(cx, cy, cz);
                }
            }
        }
    }
    Some(acc as f32)
}

/// Nearest voxel of `p` inside the box, or `None` when `p` is outside it (by more than half a voxel).
fn nearest(lo: [usize; 3], hi: [usize; 3], p: [f64; 3]) -> Option<[usize; 3]> {
    let mut out = [0usize; 3];
    for a in 0..3 {
        let r = (p[a] + 1e-9).round();
        if r < lo[a] as f64 || r > (hi[a] - 1) as f64 {
            return None;
        }
        out[a] = r as usize;
    }
    Some(out)
}

/// Fills an `[z][y][x]` array of shape `(nz, ny, nx)` in parallel over z-planes.
fn par_fill<T: Copy + Send + Sync>(
    shape: (usize, usize, usize),
    f: impl Fn([usize; 3]) -> T + Sync,
) -> Array3<T> {
    let (nz, ny, nx) = shape;
    let planes: Vec<Vec<T>> = (0..nz)
        .into_par_iter()
        .map(|z| {
            let mut v = Vec::with_capacity(ny * nx);
            for y in 0..ny {
                for x in 0..nx {
                    v.push(f([x, y, z]));
                }
            }
            v
        })
        .collect();
    Array3::from_shape_vec(shape, planes.concat()).expect("plane sizes")
}

/// Where a volume's canonical grid lies in the frame that the cube is placed in ([`CubeGrid`] and the crop
/// box are in that frame's voxel coordinates).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Placement {
    /// The volume's canonical grid is the frame itself: it is read at the frame coordinates directly (the
    /// one trilinear step, as for a batch on one grid).
    Frame,
    /// Another grid of the same world space: frame coordinates are carried to the volume's own canonical
    /// coordinates (`to_own`; `to_frame` is its inverse), where the volume is read (the same one trilinear
    /// step, at other points).
    Resampled {
        to_own: Box<Affine>,
        to_frame: Box<Affine>,
    },
}

impl Placement {
    /// Frame coordinates → the volume's own canonical coordinates.
    pub fn own(&self, p: [f64; 3]) -> [f64; 3] {
        match self {
            Placement::Frame => p,
            Placement::Resampled { to_own, .. } => apply_affine(to_own, p),
        }
    }

    /// The volume's own canonical voxel → frame coordinates.
    pub fn frame(&self, c: [usize; 3]) -> [f64; 3] {
        let c = c.map(|v| v as f64);
        match self {
            Placement::Frame => c,
            Placement::Resampled { to_frame, .. } => apply_affine(to_frame, c),
        }
    }
}

/// Canonical intensities → `S³` cube (trilinear; outside the crop box and outside the volume's own grid
/// = 0).
pub fn to_cube(
    canonical: &Array3<f32>,
    crop: &CropBox,
    grid: &CubeGrid,
    placement: &Placement,
) -> Array3<f32> {
    let s = grid.size;
    let size = shape_xyz(canonical);
    match placement {
        Placement::Frame => {
            let Some((lo, hi)) = crop.within(size) else {
                return Array3::zeros((s, s, s));
            };
            par_fill((s, s, s), |n| {
                let p = grid.to_canonical(n.map(|v| v as f64));
                trilinear(canonical, lo, hi, p).unwrap_or(0.0)
            })
        }
        Placement::Resampled { .. } => par_fill((s, s, s), |n| {
            let p = grid.to_canonical(n.map(|v| v as f64));
            if !crop.holds(p) {
                return 0.0;
            }
            trilinear(canonical, [0; 3], size, placement.own(p)).unwrap_or(0.0)
        }),
    }
}

/// Canonical labels/mask → `S³` cube by nearest voxel (outside the crop box and the volume's grid =
/// default).
pub fn to_cube_nearest<T: Copy + Default + Send + Sync>(
    canonical: &Array3<T>,
    crop: &CropBox,
    grid: &CubeGrid,
    placement: &Placement,
) -> Array3<T> {
    let s = grid.size;
    let size = shape_xyz(canonical);
    let read = |lo, hi, q| {
        nearest(lo, hi, q)
            .map(|[x, y, z]| canonical[[z, y, x]])
            .unwrap_or_default()
    };
    match placement {
        Placement::Frame => {
            let Some((lo, hi)) = crop.within(size) else {
                return Array3::from_elem((s, s, s), T::default());
            };
            par_fill((s, s, s), |n| {
                read(lo, hi, grid.to_canonical(n.map(|v| v as f64)))
            })
        }
        Placement::Resampled { .. } => par_fill((s, s, s), |n| {
            let p = grid.to_canonical(n.map(|v| v as f64));
            if !crop.holds(p) {
                return T::default();
            }
            read([0; 3], size, placement.own(p))
        }),
    }
}

/// Whether the volume's own canonical voxel `c` (at frame coordinates `p`) lies in the crop box.
fn in_box(crop: &CropBox, placement: &Placement, c: [usize; 3], p: [f64; 3]) -> bool {
    match placement {
        Placement::Frame => crop.contains(c),
        Placement::Resampled { .. } => crop.holds(p),
    }
}

/// `S³` map → canonical grid of size `(X, Y, Z)` (trilinear in the cube; outside the crop box = `fill`).
pub fn from_cube(
    cube: &Array3<f32>,
    crop: &CropBox,
    grid: &CubeGrid,
    canonical_size: [usize; 3],
    fill: f32,
    placement: &Placement,
) -> Array3<f32> {
    let [cx, cy, cz] = canonical_size;
    let s = grid.size;
    par_fill((cz, cy, cx), |c| {
        let p = placement.frame(c);
        if !in_box(crop, placement, c, p) {
            return fill;
        }
        let n = grid.to_cube(p);
        // Crop voxels lie inside the cube by construction; the clamp only absorbs rounding.
        let n = n.map(|v| v.clamp(0.0, (s - 1) as f64));
        trilinear(cube, [0; 3], [s; 3], n).unwrap_or(fill)
    })
}

/// `S³` mask → canonical grid by nearest cube voxel (outside the crop box = default).
pub fn from_cube_nearest<T: Copy + Default + Send + Sync>(
    cube: &Array3<T>,
    crop: &CropBox,
    grid: &CubeGrid,
    canonical_size: [usize; 3],
    placement: &Placement,
) -> Array3<T> {
    let [cx, cy, cz] = canonical_size;
    let s = grid.size;
    par_fill((cz, cy, cx), |c| {
        let p = placement.frame(c);
        if !in_box(crop, placement, c, p) {
            return T::default();
        }
        let n = grid.to_cube(p);
        let n = n.map(|v| v.clamp(0.0, (s - 1) as f64));
        nearest([0; 3], [s; 3], n)
            .map(|[x, y, z]| cube[[z, y, x]])
            .unwrap_or_default()
    })
}

/// The `(X, Y, Z)` size of a `[z][y][x]` array.
fn shape_xyz<T>(a: &Array3<T>) -> [usize; 3] {
    let s = a.shape();
    [s[2], s[1], s[0]]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_is_isotropic_and_align_corners() {
        let crop = CropBox {
            lo: [2, 0, 1],
            hi: [12, 20, 6],
        };
        let g = CubeGrid::fit(&crop, [1.0, 0.5, 2.0], 14);
        // Longest side in mm: y has 19 gaps of 0.5 mm = 9.5 mm; x 9 mm; z 8 mm.
        assert!((g.voxel_mm - 9.5 / 13.0).abs() < 1e-12);
        assert_eq!(g.to_canonical([0.0, 0.0, 0.0])[1], 0.0);
        assert!((g.to_canonical([0.0, 13.0, 0.0])[1] - 19.0).abs() < 1e-12);
        let p = [3.3, 7.1, 2.2];
        let back = g.to_canonical(g.to_cube(p));
        for a in 0..3 {
            assert!((back[a] - p[a]).abs() < 1e-12);
        }
    }

    #[test]
    fn linear_ramps_survive_the_round_trip() {
        // A linear function is reproduced exactly by trilinear interpolation, forward and back.
        let crop = CropBox {
            lo: [1, 2, 0],
            hi: [9, 12, 7],
        };
        let can = Array3::from_shape_fn((7, 14, 10), |(z, y, x)| {
            (x as f32) * 0.5 + (y as f32) * 2.0 - (z as f32) + 3.0
        });
        let g = CubeGrid::fit(&crop, [1.0, 1.0, 1.5], 28);
        let cube = to_cube(&can, &crop, &g, &Placement::Frame);
        let back = from_cube(&cube, &crop, &g, [10, 14, 7], -1.0, &Placement::Frame);
        for ((z, y, x), v) in back.indexed_iter() {
            if crop.contains([x, y, z]) {
                assert!((v - can[[z, y, x]]).abs() < 1e-4, "{x} {y} {z}: {v}");
            } else {
                assert_eq!(*v, -1.0);
            }
        }
        // Padding reads as zero: the cube corners along the short axes lie outside the crop.
        assert_eq!(cube[[0, 0, 0]], 0.0);
        let mask = can.mapv(|v| v > 8.0);
        let mc = to_cube_nearest(&mask, &crop, &g, &Placement::Frame);
        let mb = from_cube_nearest(&mc, &crop, &g, [10, 14, 7], &Placement::Frame);
        for ((z, y, x), v) in mb.indexed_iter() {
            if crop.contains([x, y, z]) {
                // Nearest there and back lands on the same voxel: the cube is finer than the crop.
                assert_eq!(*v, mask[[z, y, x]], "{x} {y} {z}");
            }
        }
    }
}
