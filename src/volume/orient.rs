//! Canonical orientation: permute and flip a native volume so that its voxel axes run along RAS+.
//!
//! **Input.** A native array indexed `[k][j][i]` (as read by [`crate::formats::nifti`]) and its affine
//! (voxel `(i, j, k)` → world RAS+ mm).
//!
//! **Output.** A canonical array indexed `[z][y][x]` (ALGORITHM.md §3.2 step 3): `x` runs left→Right
//! (sagittal index), `y` posterior→Anterior (coronal), `z` inferior→Superior (axial). The canonical affine
//! maps canonical `(x, y, z)` to the same world points as the native voxel it came from.
//!
//! **Exact, no interpolation.** Each native axis is assigned to the world axis it points most along (greedy on
//! the column-normalised direction cosines, largest first), so an oblique scan is only permuted and flipped,
//! never resampled: [`Orientation::to_native`] is the exact inverse of [`Orientation::to_canonical`]. The
//! residual obliquity stays in the canonical affine, which later steps carry along.
//!
//! **Traps.** Index order differs between affine vectors (`(i, j, k)`, `(x, y, z)`) and arrays (`[k][j][i]`,
//! `[z][y][x]`); every function here says which it takes.

use ndarray::Array3;

use crate::formats::nifti::{matmul, Affine};

/// How native voxel axes map onto canonical RAS+ axes.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Orientation {
    /// For canonical axis `a` (0 = x/R, 1 = y/A, 2 = z/S): the native voxel axis (0 = i, 1 = j, 2 = k).
    pub source_axis: [usize; 3],
    /// Whether that native axis runs against the canonical direction.
    pub flipped: [bool; 3],
    /// Native grid size `(nx, ny, nz)`.
    pub native_size: [usize; 3],
}

impl Orientation {
    /// The orientation of a grid with this affine and size `(nx, ny, nz)`.
    pub fn of(affine: &Affine, native_size: [usize; 3]) -> Self {
        let norms = crate::formats::nifti::spacing_of(affine);
        let mut used_world = [false; 3];
        let mut used_voxel = [false; 3];
        let mut source_axis = [0; 3];
        let mut flipped = [false; 3];
        for _ in 0..3 {
            let mut best = (-1.0, 0, 0);
            for w in (0..3).filter(|&w| !used_world[w]) {
                for v in (0..3).filter(|&v| !used_voxel[v]) {
                    let c = (affine[w][v] / norms[v]).abs();
                    if c > best.0 {
                        best = (c, w, v);
                    }
                }
            }
            let (_, w, v) = best;
            used_world[w] = true;
            used_voxel[v] = true;
            source_axis[w] = v;
            flipped[w] = affine[w][v] < 0.0;
        }
        Orientation {
            source_axis,
            flipped,
            native_size,
        }
    }

    /// Canonical grid size `(X, Y, Z)`.
    pub fn canonical_size(&self) -> [usize; 3] {
        std::array::from_fn(|a| self.native_size[self.source_axis[a]])
    }

    /// Native voxel `(i, j, k)` of canonical voxel `(x, y, z)`.
    pub fn native_index(&self, c: [usize; 3]) -> [usize; 3] {
        let mut n = [0; 3];
        for (a, &ca) in c.iter().enumerate() {
            let s = self.source_axis[a];
            n[s] = if self.flipped[a] {
                self.native_size[s] - 1 - ca
            } else {
                ca
            };
        }
        n
    }

    /// The matrix taking canonical `(x, y, z)` to native `(i, j, k)`.
    pub fn canonical_to_native(&self) -> Affine {
        let mut p = [[0.0; 4]; 4];
        p[3][3] = 1.0;
        for a in 0..3 {
            let s = self.source_axis[a];
            if self.flipped[a] {
                p[s][a] = -1.0;
                p[s][3] = (self.native_size[s] - 1) as f64;
            } else {
                p[s][a] = 1.0;
            }
        }
        p
    }

    /// The canonical affine: canonical `(x, y, z)` → world.
    pub fn canonical_affine(&self, native_affine: &Affine) -> Affine {
        matmul(native_affine, &self.canonical_to_native())
    }

    /// Native `[k][j][i]` array → canonical `[z][y][x]` array.
    pub fn to_canonical<T: Copy>(&self, native: &Array3<T>) -> Array3<T> {
        let [cx, cy, cz] = self.canonical_size();
        Array3::from_shape_fn((cz, cy, cx), |(z, y, x)| {
            let [i, j, k] = self.native_index([x, y, z]);
            native[[k, j, i]]
        })
    }

    /// Canonical `[z][y][x]` array → native `[k][j][i]` array (exact inverse of [`Self::to_canonical`]).
    pub fn to_native<T: Copy + Default>(&self, canonical: &Array3<T>) -> Array3<T> {
        let [nx, ny, nz] = self.native_size;
        let mut out = Array3::from_elem((nz, ny, nx), T::default());
        for ((z, y, x), v) in canonical.indexed_iter() {
            let [i, j, k] = self.native_index([x, y, z]);
            out[[k, j, i]] = *v;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::formats::nifti::{apply_affine, orientation_code};

    fn axes(code: &str, zooms: [f64; 3]) -> Affine {
        let mut a = [[0.0; 4]; 4];
        a[3][3] = 1.0;
        for (v, ch) in code.chars().enumerate() {
            let (w, s) = match ch {
                'R' => (0, 1.0),
                'L' => (0, -1.0),
                'A' => (1, 1.0),
                'P' => (1, -1.0),
                'S' => (2, 1.0),
                _ => (2, -1.0),
            };
            a[w][v] = s * zooms[v];
        }
        a[0][3] = 5.0;
        a[1][3] = -3.0;
        a[2][3] = 7.0;
        a
    }

    #[test]
    fn every_axis_class_becomes_ras_and_inverts_exactly() {
        let size = [4, 5, 6];
        let native = Array3::from_shape_fn((6, 5, 4), |(k, j, i)| (i + 10 * j + 100 * k) as i32);
        for code in ["RAS", "LPS", "LIA", "PSR", "ASL", "IRP", "SLA"] {
            let aff = axes(code, [1.0, 2.0, 3.0]);
            assert_eq!(orientation_code(&aff), code);
            let o = Orientation::of(&aff, size);
            let can = o.to_canonical(&native);
            let caff = o.canonical_affine(&aff);
            assert_eq!(orientation_code(&caff), "RAS", "{code}");
            // Every canonical voxel sits at the world position of its native voxel.
            for ((z, y, x), v) in can.indexed_iter() {
                let (i, j, k) = (v % 10, v / 10 % 10, v / 100);
                let wn = apply_affine(&aff, [i as f64, j as f64, k as f64]);
                let wc = apply_affine(&caff, [x as f64, y as f64, z as f64]);
                assert_eq!(wn, wc, "{code}");
            }
            assert_eq!(o.to_native(&can), native, "{code}");
            // The canonical axes point along +R, +A, +S.
            for (a, row) in caff.iter().take(3).enumerate() {
                assert!(row[a] > 0.0);
            }
        }
    }
}
