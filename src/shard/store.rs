//! The files that pass between the steps: plain `.npy` arrays (numpy format 1.0, little-endian, C order)
//! and one JSON record per step and block that lists them with their sizes and SHA-256, written last.
//!
//! A reader takes a record only when its `run_id` is the plan's and its step, block and round are the ones
//! it expects, and a file only when its size and digest are the record's: a missing, truncated or replaced
//! file, or the file of another plan, is refused naming it (exit 2). Rows of a 2-D array are read by
//! offset ([`NpyRows`]), so a step holds a few cases' rows at a time.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::plan::{Plan, FORMAT, VERSION};
use crate::{Error, Result};

/// An element type of the arrays.
pub trait Elem: Copy + Default + Send + Sync + 'static {
    const DESCR: &'static str;
    const SIZE: usize;
    fn put(self, out: &mut Vec<u8>);
    fn get(bytes: &[u8]) -> Self;
}

macro_rules! elem {
    ($t:ty, $descr:literal) => {
        impl Elem for $t {
            const DESCR: &'static str = $descr;
            const SIZE: usize = std::mem::size_of::<$t>();
            fn put(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn get(bytes: &[u8]) -> Self {
                <$t>::from_le_bytes(bytes.try_into().expect("one element's bytes"))
            }
        }
    };
}
elem!(f32, "<f4");
elem!(u32, "<u4");
elem!(f64, "<f8");
elem!(u64, "<u8");

/// A file a step wrote: its path relative to the work folder, size and SHA-256.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FileEntry {
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
}

/// The record of one step's files (and figures), written after them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepRecord {
    pub format: String,
    pub version: u32,
    pub step: String,
    pub run_id: String,
    /// 1-based block, None for a global step.
    pub block: Option<usize>,
    pub blocks: usize,
    /// Algorithm 2 round (1-based), for the `ratios` step.
    pub round: Option<usize>,
    pub files: Vec<FileEntry>,
    /// Step-specific figures (counts, seconds).
    pub details: serde_json::Value,
}

impl StepRecord {
    /// A record of `step` for `plan`.
    pub fn new(plan: &Plan, step: &str, block: Option<usize>, round: Option<usize>) -> Self {
        StepRecord {
            format: FORMAT.into(),
            version: VERSION,
            step: step.into(),
            run_id: plan.run_id.clone(),
            block: block.map(|b| b + 1),
            blocks: plan.blocks,
            round,
            files: Vec::new(),
            details: serde_json::Value::Null,
        }
    }

    /// Writes the record to `work/rel`.
    pub fn write(&self, work: &Path, rel: &str) -> Result<()> {
        crate::formats::atomic::write_json(&work.join(rel), self)
    }

    /// The entry of the file `rel`, checked on disk (size and SHA-256): its absolute path.
    pub fn verified(&self, work: &Path, record: &Path, rel: &str) -> Result<PathBuf> {
        let Some(entry) = self.files.iter().find(|f| f.path == rel) else {
            return Err(Error::bad_input(
                record,
                format!("does not list {rel}: the step that wrote it is of another version"),
            ));
        };
        let path = work.join(rel);
        let meta = std::fs::metadata(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::bad_input(
                &path,
                format!(
                    "missing ({} lists it): run its step again",
                    record.display()
                ),
            ),
            _ => Error::io(&path, e),
        })?;
        if meta.len() != entry.bytes {
            return Err(Error::bad_input(
                &path,
                format!(
                    "{} bytes, {} records {}: the file is truncated or was replaced; run its step again",
                    meta.len(),
                    record.display(),
                    entry.bytes
                ),
            ));
        }
        let digest = crate::formats::hash::sha256_file(&path)?;
        if digest != entry.sha256 {
            return Err(Error::bad_input(
                &path,
                format!(
                    "its SHA-256 is not the one {} records: the file changed after its step wrote it; run \
                     the step again",
                    record.display()
                ),
            ));
        }
        Ok(path)
    }
}

/// Reads the record `work/rel` of `step` (block `block`, 0-based; round `round`) and checks it belongs
/// to `plan`; `remedy` says which command makes it.
pub fn read_record(
    work: &Path,
    rel: &str,
    plan: &Plan,
    step: &str,
    block: Option<usize>,
    round: Option<usize>,
    remedy: &str,
) -> Result<StepRecord> {
    let path = work.join(rel);
    if !path.exists() {
        return Err(Error::bad_input(
            &path,
            format!("missing: run `{remedy}` first"),
        ));
    }
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let record: StepRecord = serde_json::from_str(&text)
        .map_err(|e| Error::bad_input(&path, format!("not a step record of mri-ad shard: {e}")))?;
    if record.format != FORMAT || record.version != VERSION {
        return Err(Error::bad_input(
            &path,
            format!(
                "format {} version {}, this build reads {FORMAT} version {VERSION}",
                record.format, record.version
            ),
        ));
    }
    if record.run_id != plan.run_id {
        return Err(Error::bad_input(
            &path,
            format!(
                "written for another plan (run {}, this work folder's plan is run {}): its step ran with \
                 other token files, settings or --blocks; run `{remedy}` again",
                short(&record.run_id),
                short(&plan.run_id)
            ),
        ));
    }
    let want_block = block.map(|b| b + 1);
    if record.step != step || record.block != want_block || record.round != round {
        return Err(Error::bad_input(
            &path,
            format!(
                "records step {} (block {:?}, round {:?}), expected {step} (block {want_block:?}, round \
                 {round:?})",
                record.step, record.block, record.round
            ),
        ));
    }
    Ok(record)
}

/// The first 12 hex digits of a run id.
pub fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// The `.npy` header (format 1.0) of an array of `T` with `shape`, padded to a multiple of 64 bytes.
fn header<T: Elem>(shape: &[usize]) -> Vec<u8> {
    let dims = match shape {
        [one] => format!("({one},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let dict = format!(
        "{{'descr': '{}', 'fortran_order': False, 'shape': {dims}, }}",
        T::DESCR
    );
    let unpadded = 10 + dict.len() + 1;
    let total = unpadded.div_ceil(64) * 64;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&((total - 10) as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out.resize(total - 1, b' ');
    out.push(b'\n');
    out
}

/// Writes `data` (C order, `shape`) as `work/rel` atomically and returns its entry.
pub fn write_array<T: Elem>(
    work: &Path,
    rel: &str,
    shape: &[usize],
    data: &[T],
) -> Result<FileEntry> {
    let path = work.join(rel);
    assert_eq!(
        shape.iter().product::<usize>(),
        data.len(),
        "{rel}: shape {shape:?} for {} values",
        data.len()
    );
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let mut hasher = Sha256::new();
    let mut bytes = 0u64;
    crate::formats::atomic::write_with(&path, |w| {
        let head = header::<T>(shape);
        hasher.update(&head);
        w.write_all(&head).map_err(|e| e.to_string())?;
        bytes += head.len() as u64;
        let mut buf = Vec::with_capacity(1 << 20);
        for chunk in data.chunks((1 << 20) / T::SIZE) {
            buf.clear();
            chunk.iter().for_each(|&v| v.put(&mut buf));
            hasher.update(&buf);
            w.write_all(&buf).map_err(|e| e.to_string())?;
            bytes += buf.len() as u64;
        }
        Ok(())
    })?;
    Ok(FileEntry {
        path: rel.into(),
        bytes,
        sha256: hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
    })
}

/// A 2-D (or 1-D) `.npy` array of `T` opened for reading rows by offset.
pub struct NpyRows<T: Elem> {
    file: File,
    path: PathBuf,
    data_start: u64,
    cols: usize,
    _elem: std::marker::PhantomData<T>,
}

impl<T: Elem> NpyRows<T> {
    /// Opens `path`, which must hold a C-order array of `T` with exactly `shape`.
    pub fn open(path: &Path, shape: &[usize]) -> Result<Self> {
        let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
        let mut pre = [0u8; 10];
        file.read_exact(&mut pre)
            .map_err(|_| Error::bad_input(path, "not a .npy file (too short)"))?;
        if &pre[..6] != b"\x93NUMPY" || pre[6] != 1 {
            return Err(Error::bad_input(path, "not a .npy file of format 1.0"));
        }
        let len = u16::from_le_bytes([pre[8], pre[9]]) as usize;
        let mut head = vec![0u8; len];
        file.read_exact(&mut head)
            .map_err(|_| Error::bad_input(path, "the .npy header is cut short"))?;
        let head = String::from_utf8_lossy(&head);
        let expected = header::<T>(shape);
        if head.as_bytes() != &expected[10..] {
            return Err(Error::bad_input(
                path,
                format!(
                    "holds {}, expected an array of {} with shape {shape:?}",
                    head.trim(),
                    T::DESCR
                ),
            ));
        }
        let data_start = 10 + len as u64;
        let want = data_start + (shape.iter().product::<usize>() * T::SIZE) as u64;
        let have = file.metadata().map_err(|e| Error::io(path, e))?.len();
        if have != want {
            return Err(Error::bad_input(
                path,
                format!("{have} bytes, its header describes {want}: the file is truncated"),
            ));
        }
        Ok(NpyRows {
            file,
            path: path.into(),
            data_start,
            cols: if shape.len() > 1 {
                shape[1..].iter().product()
            } else {
                1
            },
            _elem: std::marker::PhantomData,
        })
    }

    /// Rows `rows` (C order) appended to `out`.
    pub fn read_rows(&mut self, rows: std::ops::Range<usize>, out: &mut Vec<T>) -> Result<()> {
        let count = (rows.end - rows.start) * self.cols;
        let mut bytes = vec![0u8; count * T::SIZE];
        self.file
            .seek(SeekFrom::Start(
                self.data_start + (rows.start * self.cols * T::SIZE) as u64,
            ))
            .and_then(|_| self.file.read_exact(&mut bytes))
            .map_err(|e| Error::io(&self.path, e))?;
        out.extend(bytes.chunks_exact(T::SIZE).map(T::get));
        Ok(())
    }
}

/// The whole array `path` of `T` with `shape`.
pub fn read_array<T: Elem>(path: &Path, shape: &[usize]) -> Result<Vec<T>> {
    let mut rows = NpyRows::<T>::open(path, shape)?;
    let mut out = Vec::with_capacity(shape.iter().product());
    rows.read_rows(0..shape[0], &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrays_round_trip_and_rows_read_by_offset() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<f32> = (0..12).map(|v| v as f32 * 0.5).collect();
        let entry = write_array(dir.path(), "a.npy", &[4, 3], &data).unwrap();
        assert_eq!(
            entry.sha256,
            crate::formats::hash::sha256_file(&dir.path().join("a.npy")).unwrap()
        );
        // numpy's reader agrees with the header
        let back: ndarray::Array2<f32> = ndarray_npy::read_npy(dir.path().join("a.npy")).unwrap();
        assert_eq!(back.as_slice().unwrap(), &data[..]);
        let mut rows = NpyRows::<f32>::open(&dir.path().join("a.npy"), &[4, 3]).unwrap();
        let mut out = Vec::new();
        rows.read_rows(1..3, &mut out).unwrap();
        assert_eq!(out, &data[3..9]);
        assert!(NpyRows::<f32>::open(&dir.path().join("a.npy"), &[3, 4]).is_err());
        assert!(NpyRows::<u32>::open(&dir.path().join("a.npy"), &[4, 3]).is_err());
        let ones: Vec<u64> = vec![1; 5];
        write_array(dir.path(), "b.npy", &[5], &ones).unwrap();
        assert_eq!(
            read_array::<u64>(&dir.path().join("b.npy"), &[5]).unwrap(),
            ones
        );
    }

    #[test]
    fn a_truncated_array_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        write_array(dir.path(), "a.npy", &[4, 3], &[0f32; 12]).unwrap();
        let path = dir.path().join("a.npy");
        let len = std::fs::metadata(&path).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - 4)
            .unwrap();
        let err = NpyRows::<f32>::open(&path, &[4, 3]).err().unwrap();
        assert!(
            err.to_string().contains("a.npy") && err.to_string().contains("truncated"),
            "{err}"
        );
        assert_eq!(err.exit_code(), 2);
    }
}
