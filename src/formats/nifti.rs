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

use std::io::Read;
use std::path::{Path, PathBuf};

use ndarray::Array3;

use crate::{Error, Result};

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

/// The 4×4 identity.
pub fn identity() -> Affine {
    let mut m = [[0.0; 4]; 4];
    for (i, row) in m.iter_mut().enumerate() {
        row[i] = 1.0;
    }
    m
}

/// Lengths of the first three columns of an affine.
pub fn spacing_of(a: &Affine) -> [f64; 3] {
    std::array::from_fn(|c| (0..3).map(|r| a[r][c] * a[r][c]).sum::<f64>().sqrt())
}

/// Orientation code of an affine's voxel axes (see [`Volume::orientation_code`]).
pub fn orientation_code(a: &Affine) -> String {
    (0..3)
        .map(|c| {
            let (r, v) = (0..3)
                .map(|r| (r, a[r][c]))
                .max_by(|x, y| x.1.abs().total_cmp(&y.1.abs()))
                .expect("three rows");
            match (r, v >= 0.0) {
                (0, true) => 'R',
                (0, false) => 'L',
                (1, true) => 'A',
                (1, false) => 'P',
                (2, true) => 'S',
                _ => 'I',
            }
        })
        .collect()
}

/// Applies an affine to a point.
pub fn apply_affine(a: &Affine, p: [f64; 3]) -> [f64; 3] {
    std::array::from_fn(|r| a[r][0] * p[0] + a[r][1] * p[1] + a[r][2] * p[2] + a[r][3])
}

/// Product of two affines.
pub fn matmul(a: &Affine, b: &Affine) -> Affine {
    std::array::from_fn(|r| std::array::from_fn(|c| (0..4).map(|k| a[r][k] * b[k][c]).sum()))
}

/// Inverse of an affine (last row `[0,0,0,1]`); `None` when the 3×3 part is singular or not finite.
pub fn invert_affine(a: &Affine) -> Option<Affine> {
    let m = |r: usize, c: usize| a[r][c];
    let det = m(0, 0) * (m(1, 1) * m(2, 2) - m(1, 2) * m(2, 1))
        - m(0, 1) * (m(1, 0) * m(2, 2) - m(1, 2) * m(2, 0))
        + m(0, 2) * (m(1, 0) * m(2, 1) - m(1, 1) * m(2, 0));
    let scale = spacing_of(a).iter().product::<f64>();
    if !det.is_finite() || !scale.is_finite() || det.abs() <= 1e-12 * scale.max(1e-300) {
        return None;
    }
    let mut inv = identity();
    for (r, row) in inv.iter_mut().take(3).enumerate() {
        for (c, v) in row.iter_mut().take(3).enumerate() {
            let (r1, r2) = ((c + 1) % 3, (c + 2) % 3);
            let (c1, c2) = ((r + 1) % 3, (r + 2) % 3);
            *v = (m(r1, c1) * m(r2, c2) - m(r1, c2) * m(r2, c1)) / det;
        }
        row[3] = -(0..3).map(|k| row[k] * a[k][3]).sum::<f64>();
    }
    if inv.iter().flatten().all(|v| v.is_finite()) {
        Some(inv)
    } else {
        None
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

/// The top three rows of an affine as a user reads them: at most four decimals, no float noise
/// (`[[-1.2, 0, 0, 30], [0, 1, 0, 0], [0, 0, 2, -5.25]]`).
pub fn fmt_affine(a: &Affine) -> String {
    let row = |r: &[f64; 4]| {
        let cells: Vec<String> = r.iter().map(|&v| fmt_number(v)).collect();
        format!("[{}]", cells.join(", "))
    };
    let rows: Vec<String> = a.iter().take(3).map(row).collect();
    format!("[{}]", rows.join(", "))
}

/// A number with at most four decimals and no trailing zeros (`1.2000000476837158` → `1.2`).
pub fn fmt_number(v: f64) -> String {
    let s = format!("{v:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    match s {
        "-0" => "0".to_string(),
        s => s.to_string(),
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

// ---------------------------------------------------------------------------------------------------------
// Reading

/// Stored voxel types we read, with their size in bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Stored {
    U8,
    I8,
    I16,
    U16,
    I32,
    U32,
    I64,
    U64,
    F32,
    F64,
}

impl Stored {
    fn from_code(code: i16) -> std::result::Result<Self, String> {
        Ok(match code {
            2 => Stored::U8,
            256 => Stored::I8,
            4 => Stored::I16,
            512 => Stored::U16,
            8 => Stored::I32,
            768 => Stored::U32,
            1024 => Stored::I64,
            1280 => Stored::U64,
            16 => Stored::F32,
            64 => Stored::F64,
            1 => return Err("unsupported datatype: 1-bit binary voxels (DT_BINARY)".into()),
            32 | 1792 | 2048 => {
                return Err(format!(
                    "unsupported datatype: complex voxels (datatype code {code}); mri-ad needs real-valued \
                     intensities (take the magnitude first)"
                ))
            }
            128 | 2304 => {
                return Err(format!(
                    "unsupported datatype: RGB colour voxels (datatype code {code}); mri-ad needs a grey-value \
                     MRI volume"
                ))
            }
            1536 => return Err("unsupported datatype: 128-bit floating point (DT_FLOAT128)".into()),
            other => return Err(format!("unsupported datatype: unknown datatype code {other}")),
        })
    }

    fn size(self) -> usize {
        match self {
            Stored::U8 | Stored::I8 => 1,
            Stored::I16 | Stored::U16 => 2,
            Stored::I32 | Stored::U32 | Stored::F32 => 4,
            Stored::I64 | Stored::U64 | Stored::F64 => 8,
        }
    }

    /// Decodes one value from `b` (exactly `size()` bytes).
    fn decode(self, b: &[u8], big: bool) -> f64 {
        macro_rules! num {
            ($t:ty, $n:expr) => {{
                let arr: [u8; $n] = b.try_into().expect("sized chunk");
                (if big {
                    <$t>::from_be_bytes(arr)
                } else {
                    <$t>::from_le_bytes(arr)
                }) as f64
            }};
        }
        match self {
            Stored::U8 => b[0] as f64,
            Stored::I8 => b[0] as i8 as f64,
            Stored::I16 => num!(i16, 2),
            Stored::U16 => num!(u16, 2),
            Stored::I32 => num!(i32, 4),
            Stored::U32 => num!(u32, 4),
            Stored::I64 => num!(i64, 8),
            Stored::U64 => num!(u64, 8),
            Stored::F32 => num!(f32, 4),
            Stored::F64 => num!(f64, 8),
        }
    }
}

/// Little helper reading fixed-offset fields with a byte order.
struct Fields<'a> {
    b: &'a [u8],
    big: bool,
}

impl Fields<'_> {
    fn arr<const N: usize>(&self, off: usize) -> [u8; N] {
        self.b[off..off + N]
            .try_into()
            .expect("header length checked")
    }
    fn i16(&self, off: usize) -> i16 {
        let a = self.arr::<2>(off);
        if self.big {
            i16::from_be_bytes(a)
        } else {
            i16::from_le_bytes(a)
        }
    }
    fn i32(&self, off: usize) -> i32 {
        let a = self.arr::<4>(off);
        if self.big {
            i32::from_be_bytes(a)
        } else {
            i32::from_le_bytes(a)
        }
    }
    fn i64(&self, off: usize) -> i64 {
        let a = self.arr::<8>(off);
        if self.big {
            i64::from_be_bytes(a)
        } else {
            i64::from_le_bytes(a)
        }
    }
    fn f32(&self, off: usize) -> f64 {
        let a = self.arr::<4>(off);
        (if self.big {
            f32::from_be_bytes(a)
        } else {
            f32::from_le_bytes(a)
        }) as f64
    }
    fn f64(&self, off: usize) -> f64 {
        let a = self.arr::<8>(off);
        if self.big {
            f64::from_be_bytes(a)
        } else {
            f64::from_le_bytes(a)
        }
    }
}

/// A parsed header plus what is needed to find the voxels.
struct Parsed {
    header: Header,
    big: bool,
    vox_offset: u64,
    /// True for `.hdr`/`.img` pairs.
    pair: bool,
}

/// The first `limit` bytes of a file (fewer when it is shorter; `u64::MAX`: all of it), decompressed when the
/// content starts with the gzip magic bytes: only as much of the stream is inflated as those bytes need.
fn read_head_maybe_gz(path: &Path, limit: u64) -> Result<Vec<u8>> {
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut magic = Vec::with_capacity(2);
    (&mut file)
        .take(2)
        .read_to_end(&mut magic)
        .map_err(|e| Error::io(path, e))?;
    let gzip = magic == [0x1f, 0x8b];
    let rest = std::io::Cursor::new(magic).chain(file);
    let mut out = Vec::new();
    if gzip {
        flate2::read::MultiGzDecoder::new(rest)
            .take(limit)
            .read_to_end(&mut out)
            .map_err(|e| {
                Error::bad_input(
                    path,
                    format!(
                        "truncated or corrupt gzip data ({e}); the file is incomplete or damaged"
                    ),
                )
            })?;
    } else {
        rest.take(limit)
            .read_to_end(&mut out)
            .map_err(|e| Error::io(path, e))?;
    }
    Ok(out)
}

/// Reads a whole file, decompressing gzip when the content starts with the gzip magic bytes.
fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    read_head_maybe_gz(path, u64::MAX)
}

fn parse_header(path: &Path, b: &[u8]) -> Result<Parsed> {
    let bad = |p: String| Error::bad_input(path, p);
    if b.len() < 4 {
        return Err(bad(format!(
            "not a NIfTI file: only {} bytes, a NIfTI header has 348 (NIfTI-1) or 540 (NIfTI-2)",
            b.len()
        )));
    }
    let first: [u8; 4] = b[..4].try_into().expect("4 bytes");
    let (le, be) = (i32::from_le_bytes(first), i32::from_be_bytes(first));
    let (version, big) = match (le, be) {
        (348, _) => (1u8, false),
        (_, 348) => (1, true),
        (540, _) => (2, false),
        (_, 540) => (2, true),
        _ => {
            return Err(bad(format!(
                "not a NIfTI file: the header size field is {le}, expected 348 (NIfTI-1) or 540 (NIfTI-2)"
            )))
        }
    };
    let need = if version == 1 { 348 } else { 540 };
    if b.len() < need {
        return Err(bad(format!(
            "truncated NIfTI-{version} header: {} bytes, expected {need}",
            b.len()
        )));
    }
    let f = Fields { b, big };
    let pair;
    let header = if version == 1 {
        let magic = &b[344..348];
        pair = match magic {
            b"n+1\0" => false,
            b"ni1\0" => true,
            _ => {
                return Err(bad(format!(
                    "wrong magic {:?} at byte 344 (expected \"n+1\" or \"ni1\"): an Analyze 7.5 or corrupt \
                     header, which is unsupported; convert it to NIfTI first",
                    String::from_utf8_lossy(magic).trim_end_matches('\0')
                )))
            }
        };
        Header {
            version,
            dim: std::array::from_fn(|i| f.i16(40 + 2 * i) as i64),
            pixdim: std::array::from_fn(|i| f.f32(76 + 4 * i)),
            datatype: f.i16(70),
            scl_slope: f.f32(112),
            scl_inter: f.f32(116),
            xyzt_units: b[123] as i32,
            dim_info: b[39],
            qform_code: f.i16(252) as i32,
            sform_code: f.i16(254) as i32,
            quatern: std::array::from_fn(|i| f.f32(256 + 4 * i)),
            qoffset: std::array::from_fn(|i| f.f32(268 + 4 * i)),
            srow: std::array::from_fn(|r| std::array::from_fn(|c| f.f32(280 + 16 * r + 4 * c))),
        }
    } else {
        let magic = &b[4..12];
        pair = match magic {
            b"n+2\0\r\n\x1a\n" => false,
            b"ni2\0\r\n\x1a\n" => true,
            _ => {
                return Err(bad(format!(
                    "wrong magic {:?} at byte 4 (expected \"n+2\\0\\r\\n\\x1a\\n\" or \"ni2...\"): corrupt \
                     NIfTI-2 header (unsupported)",
                    String::from_utf8_lossy(magic)
                )))
            }
        };
        Header {
            version,
            dim: std::array::from_fn(|i| f.i64(16 + 8 * i)),
            pixdim: std::array::from_fn(|i| f.f64(104 + 8 * i)),
            datatype: f.i16(12),
            scl_slope: f.f64(176),
            scl_inter: f.f64(184),
            xyzt_units: f.i32(500),
            dim_info: b[524],
            qform_code: f.i32(344),
            sform_code: f.i32(348),
            quatern: std::array::from_fn(|i| f.f64(352 + 8 * i)),
            qoffset: std::array::from_fn(|i| f.f64(376 + 8 * i)),
            srow: std::array::from_fn(|r| std::array::from_fn(|c| f.f64(400 + 32 * r + 8 * c))),
        }
    };
    let vox_offset = if version == 1 {
        f.f32(108)
    } else {
        f.i64(168) as f64
    };
    if !vox_offset.is_finite() || vox_offset < 0.0 {
        return Err(bad(format!("invalid vox_offset {vox_offset}")));
    }
    Ok(Parsed {
        header,
        big,
        vox_offset: vox_offset as u64,
        pair,
    })
}

/// Checks the dimensions: a 3D volume, optionally with trailing dimensions of size 1.
pub fn spatial_size(path: &Path, h: &Header) -> Result<[usize; 3]> {
    let bad = |p: String| Error::bad_input(path, p);
    let nd = h.dim[0];
    if !(1..=7).contains(&nd) {
        return Err(bad(format!("invalid dim[0] = {nd} (must be 1..7)")));
    }
    let nd = nd as usize;
    let dims: Vec<i64> = h.dim[1..=nd].to_vec();
    if let Some(d) = dims.iter().find(|&&d| d < 1) {
        return Err(bad(format!(
            "invalid dimension {d} in dim = {:?}",
            &h.dim[..=nd]
        )));
    }
    let extra: i64 = dims.iter().skip(3).product();
    if extra > 1 {
        return Err(bad(format!(
            "unsupported: {}D image with {extra} volumes (shape {:?}); mri-ad needs one 3D volume per file \
             (extract one, e.g. with `fslroi` or nibabel)",
            nd, dims
        )));
    }
    let size: [usize; 3] = std::array::from_fn(|a| dims.get(a).copied().unwrap_or(1) as usize);
    if size.iter().any(|&n| n < 2) {
        return Err(bad(format!(
            "unsupported: a 2D image (shape {:?}); mri-ad needs a 3D volume with at least 2 voxels along each \
             axis",
            size
        )));
    }
    Ok(size)
}

/// The `.img` (or `.img.gz`) file that goes with a `.hdr`.
fn image_file_of(hdr: &Path) -> Result<PathBuf> {
    let name = hdr
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = name
        .strip_suffix(".hdr.gz")
        .or_else(|| name.strip_suffix(".hdr"))
        .ok_or_else(|| {
            Error::bad_input(
                hdr,
                "the header says the voxels are in a separate .img file (magic ni1/ni2), but this file is not \
                 named .hdr",
            )
        })?;
    let order = if name.ends_with(".gz") {
        [".img.gz", ".img"]
    } else {
        [".img", ".img.gz"]
    };
    for ext in order {
        let p = hdr.with_file_name(format!("{stem}{ext}"));
        if p.exists() {
            return Ok(p);
        }
    }
    Err(Error::bad_input(
        hdr,
        format!(
            "the image file {stem}.img (or {stem}.img.gz) that goes with this header is missing"
        ),
    ))
}

/// Reads only the header of a NIfTI file: the first 540 bytes at most (a NIfTI-2 header), so the voxels are
/// neither read nor decompressed, and damage after the header goes unnoticed here.
pub fn read_header(path: &Path) -> Result<Header> {
    let bytes = read_head_maybe_gz(path, 540)?;
    let parsed = parse_header(path, &bytes)?;
    spatial_size(path, &parsed.header)?;
    Ok(parsed.header)
}

/// Reads a 3D volume (see the module doc for what is accepted and refused).
pub fn read_volume(path: &Path) -> Result<Volume> {
    let bytes = read_maybe_gz(path)?;
    let parsed = parse_header(path, &bytes)?;
    let h = &parsed.header;
    let size = spatial_size(path, h)?;
    let stored = Stored::from_code(h.datatype).map_err(|p| Error::bad_input(path, p))?;
    let (affine, method) = h.best_affine();
    if invert_affine(&affine).is_none() {
        return Err(Error::bad_input(
            path,
            format!(
                "the voxel-to-world affine (from the {method}) is singular or not finite: {affine:?}"
            ),
        ));
    }
    let nvox = size[0] * size[1] * size[2];
    let nbytes = nvox * stored.size();
    let (data_path, data_bytes);
    let data_src: &[u8] = if parsed.pair {
        data_path = image_file_of(path)?;
        data_bytes = read_maybe_gz(&data_path)?;
        &data_bytes
    } else {
        data_path = path.to_path_buf();
        if parsed.vox_offset < if h.version == 1 { 348 } else { 540 } {
            return Err(Error::bad_input(
                path,
                format!(
                    "vox_offset {} points inside the header of a single-file NIfTI",
                    parsed.vox_offset
                ),
            ));
        }
        &bytes
    };
    let start = parsed.vox_offset as usize;
    let available = data_src.len().saturating_sub(start);
    if available < nbytes {
        return Err(Error::bad_input(
            &data_path,
            format!(
                "truncated voxel data: {nvox} voxels of {} bytes need {nbytes} bytes after offset {start}, but \
                 only {available} are present",
                stored.size()
            ),
        ));
    }
    let (slope, inter) = if h.scl_slope == 0.0 || !h.scl_slope.is_finite() {
        (1.0, 0.0)
    } else if !h.scl_inter.is_finite() {
        return Err(Error::bad_input(
            path,
            format!(
                "scl_slope is {} but scl_inter is not finite ({})",
                h.scl_slope, h.scl_inter
            ),
        ));
    } else {
        (h.scl_slope, h.scl_inter)
    };
    let raw = &data_src[start..start + nbytes];
    let mut values = Vec::with_capacity(nvox);
    let mut bad_count = 0usize;
    let mut first_bad = None;
    for (n, chunk) in raw.chunks_exact(stored.size()).enumerate() {
        let v = (stored.decode(chunk, parsed.big) * slope + inter) as f32;
        if !v.is_finite() {
            bad_count += 1;
            first_bad.get_or_insert(n);
        }
        values.push(v);
    }
    if let Some(n) = first_bad {
        let (i, j, k) = (n % size[0], n / size[0] % size[1], n / (size[0] * size[1]));
        return Err(Error::bad_input(
            &data_path,
            format!(
                "{bad_count} voxel values are NaN or infinite (after scaling), the first at voxel (i, j, k) = \
                 ({i}, {j}, {k}); mri-ad needs finite intensities"
            ),
        ));
    }
    let data = Array3::from_shape_vec((size[2], size[1], size[0]), values)
        .expect("shape matches the voxel count");
    Ok(Volume {
        path: path.to_path_buf(),
        data,
        header: parsed.header,
        affine,
    })
}

// ---------------------------------------------------------------------------------------------------------
// Writing

/// Voxel types we write.
#[derive(Debug, Clone, Copy)]
enum OutType {
    F32,
    U8,
}

/// Builds the bytes of a single-file NIfTI (header, empty extension flag, voxels; little-endian) whose
/// geometry fields are copied from `geom`. NIfTI-1 unless a dimension does not fit in 16 bits.
fn encode(geom: &Header, size: [usize; 3], out: OutType, voxels: &[u8], descrip: &str) -> Vec<u8> {
    let (code, bitpix): (i16, i16) = match out {
        OutType::F32 => (16, 32),
        OutType::U8 => (2, 8),
    };
    let mut dim = [1i64; 8];
    dim[0] = 3;
    for a in 0..3 {
        dim[a + 1] = size[a] as i64;
    }
    let mut pixdim = geom.pixdim;
    pixdim[0] = if geom.pixdim[0] < 0.0 { -1.0 } else { 1.0 };
    let mut desc = [0u8; 80];
    let n = descrip.len().min(79);
    desc[..n].copy_from_slice(&descrip.as_bytes()[..n]);
    let v1 = size.iter().all(|&n| n <= i16::MAX as usize);
    let mut h: Vec<u8>;
    if v1 {
        h = vec![0u8; 352];
        let put = |h: &mut Vec<u8>, off: usize, b: &[u8]| h[off..off + b.len()].copy_from_slice(b);
        put(&mut h, 0, &348i32.to_le_bytes());
        h[38] = b'r';
        h[39] = geom.dim_info;
        for (i, d) in dim.iter().enumerate() {
            put(&mut h, 40 + 2 * i, &(*d as i16).to_le_bytes());
        }
        put(&mut h, 70, &code.to_le_bytes());
        put(&mut h, 72, &bitpix.to_le_bytes());
        for (i, p) in pixdim.iter().enumerate() {
            put(&mut h, 76 + 4 * i, &(*p as f32).to_le_bytes());
        }
        put(&mut h, 108, &352f32.to_le_bytes());
        put(&mut h, 112, &1f32.to_le_bytes());
        put(&mut h, 116, &0f32.to_le_bytes());
        h[123] = geom.xyzt_units as u8;
        put(&mut h, 148, &desc);
        put(&mut h, 252, &(geom.qform_code as i16).to_le_bytes());
        put(&mut h, 254, &(geom.sform_code as i16).to_le_bytes());
        for i in 0..3 {
            put(&mut h, 256 + 4 * i, &(geom.quatern[i] as f32).to_le_bytes());
            put(&mut h, 268 + 4 * i, &(geom.qoffset[i] as f32).to_le_bytes());
        }
        for r in 0..3 {
            for c in 0..4 {
                put(
                    &mut h,
                    280 + 16 * r + 4 * c,
                    &(geom.srow[r][c] as f32).to_le_bytes(),
                );
            }
        }
        put(&mut h, 344, b"n+1\0");
    } else {
        h = vec![0u8; 544];
        let put = |h: &mut Vec<u8>, off: usize, b: &[u8]| h[off..off + b.len()].copy_from_slice(b);
        put(&mut h, 0, &540i32.to_le_bytes());
        put(&mut h, 4, b"n+2\0\r\n\x1a\n");
        put(&mut h, 12, &code.to_le_bytes());
        put(&mut h, 14, &bitpix.to_le_bytes());
        for (i, d) in dim.iter().enumerate() {
            put(&mut h, 16 + 8 * i, &d.to_le_bytes());
        }
        for (i, p) in pixdim.iter().enumerate() {
            put(&mut h, 104 + 8 * i, &p.to_le_bytes());
        }
        put(&mut h, 168, &544i64.to_le_bytes());
        put(&mut h, 176, &1f64.to_le_bytes());
        put(&mut h, 184, &0f64.to_le_bytes());
        put(&mut h, 240, &desc);
        put(&mut h, 344, &geom.qform_code.to_le_bytes());
        put(&mut h, 348, &geom.sform_code.to_le_bytes());
        for i in 0..3 {
            put(&mut h, 352 + 8 * i, &geom.quatern[i].to_le_bytes());
            put(&mut h, 376 + 8 * i, &geom.qoffset[i].to_le_bytes());
        }
        for r in 0..3 {
            for c in 0..4 {
                put(&mut h, 400 + 32 * r + 8 * c, &geom.srow[r][c].to_le_bytes());
            }
        }
        put(&mut h, 500, &geom.xyzt_units.to_le_bytes());
        h[524] = geom.dim_info;
    }
    h.extend_from_slice(voxels);
    h
}

fn write_nifti(path: &Path, bytes: Vec<u8>) -> Result<()> {
    let gz = path.to_string_lossy().ends_with(".gz");
    super::atomic::write_with(path, |w| {
        use std::io::Write;
        if gz {
            let mut enc = flate2::write::GzEncoder::new(w, flate2::Compression::new(6));
            enc.write_all(&bytes).map_err(|e| e.to_string())?;
            enc.finish().map_err(|e| e.to_string())?;
            Ok(())
        } else {
            w.write_all(&bytes).map_err(|e| e.to_string())
        }
    })
}

fn check_shape(path: &Path, input: &Volume, shape: &[usize], what: &str) -> Result<()> {
    if shape != input.data.shape() {
        return Err(Error::Mismatch {
            path: path.into(),
            what: format!("the {what} array shape [k, j, i]"),
            expected: format!("{:?}", input.data.shape()),
            actual: format!("{shape:?}"),
            reference: input.path.display().to_string(),
        });
    }
    Ok(())
}

/// Writes a float32 map on `input`'s grid (`data` indexed `[k][j][i]` like `input.data`), copying the input's
/// qform, sform (codes included), pixdim and units. `.gz` paths are gzipped. Atomic (temporary name + rename).
pub fn write_map_like(path: &Path, input: &Volume, data: &Array3<f32>) -> Result<()> {
    check_shape(path, input, data.shape(), "map")?;
    let voxels: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    let bytes = encode(
        &input.header,
        input.size_ijk(),
        OutType::F32,
        &voxels,
        "mri-ad anomaly map",
    );
    write_nifti(path, bytes)
}

/// Writes a uint8 mask on `input`'s grid (see [`write_map_like`]).
pub fn write_mask_like(path: &Path, input: &Volume, data: &Array3<u8>) -> Result<()> {
    check_shape(path, input, data.shape(), "mask")?;
    let voxels: Vec<u8> = data.iter().copied().collect();
    let bytes = encode(
        &input.header,
        input.size_ijk(),
        OutType::U8,
        &voxels,
        "mri-ad mask",
    );
    write_nifti(path, bytes)
}

/// A header carrying only `affine` (as sform, code 2 "aligned", and as qform when the affine is a rotation
/// times positive zooms, possibly with a flip), for volumes we create ourselves such as the S³ cube.
pub fn header_for_affine(affine: &Affine) -> Header {
    let zoom = spacing_of(affine);
    let mut h = Header {
        version: 1,
        dim: [3, 1, 1, 1, 1, 1, 1, 1],
        pixdim: [1.0, zoom[0], zoom[1], zoom[2], 1.0, 1.0, 1.0, 1.0],
        datatype: 16,
        scl_slope: 1.0,
        scl_inter: 0.0,
        xyzt_units: 2, // mm
        dim_info: 0,
        qform_code: 0,
        sform_code: 2,
        quatern: [0.0; 3],
        qoffset: [affine[0][3], affine[1][3], affine[2][3]],
        srow: [affine[0], affine[1], affine[2]],
    };
    if let Some((quat, qfac)) = rotation_to_quaternion(affine, zoom) {
        h.quatern = quat;
        h.pixdim[0] = qfac;
        h.qform_code = 2;
    }
    h
}

/// `(b, c, d)` and `qfac` of an affine whose columns are orthogonal (up to 1e-4), else `None`.
fn rotation_to_quaternion(a: &Affine, zoom: [f64; 3]) -> Option<([f64; 3], f64)> {
    if zoom.iter().any(|&z| z <= 0.0) {
        return None;
    }
    let mut r: [[f64; 3]; 3] = std::array::from_fn(|i| std::array::from_fn(|j| a[i][j] / zoom[j]));
    let det = r[0][0] * (r[1][1] * r[2][2] - r[1][2] * r[2][1])
        - r[0][1] * (r[1][0] * r[2][2] - r[1][2] * r[2][0])
        + r[0][2] * (r[1][0] * r[2][1] - r[1][1] * r[2][0]);
    let qfac = if det < 0.0 { -1.0 } else { 1.0 };
    for row in r.iter_mut() {
        row[2] *= qfac;
    }
    for i in 0..3 {
        for j in 0..3 {
            let dot: f64 = (0..3).map(|k| r[k][i] * r[k][j]).sum();
            let want = if i == j { 1.0 } else { 0.0 };
            if (dot - want).abs() > 1e-4 {
                return None;
            }
        }
    }
    // Shepperd's method, choosing the largest diagonal term for stability; result has a ≥ 0.
    let tr = r[0][0] + r[1][1] + r[2][2];
    let (a, b, c, d);
    if tr > 0.0 {
        let s = (tr + 1.0).sqrt() * 2.0;
        a = 0.25 * s;
        b = (r[2][1] - r[1][2]) / s;
        c = (r[0][2] - r[2][0]) / s;
        d = (r[1][0] - r[0][1]) / s;
    } else if r[0][0] > r[1][1] && r[0][0] > r[2][2] {
        let s = (1.0 + r[0][0] - r[1][1] - r[2][2]).sqrt() * 2.0;
        a = (r[2][1] - r[1][2]) / s;
        b = 0.25 * s;
        c = (r[0][1] + r[1][0]) / s;
        d = (r[0][2] + r[2][0]) / s;
    } else if r[1][1] > r[2][2] {
        let s = (1.0 + r[1][1] - r[0][0] - r[2][2]).sqrt() * 2.0;
        a = (r[0][2] - r[2][0]) / s;
        b = (r[0][1] + r[1][0]) / s;
        c = 0.25 * s;
        d = (r[1][2] + r[2][1]) / s;
    } else {
        let s = (1.0 + r[2][2] - r[0][0] - r[1][1]).sqrt() * 2.0;
        a = (r[1][0] - r[0][1]) / s;
        b = (r[0][2] + r[2][0]) / s;
        c = (r[1][2] + r[2][1]) / s;
        d = 0.25 * s;
    }
    let sign = if a < 0.0 { -1.0 } else { 1.0 };
    Some(([b * sign, c * sign, d * sign], qfac))
}

/// Writes a float32 volume with its own affine (used for the S³ cube and for tests): sform code 2 and, when
/// the affine allows it, the same transform as qform.
pub fn write_volume(path: &Path, data: &Array3<f32>, affine: &Affine) -> Result<()> {
    let s = data.shape();
    let header = header_for_affine(affine);
    let voxels: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    let bytes = encode(
        &header,
        [s[2], s[1], s[0]],
        OutType::F32,
        &voxels,
        "mri-ad volume",
    );
    write_nifti(path, bytes)
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
