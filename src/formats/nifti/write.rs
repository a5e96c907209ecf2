//! Writing maps and masks on an input's own grid (its header's geometry fields copied), and plain volumes.

use std::path::Path;

use ndarray::Array3;

use super::{spacing_of, Affine, Header, Volume};
use crate::{Error, Result};

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
    crate::formats::atomic::write_with(path, |w| {
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
