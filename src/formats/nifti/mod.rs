//! NIfTI-1 and NIfTI-2 volumes: reading (`.nii`, `.nii.gz`, `.hdr`/`.img`, gzipped pairs), the voxel-to-world
//! geometry, and writing maps and masks on an input's own grid.
//!
//! **Why our own parser.** The `nifti` crate (0.18) reads NIfTI-1 only and its writer does not let us copy an
//! input's qform *and* sform (with their codes) into a new file. The headers are fixed binary records
//! (348 bytes for NIfTI-1, 540 for NIfTI-2), so this module reads and writes them directly, with `flate2` for
//! gzip. Every field offset below follows the published `nifti1.h` / `nifti2.h` layouts.
//!
//! **Input.** A path. Gzip is recognised by its magic bytes (not the extension); the byte order by the header
//! size field (348 or 540, either endianness); single files by the magic `n+1`/`n+2`, pairs by `ni1`/`ni2`
//! (the voxels are then in the `.img`/`.img.gz` next to the `.hdr`).
//!
//! **Output.** A [`Volume`]: voxels as `f32` **after** `scl_slope`/`scl_inter`, in an `ndarray::Array3`
//! indexed `[k][j][i]` (shape `(nz, ny, nx)`, C order), which is exactly the file's memory order (NIfTI
//! stores `i` fastest). `affine` maps the voxel index `(i, j, k, 1)` to world millimetres in RAS+
//! (x: left→Right, y: posterior→Anterior, z: inferior→Superior).
//!
//! **Affine choice** (the standard's three methods, with nibabel's precedence): the sform when
//! `sform_code > 0`, else the qform when `qform_code > 0` (quaternion, `qfac` = sign of `pixdim[0]`), else
//! the fallback. The standard's fallback (method 1) has no origin; we use nibabel's instead (zooms on the
//! diagonal, the first axis flipped, the origin at the centre of the grid) so that our geometry agrees with
//! the Python tools users compare against. On writing, the header fields themselves (codes, quaternion,
//! offsets, srows, pixdim, units) are copied, so any reader interprets an output map exactly as its input.
//!
//! **Refused** with a clear error ([`crate::Error::BadInput`], exit code 2): files that are not NIfTI
//! (including Analyze 7.5), truncated or corrupt gzip streams, truncated voxel data, complex / RGB / binary /
//! float128 data, more than one volume along dimensions 4–7, images with fewer than 2 voxels along a spatial
//! axis (2D), a non-invertible or non-finite affine, and NaN or infinite voxel values.
//!
//! **Traps.** Scaling is applied in `f64`, then stored as `f32` (relative error ≤ 6e-8). A `scl_slope` of 0
//! or non-finite means "no scaling" (as in the standard and nibabel). Inputs are opened read-only; outputs
//! are written to a temporary name and renamed ([`crate::formats::atomic`]).

use std::path::{Path, PathBuf};

use ndarray::Array3;

mod affine;
mod read;
mod write;

pub use affine::{
    apply_affine, fmt_affine, fmt_number, identity, invert_affine, matmul, orientation_code,
    spacing_of,
};
pub use read::{read_header, read_volume, spatial_size};
pub use write::{header_for_affine, write_map_like, write_mask_like, write_volume};

/// File name suffixes recognised as NIfTI images (longest first, so that `x.nii.gz` gives the case `x`).
pub const NIFTI_SUFFIXES: &[&str] = &[".nii.gz", ".nii", ".hdr.gz", ".hdr"];

/// 4×4 voxel-to-world matrix (row-major; the last row is `[0, 0, 0, 1]`).
pub type Affine = [[f64; 4]; 4];

/// The header fields of a NIfTI file that matter for geometry and for copying onto outputs, widened to the
/// NIfTI-2 types.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Header {
    /// 1 or 2.
    pub version: u8,
    /// `dim[0..8]`.
    pub dim: [i64; 8],
    /// `pixdim[0..8]` (`pixdim[0]` is `qfac`).
    pub pixdim: [f64; 8],
    /// NIfTI datatype code of the stored voxels.
    pub datatype: i16,
    pub scl_slope: f64,
    pub scl_inter: f64,
    pub xyzt_units: i32,
    pub dim_info: u8,
    pub qform_code: i32,
    pub sform_code: i32,
    /// `quatern_b, quatern_c, quatern_d`.
    pub quatern: [f64; 3],
    /// `qoffset_x, qoffset_y, qoffset_z`.
    pub qoffset: [f64; 3],
    /// `srow_x, srow_y, srow_z`.
    pub srow: [[f64; 4]; 3],
}

impl Header {
    /// The qform as a 4×4 matrix (method 2 of the standard), whatever `qform_code` says.
    pub fn qform(&self) -> Affine {
        let [b, c, d] = self.quatern;
        let w2 = 1.0 - (b * b + c * c + d * d);
        // nibabel's tolerance for float32-stored quaternions: tiny negative w² is a 180° rotation.
        let a = if w2.abs() < 3.0 * f32::EPSILON as f64 {
            0.0
        } else {
            w2.max(0.0).sqrt()
        };
        let n = a * a + b * b + c * c + d * d;
        let r = if n < f64::EPSILON {
            [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
        } else {
            let s = 2.0 / n;
            let (x, y, z) = (b * s, c * s, d * s);
            let (wx, wy, wz) = (a * x, a * y, a * z);
            let (xx, xy, xz) = (b * x, b * y, b * z);
            let (yy, yz, zz) = (c * y, c * z, d * z);
            [
                [1.0 - (yy + zz), xy - wz, xz + wy],
                [xy + wz, 1.0 - (xx + zz), yz - wx],
                [xz - wy, yz + wx, 1.0 - (xx + yy)],
            ]
        };
        let qfac = if self.pixdim[0] < 0.0 { -1.0 } else { 1.0 };
        let zoom = [self.pixdim[1], self.pixdim[2], self.pixdim[3] * qfac];
        let mut m = identity();
        for row in 0..3 {
            for col in 0..3 {
                m[row][col] = r[row][col] * zoom[col];
            }
            m[row][3] = self.qoffset[row];
        }
        m
    }

    /// The sform as a 4×4 matrix (method 3), whatever `sform_code` says.
    pub fn sform(&self) -> Affine {
        let mut m = identity();
        m[..3].copy_from_slice(&self.srow);
        m
    }

    /// nibabel's fallback affine for files without qform and sform codes.
    pub fn fallback_affine(&self) -> Affine {
        let mut m = identity();
        for (a, row) in m.iter_mut().take(3).enumerate() {
            let n = self.dim[a + 1].max(1) as f64;
            let mut zoom = self.pixdim[a + 1];
            if a == 0 {
                zoom = -zoom;
            }
            row[a] = zoom;
            row[3] = -(n - 1.0) / 2.0 * zoom;
        }
        m
    }

    /// The voxel-to-world affine chosen as described in the module doc, and which method gave it.
    pub fn best_affine(&self) -> (Affine, &'static str) {
        if self.sform_code > 0 {
            (self.sform(), "sform")
        } else if self.qform_code > 0 {
            (self.qform(), "qform")
        } else {
            (self.fallback_affine(), "pixdim (no qform/sform code)")
        }
    }
}

/// A 3D volume read from a NIfTI file.
#[derive(Debug, Clone)]
pub struct Volume {
    /// Where it was read from.
    pub path: PathBuf,
    /// Voxel values after scaling, indexed `[k][j][i]`, shape `(nz, ny, nx)`.
    pub data: Array3<f32>,
    /// The header fields copied onto outputs.
    pub header: Header,
    /// Voxel `(i, j, k, 1)` → world RAS+ mm.
    pub affine: Affine,
}

impl Volume {
    /// Grid size in NIfTI order `[nx, ny, nz]`.
    pub fn size_ijk(&self) -> [usize; 3] {
        let s = self.data.shape();
        [s[2], s[1], s[0]]
    }

    /// Voxel spacing in mm along `i, j, k` (lengths of the affine's columns).
    pub fn spacing(&self) -> [f64; 3] {
        spacing_of(&self.affine)
    }

    /// Three-letter orientation code of the voxel axes (e.g. `RAS`, `LPS`, `LIA`): the world direction each
    /// voxel axis `i, j, k` points to, by its dominant component.
    pub fn orientation_code(&self) -> String {
        orientation_code(&self.affine)
    }

    /// Whether `other` lies on the same voxel grid: same size and affines equal within `tol_mm` millimetres
    /// at every corner of the grid.
    pub fn same_grid(&self, other: &Volume, tol_mm: f64) -> bool {
        same_grid(
            self.size_ijk(),
            &self.affine,
            other.size_ijk(),
            &other.affine,
            tol_mm,
        )
    }
}

/// The error for `file` (a label map or mask, `what`) whose voxel grid `actual` (size, affine) is not the
/// grid `expected` of its image `reference`.
pub fn grid_mismatch(
    file: &Path,
    what: &str,
    actual: ([usize; 3], &Affine),
    expected: ([usize; 3], &Affine),
    reference: &Path,
) -> crate::Error {
    crate::Error::Mismatch {
        path: file.into(),
        what: format!("the {what}'s voxel grid (size, affine)"),
        expected: format!("size {:?}, affine {}", expected.0, fmt_affine(expected.1)),
        actual: format!("size {:?}, affine {}", actual.0, fmt_affine(actual.1)),
        reference: reference.display().to_string(),
    }
}

/// Whether two grids coincide: same size and the eight corner voxels at the same world position within
/// `tol_mm`.
pub fn same_grid(
    size_a: [usize; 3],
    a: &Affine,
    size_b: [usize; 3],
    b: &Affine,
    tol_mm: f64,
) -> bool {
    if size_a != size_b {
        return false;
    }
    (0..8).all(|corner| {
        let p: [f64; 3] = std::array::from_fn(|ax| {
            if corner >> ax & 1 == 1 {
                (size_a[ax] - 1) as f64
            } else {
                0.0
            }
        });
        let (wa, wb) = (apply_affine(a, p), apply_affine(b, p));
        (0..3).all(|r| (wa[r] - wb[r]).abs() <= tol_mm)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn affines_print_without_float_noise() {
        let mut a = identity();
        a[0][0] = 1.2000000476837158;
        a[1][3] = -0.00001;
        a[2][3] = -87.575;
        assert_eq!(
            fmt_affine(&a),
            "[[1.2, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, -87.575]]"
        );
    }

    fn oblique() -> Affine {
        // A rotation of 20° about z and 10° about x, zooms (1.2, 0.9, 2.5), a flip, and an offset.
        let (a, b) = (20f64.to_radians(), 10f64.to_radians());
        let rz = [
            [a.cos(), -a.sin(), 0.0],
            [a.sin(), a.cos(), 0.0],
            [0.0, 0.0, 1.0],
        ];
        let rx = [
            [1.0, 0.0, 0.0],
            [0.0, b.cos(), -b.sin()],
            [0.0, b.sin(), b.cos()],
        ];
        let zoom = [-1.2, 0.9, 2.5];
        let mut m = identity();
        for i in 0..3 {
            for j in 0..3 {
                m[i][j] = (0..3).map(|k| rz[i][k] * rx[k][j]).sum::<f64>() * zoom[j];
            }
        }
        m[0][3] = 10.0;
        m[1][3] = -20.5;
        m[2][3] = 3.25;
        m
    }

    #[test]
    fn inverse_and_orientation() {
        let a = oblique();
        let inv = invert_affine(&a).unwrap();
        let id = matmul(&a, &inv);
        for (r, row) in id.iter().enumerate() {
            for (c, v) in row.iter().enumerate() {
                assert!((v - if r == c { 1.0 } else { 0.0 }).abs() < 1e-12);
            }
        }
        assert_eq!(orientation_code(&a), "LAS");
        let mut sing = identity();
        sing[2][2] = 0.0;
        assert!(invert_affine(&sing).is_none());
    }

    #[test]
    fn quaternion_round_trip_through_header() {
        let a = oblique();
        let h = header_for_affine(&a);
        assert_eq!(h.qform_code, 2);
        let q = h.qform();
        for r in 0..3 {
            for c in 0..4 {
                assert!((q[r][c] - a[r][c]).abs() < 1e-9, "{q:?} vs {a:?}");
            }
        }
    }

    #[test]
    fn the_header_is_read_without_the_voxels() {
        let dir = tempfile::tempdir().unwrap();
        let data = Array3::from_shape_fn((6, 5, 4), |(z, y, x)| (x + 10 * y + 100 * z) as f32);
        for name in ["v.nii", "v.nii.gz"] {
            let path = dir.path().join(name);
            write_volume(&path, &data, &oblique()).unwrap();
            let full = read_volume(&path).unwrap();
            assert_eq!(read_header(&path).unwrap().dim[1..4], [4, 5, 6], "{name}");
            assert_eq!(full.size_ijk(), [4, 5, 6]);
            // Cut off most of the voxels: the header still reads, the volume does not.
            let bytes = std::fs::read(&path).unwrap();
            let cut = dir.path().join(format!("cut-{name}"));
            std::fs::write(&cut, &bytes[..bytes.len() - 40]).unwrap();
            assert_eq!(read_header(&cut).unwrap().dim[1..4], [4, 5, 6], "{name}");
            assert!(read_volume(&cut).is_err(), "{name}");
        }
        let junk = dir.path().join("junk.nii.gz");
        std::fs::write(&junk, [0x1f, 0x8b, 1, 2, 3]).unwrap();
        let e = read_header(&junk).unwrap_err().to_string();
        assert!(e.contains("gzip") && e.contains("junk.nii.gz"), "{e}");
    }

    #[test]
    fn write_then_read_keeps_values_and_header() {
        let dir = tempfile::tempdir().unwrap();
        let data =
            Array3::from_shape_fn((3, 4, 5), |(k, j, i)| (i + 10 * j + 100 * k) as f32 - 7.5);
        let p = dir.path().join("v.nii.gz");
        write_volume(&p, &data, &oblique()).unwrap();
        let v = read_volume(&p).unwrap();
        assert_eq!(v.data, data);
        assert_eq!(v.size_ijk(), [5, 4, 3]);
        for r in 0..3 {
            for c in 0..4 {
                assert!((v.affine[r][c] - oblique()[r][c]).abs() < 1e-5);
            }
        }
        // A map written like it has the same header fields.
        let m = dir.path().join("m.nii");
        write_map_like(&m, &v, &data.mapv(|x| x * 2.0)).unwrap();
        let w = read_volume(&m).unwrap();
        assert_eq!(w.header, v.header);
        assert_eq!(w.data, data.mapv(|x| x * 2.0));
        let mk = dir.path().join("k.nii.gz");
        write_mask_like(&mk, &v, &data.mapv(|x| (x > 0.0) as u8)).unwrap();
        let k = read_volume(&mk).unwrap();
        assert_eq!(k.header.datatype, 2);
        assert_eq!(k.data, data.mapv(|x| (x > 0.0) as u8 as f32));
        // Wrong shape is refused without creating a file.
        let bad = dir.path().join("bad.nii.gz");
        let err = write_map_like(&bad, &v, &Array3::zeros((2, 2, 2))).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(!bad.exists());
    }

    #[test]
    fn refuses_bad_files_with_clear_messages() {
        let dir = tempfile::tempdir().unwrap();
        let data = Array3::from_shape_fn((3, 4, 5), |(k, j, i)| (i + j + k) as f32);
        let good = dir.path().join("g.nii");
        write_volume(&good, &data, &identity()).unwrap();
        let bytes = std::fs::read(&good).unwrap();

        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            (
                "trunc.nii",
                bytes[..bytes.len() - 10].to_vec(),
                "truncated voxel data",
            ),
            (
                "short.nii",
                bytes[..100].to_vec(),
                "truncated NIfTI-1 header",
            ),
            (
                "text.nii",
                b"hello world, not an image".to_vec(),
                "not a NIfTI file",
            ),
            (
                "magic.nii",
                {
                    let mut b = bytes.clone();
                    b[344..348].copy_from_slice(b"xyz\0");
                    b
                },
                "wrong magic",
            ),
            (
                "complex.nii",
                {
                    let mut b = bytes.clone();
                    b[70..72].copy_from_slice(&32i16.to_le_bytes());
                    b
                },
                "complex",
            ),
            (
                "four.nii",
                {
                    let mut b = bytes.clone();
                    b[40..42].copy_from_slice(&4i16.to_le_bytes());
                    b[48..50].copy_from_slice(&2i16.to_le_bytes());
                    b[46..48].copy_from_slice(&2i16.to_le_bytes());
                    b
                },
                "2 volumes",
            ),
            (
                "flat.nii",
                {
                    let mut b = bytes.clone();
                    b[46..48].copy_from_slice(&1i16.to_le_bytes());
                    b
                },
                "2D image",
            ),
            (
                "nan.nii",
                {
                    let mut b = bytes.clone();
                    let n = b.len();
                    b[n - 4..].copy_from_slice(&f32::NAN.to_le_bytes());
                    b
                },
                "NaN or infinite",
            ),
        ];
        for (name, content, want) in cases {
            let p = dir.path().join(name);
            std::fs::write(&p, &content).unwrap();
            let err = read_volume(&p).unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains(name) && msg.contains(want), "{name}: {msg}");
            assert_eq!(err.exit_code(), 2, "{name}");
        }
        // Truncated gzip.
        let gz = dir.path().join("g.nii.gz");
        write_volume(&gz, &data, &identity()).unwrap();
        let b = std::fs::read(&gz).unwrap();
        let t = dir.path().join("t.nii.gz");
        std::fs::write(&t, &b[..b.len() / 2]).unwrap();
        let msg = read_volume(&t).unwrap_err().to_string();
        assert!(msg.contains("t.nii.gz") && msg.contains("gzip"), "{msg}");
    }

    #[test]
    fn big_endian_int16_with_scaling_and_4th_dim_1() {
        // Hand-built big-endian NIfTI-1 pair-less file: 2×2×2 int16, slope 0.5, inter 10, dim[4] = 1.
        let mut h = vec![0u8; 352];
        h[0..4].copy_from_slice(&348i32.to_be_bytes());
        for (i, d) in [4i16, 2, 2, 2, 1, 1, 1, 1].iter().enumerate() {
            h[40 + 2 * i..42 + 2 * i].copy_from_slice(&d.to_be_bytes());
        }
        h[70..72].copy_from_slice(&4i16.to_be_bytes());
        for (i, p) in [1f32, 1.0, 2.0, 3.0].iter().enumerate() {
            h[76 + 4 * i..80 + 4 * i].copy_from_slice(&p.to_be_bytes());
        }
        h[108..112].copy_from_slice(&352f32.to_be_bytes());
        h[112..116].copy_from_slice(&0.5f32.to_be_bytes());
        h[116..120].copy_from_slice(&10f32.to_be_bytes());
        h[344..348].copy_from_slice(b"n+1\0");
        for v in 0..8i16 {
            h.extend_from_slice(&(v - 4).to_be_bytes());
        }
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("be.nii");
        std::fs::write(&p, &h).unwrap();
        let v = read_volume(&p).unwrap();
        assert_eq!(v.data[[1, 1, 1]], 3.0 * 0.5 + 10.0);
        assert_eq!(v.data[[0, 0, 0]], -4.0 * 0.5 + 10.0);
        assert_eq!(v.data[[0, 0, 1]], -3.0 * 0.5 + 10.0);
        // Fallback affine as nibabel: x flipped, centred.
        assert_eq!(v.affine[0][0], -1.0);
        assert_eq!(v.affine[0][3], 0.5);
        assert_eq!(v.affine[2][3], -1.5);
        assert_eq!(v.spacing(), [1.0, 2.0, 3.0]);
    }
}
