//! Reading NIfTI-1/2 headers and voxels (single files and `.hdr`/`.img` pairs, gzipped or not).

use std::io::Read;
use std::path::{Path, PathBuf};

use ndarray::Array3;

use super::{invert_affine, Header, Volume};
use crate::{Error, Result};

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
