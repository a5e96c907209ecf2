//! The healthy reference bank (`mri-ad bank`, `mri-ad score --bank`): the token files of a healthy set and
//! the distance tables among them, stored once so that new query cases are scored against the set without
//! computing the healthy-vs-healthy distances again.
//!
//! Input of [`build`]: a folder of token files (`--tokens DIR`) and the search settings. Output: the bank
//! folder,
//!
//! ```text
//! BANK/bank.json            the manifest (format "mri-ad-bank", version 1), written last
//! BANK/tokens/<case>.bank.npz  the case's active tokens: rows f32 [L, R, D], positions i64 [R],
//!                           valid bool [M], grid i64 [3] (R = active positions, ascending)
//! BANK/tokens/<case>.tokens.json  a copy of the token file's sidecar, when it has one
//! BANK/tables/view<v>.npz   per view: dist f32 [rows, H], arg u32 [rows, H] (grid positions), rows i64 [H]
//! ```
//!
//! where `rows` are the active tokens of every case in case order (the packed layout of [`crate::knn`]) and
//! column `t` is the bank's case `t`. The manifest records each file's size and SHA-256, the cases' order,
//! the token shape, the preparation the tokens were made with (the sidecars' model, layers, projection,
//! seed, size, tokenizer, void rule and preprocessing) and the search (`--search`, `--radius`,
//! `--keep-void`) the tables were made with.
//!
//! New volumes ([`Bank::volume_preparation`], `extract --bank`): the sidecars' preparation holds
//! everything needed to prepare them as the bank's were (token settings, crop, the world space of
//! `--crop batch`, the Nyúl landmarks); a bank case prepared again this way gives bitwise its tokens.
//!
//! Scoring ([`Bank::open`], [`Bank::token_sets`], [`Bank::load_table`]): the batch is the bank's cases and the query cases,
//! sorted by case id, exactly as `score --tokens` sorts one folder holding all their token files; the
//! stored tables fill every bank-vs-bank entry and only the pairs with a query case are computed. Each
//! pair's minima depend on that pair alone, so the result equals that `score --tokens` run.
//!
//! Traps:
//! * The bank's cases must keep their relative order in the joined batch for every stored pair to keep its
//!   orientation (rows of the earlier case against the later one), so the bank's case order is the sorted
//!   order and the joined batch is sorted too.
//! * The bank keeps only the active tokens (30 % of a brain volume's): reading a full token file is what
//!   a query's run would otherwise spend most of its time on. Void tokens take no part in the search
//!   without `--keep-void` (and with it every token is active and kept), so the scores are the same.
//! * A bank case's [`crate::TokenSet`] ([`Bank::token_sets`]) holds zeros: its tokens are the packed rows
//!   returned beside it, which [`crate::score::KnownTables::packed`] hands to the scorer. Anything that
//!   reads `TokenSet::tokens` of a bank case reads zeros.
//! * A bank is never written by scoring. A file that is missing, whose size differs from the manifest's,
//!   or that does not read (a truncated `.npz` fails its zip checks) is refused with exit 2 naming it;
//!   SHA-256 is recorded but recomputed only on request ([`Bank::verify`], `--verify-bank`: the whole
//!   bank is read once), so a same-size swap goes unnoticed without it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ndarray::{Array1, Array2};
use ndarray_npy::{NpzReader, NpzWriter};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::formats::tokens::{self, TokenFile};
use crate::knn::{DistTable, KnnPlan, PackedView};
use crate::messages::Reporter;
use crate::progress::Progress;
use crate::score::{ScoreConfig, SearchKind};
use crate::{Error, Result};

/// The manifest's file name.
pub const MANIFEST: &str = "bank.json";
/// The manifest's `format`.
pub const FORMAT: &str = "mri-ad-bank";
/// The bank format this build writes and reads.
pub const VERSION: u32 = 1;
/// The sidecar fields a query's token files must share with the bank's (how the tokens were made).
pub const PREPARATION_KEYS: [&str; 8] = [
    "model_sha256",
    "layers",
    "proj_dim",
    "seed",
    "size",
    "tokenizer",
    "void_threshold",
    "preprocessing",
];

/// A file of the bank, relative to its folder, with its size and SHA-256.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BankFile {
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
}

/// One healthy case of the bank.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BankCase {
    pub case: String,
    /// The case's active tokens (`tokens/<case>.bank.npz`).
    pub tokens: BankFile,
    /// SHA-256 of the token file the bank was built from.
    pub source_sha256: String,
    pub sidecar: Option<BankFile>,
    /// Active tokens of the case (its rows in the tables).
    pub rows: usize,
}

/// The token layout every case of the bank has.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Shape {
    pub views: usize,
    pub positions: usize,
    pub grid: [usize; 3],
    pub dim: usize,
}

/// The search the tables were made with.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SearchSettings {
    pub search: SearchKind,
    /// The window radius (`null` for the exact search).
    pub radius: Option<usize>,
    pub keep_void: bool,
}

impl SearchSettings {
    fn of(config: &ScoreConfig) -> Self {
        SearchSettings {
            search: config.search,
            radius: (config.search == SearchKind::Window).then_some(config.radius),
            keep_void: config.keep_void,
        }
    }
}

/// `bank.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    pub mri_ad_version: String,
    pub cases: Vec<BankCase>,
    pub shape: Shape,
    /// The sidecar fields of [`PREPARATION_KEYS`] the bank's token files share (absent keys left out).
    pub preparation: BTreeMap<String, Value>,
    pub search: SearchSettings,
    /// One table file per view, in view order.
    pub tables: Vec<BankFile>,
}

/// Everything `mri-ad bank` needs.
#[derive(Debug, Clone)]
pub struct BuildConfig {
    /// The folder of healthy token files.
    pub tokens: PathBuf,
    pub out: PathBuf,
    /// The search settings (`search`, `radius`, `keep_void`) and `threads`, `memory_budget`.
    pub score: ScoreConfig,
    pub force: bool,
    pub report: Reporter,
    pub progress: bool,
}

/// The preparation fields of a token file's sidecar (none without a sidecar).
fn preparation_of(file: &TokenFile) -> BTreeMap<String, Value> {
    PREPARATION_KEYS
        .iter()
        .filter_map(|&k| Some((k.to_string(), file.sidecar.as_ref()?.get(k)?.clone())))
        .collect()
}

/// Refuses `file` when its preparation differs from `reference`'s (named `what`), naming the first
/// setting that differs.
fn check_preparation(
    reference: &BTreeMap<String, Value>,
    what: &str,
    file: &TokenFile,
    hint: &str,
) -> Result<()> {
    let own = preparation_of(file);
    for key in PREPARATION_KEYS {
        let (want, got) = (reference.get(key), own.get(key));
        if want != got {
            let show = |v: Option<&Value>| v.map_or("not recorded".to_string(), compact);
            return Err(Error::bad_input(
                tokens::sidecar_path(&file.path),
                format!(
                    "the token setting `{key}` is {}, but {what} has {}: {hint}",
                    show(got),
                    show(want)
                ),
            ));
        }
    }
    Ok(())
}

/// A JSON value on one line, shortened for a message.
fn compact(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 120 {
        format!("{}…", s.chars().take(120).collect::<String>())
    } else {
        s
    }
}

/// Builds the bank of `cfg.tokens` into `cfg.out`.
pub fn build(cfg: &BuildConfig) -> Result<Manifest> {
    let started = std::time::Instant::now();
    cfg.score.validate()?;
    let files = tokens::read_batch(&cfg.tokens)?;
    if files.len() < 2 {
        return Err(Error::BadBatch {
            path: cfg.tokens.clone(),
            problem: format!(
                "{} token file(s): a bank needs at least 2 healthy cases",
                files.len()
            ),
        });
    }
    let preparation = preparation_of(&files[0]);
    let first = files[0].path.display().to_string();
    for f in &files[1..] {
        check_preparation(
            &preparation,
            &first,
            f,
            "every token file of a bank must be made with the same settings",
        )?;
    }
    crate::score::check_window_grid(files.iter().map(|f| &f.set), cfg.score.search)?;
    let _lock = prepare_bank_folder(&cfg.out, cfg.force, &cfg.report)?;
    std::fs::create_dir_all(cfg.out.join("tokens")).map_err(|e| Error::io(&cfg.out, e))?;
    std::fs::create_dir_all(cfg.out.join("tables")).map_err(|e| Error::io(&cfg.out, e))?;
    let cases = write_bank_tokens(&cfg.out, &files, &cfg.score)?;
    // The token sets are moved out of the files: the tokens are the largest thing in memory.
    let sets: Vec<crate::TokenSet> = files.into_iter().map(|f| f.set).collect();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(cfg.score.threads)
        .build()
        .map_err(|e| Error::internal(format!("cannot start the worker threads: {e}")))?;
    let n_views = sets[0].n_views();
    let progress = Progress::new(cfg.progress);
    let n = sets.len();
    let bar = progress.bar((n * (n - 1) / 2 * n_views) as u64, "bank distances");
    let mut tables = Vec::with_capacity(n_views);
    for v in 0..n_views {
        let table = pool.install(|| {
            let view = PackedView::pack(&sets, v, |a, p| cfg.score.keep_void || sets[a].valid[p]);
            let max_rows = (0..n).map(|a| view.n_rows(a)).max().unwrap_or(0);
            let plan = KnnPlan::for_budget(
                cfg.score.memory_budget * 1024 * 1024,
                max_rows,
                rayon::current_num_threads(),
            );
            DistTable::compute(&view, plan, cfg.score.knn_search(), &|| bar.inc(1))
        });
        let rel = format!("tables/view{v}.npz");
        write_table(&cfg.out.join(&rel), &table)?;
        tables.push(bank_file(&cfg.out, &rel)?);
    }
    bar.finish_and_clear();
    let manifest = Manifest {
        format: FORMAT.into(),
        version: VERSION,
        mri_ad_version: env!("CARGO_PKG_VERSION").into(),
        cases,
        shape: Shape {
            views: n_views,
            positions: sets[0].n_positions(),
            grid: sets[0].grid,
            dim: sets[0].dim(),
        },
        preparation,
        search: SearchSettings::of(&cfg.score),
        tables,
    };
    crate::formats::atomic::write_json(&cfg.out.join(MANIFEST), &manifest)?;
    cfg.report.say(format!(
        "bank of {n} cases ({n_views} views, {}) written to {} in {:.1} s",
        describe_search(&manifest.search),
        cfg.out.display(),
        started.elapsed().as_secs_f64()
    ));
    Ok(manifest)
}

/// Creates (or, with `force`, empties of a previous bank's files) the bank folder and locks it. A
/// non-empty folder that is not a bank is refused even with `force`; the manifest goes first, so a bank
/// being rebuilt is never taken for a finished one.
fn prepare_bank_folder(
    out: &Path,
    force: bool,
    report: &Reporter,
) -> Result<crate::run::lock::FolderLock> {
    if out.exists() && !out.is_dir() {
        return Err(Error::BadOutput {
            path: out.into(),
            problem: "exists and is not a folder; give a new folder for the bank".into(),
        });
    }
    let entries: Vec<String> = match std::fs::read_dir(out) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n != crate::run::lock::LOCK_FILE)
            .collect(),
        Err(_) => Vec::new(),
    };
    if !entries.is_empty() {
        // A finished bank has bank.json; one whose build was stopped has only the bank's own entries.
        let finished = out.join(MANIFEST).exists();
        let banks_own = entries
            .iter()
            .all(|e| [MANIFEST, "tokens", "tables"].contains(&e.as_str()) || e.starts_with('.'));
        if !force || !banks_own {
            let mut entries = entries.clone();
            entries.sort();
            return Err(Error::BadOutput {
                path: out.into(),
                problem: match (banks_own, finished) {
                    (true, true) => {
                        "holds a bank already; give --force to replace it, or another --out".into()
                    }
                    (true, false) => {
                        "holds an unfinished bank (no bank.json: its build was stopped); \
                                      give --force to replace it, or another --out"
                            .into()
                    }
                    _ => format!(
                        "is not empty and holds no bank ({}); give a new folder for the bank",
                        crate::messages::first_few(&entries)
                    ),
                },
            });
        }
    }
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    crate::run::lock::refuse_if_in_use(out)?;
    let lock = crate::run::lock::acquire(out, report)?;
    if force {
        for name in [MANIFEST, "tokens", "tables"] {
            crate::run::folder::remove_entry(&out.join(name))?;
        }
    }
    Ok(lock)
}

/// Writes every case's active tokens (and a copy of its sidecar) into `out/tokens/` and describes them.
fn write_bank_tokens(
    out: &Path,
    files: &[TokenFile],
    config: &ScoreConfig,
) -> Result<Vec<BankCase>> {
    let digests = crate::run::folder::hash_files(
        &files.iter().map(|f| f.path.as_path()).collect::<Vec<_>>(),
    )?;
    files
        .iter()
        .zip(digests)
        .map(|(f, source_sha256)| {
            let name = f.set.name.clone();
            let rel = format!("tokens/{name}{BANK_TOKEN_SUFFIX}");
            let rows = write_packed(&out.join(&rel), &f.set, config.keep_void)?;
            let side = tokens::sidecar_path(&f.path);
            let sidecar = if side.exists() {
                let rel = format!("tokens/{name}{}", tokens::SIDECAR_SUFFIX);
                crate::formats::atomic::copy(&side, &out.join(&rel))?;
                Some(bank_file(out, &rel)?)
            } else {
                None
            };
            Ok(BankCase {
                case: name,
                tokens: bank_file(out, &rel)?,
                source_sha256,
                sidecar,
                rows,
            })
        })
        .collect()
}

/// File name suffix of a bank case's active tokens.
pub const BANK_TOKEN_SUFFIX: &str = ".bank.npz";

/// Writes the active tokens of `set` (every token with `keep_void`) atomically; returns how many.
fn write_packed(path: &Path, set: &crate::TokenSet, keep_void: bool) -> Result<usize> {
    let active: Vec<usize> = (0..set.n_positions())
        .filter(|&p| keep_void || set.valid[p])
        .collect();
    let rows = set.tokens.select(ndarray::Axis(1), &active);
    let positions = Array1::from(active.iter().map(|&p| p as i64).collect::<Vec<_>>());
    let valid = Array1::from(set.valid.clone());
    let grid = Array1::from(set.grid.iter().map(|&g| g as i64).collect::<Vec<_>>());
    crate::formats::atomic::write_with(path, |w| {
        let mut npz = NpzWriter::new(w);
        npz.add_array("rows", &rows)
            .and_then(|_| npz.add_array("positions", &positions))
            .and_then(|_| npz.add_array("valid", &valid))
            .and_then(|_| npz.add_array("grid", &grid))
            .map_err(|e| e.to_string())?;
        npz.finish().map(|_| ()).map_err(|e| e.to_string())
    })?;
    Ok(active.len())
}

/// Reads a bank case: its token set, whose `tokens` are all zero (lazily mapped memory, never touched),
/// and its active tokens `[L, R, D]`, which the scorer packs from instead (see the module doc).
fn read_packed(
    case: &BankCase,
    path: &Path,
    keep_void: bool,
) -> Result<(TokenFile, ndarray::Array3<f32>)> {
    let problem =
        |what: &str, e: &dyn std::fmt::Display| Error::bad_input(path, format!("{what}: {e}"));
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut npz = NpzReader::new(file).map_err(|e| problem("not a readable .npz archive", &e))?;
    let rows: ndarray::Array3<f32> = npz
        .by_name("rows")
        .map_err(|e| problem("array `rows`", &e))?;
    let positions: Array1<i64> = npz
        .by_name("positions")
        .map_err(|e| problem("array `positions`", &e))?;
    let valid: Array1<bool> = npz
        .by_name("valid")
        .map_err(|e| problem("array `valid`", &e))?;
    let grid: Array1<i64> = npz
        .by_name("grid")
        .map_err(|e| problem("array `grid`", &e))?;
    let (l, r, d) = rows.dim();
    let m = valid.len();
    let grid: Vec<usize> = grid.iter().map(|&g| g.max(0) as usize).collect();
    let bad = |what: String| Err(Error::bad_input(path, what));
    if grid.len() != 3 || grid.iter().product::<usize>() != m {
        return bad(format!(
            "grid {grid:?} does not hold the {m} positions of `valid`"
        ));
    }
    if positions.len() != r || positions.iter().any(|&p| p < 0 || p as usize >= m) {
        return bad(format!("`positions` must hold {r} positions below {m}"));
    }
    if r != case.rows {
        return bad(format!(
            "{r} active tokens, but {MANIFEST} records {}",
            case.rows
        ));
    }
    if let Some(v) = rows.iter().find(|v| !v.is_finite()) {
        return bad(format!("a token value is not finite ({v})"));
    }
    let active = (0..m).filter(|&p| keep_void || valid[p]).map(|p| p as i64);
    if !positions.iter().copied().eq(active) {
        return bad("`positions` must be the active positions of `valid`, ascending".into());
    }
    // Zero-filled memory is mapped lazily: a shape for the scorer's checks, never read.
    let set = crate::TokenSet {
        name: case.case.clone(),
        tokens: ndarray::Array3::<f32>::zeros((l, m, d)),
        valid: valid.to_vec(),
        grid: [grid[0], grid[1], grid[2]],
    };
    let side = path.with_file_name(format!("{}{}", case.case, tokens::SIDECAR_SUFFIX));
    let sidecar =
        match &case.sidecar {
            None => None,
            Some(_) => {
                let text = std::fs::read_to_string(&side).map_err(|e| Error::io(&side, e))?;
                Some(serde_json::from_str(&text).map_err(|e| {
                    Error::bad_input(&side, format!("sidecar is not valid JSON: {e}"))
                })?)
            }
        };
    let file = TokenFile {
        path: path.into(),
        set,
        sidecar,
    };
    Ok((file, rows))
}

fn bank_file(dir: &Path, rel: &str) -> Result<BankFile> {
    let path = dir.join(rel);
    let bytes = std::fs::metadata(&path)
        .map_err(|e| Error::io(&path, e))?
        .len();
    Ok(BankFile {
        path: rel.into(),
        bytes,
        sha256: crate::formats::hash::sha256_file(&path)?,
    })
}

fn write_table(path: &Path, table: &DistTable) -> Result<()> {
    let (rows, n) = (table.n_rows(), table.n_collections);
    let dist = Array2::from_shape_vec((rows, n), table.dist.clone())
        .map_err(|e| Error::internal(e.to_string()))?;
    let arg = Array2::from_shape_vec((rows, n), table.arg.clone())
        .map_err(|e| Error::internal(e.to_string()))?;
    let counts = Array1::from(
        table
            .offsets
            .windows(2)
            .map(|w| (w[1] - w[0]) as i64)
            .collect::<Vec<_>>(),
    );
    crate::formats::atomic::write_with(path, |w| {
        let mut npz = NpzWriter::new(w);
        npz.add_array("dist", &dist)
            .and_then(|_| npz.add_array("arg", &arg))
            .and_then(|_| npz.add_array("rows", &counts))
            .map_err(|e| e.to_string())?;
        npz.finish().map(|_| ()).map_err(|e| e.to_string())
    })
}

/// An opened bank: its folder and checked manifest.
#[derive(Debug, Clone)]
pub struct Bank {
    pub dir: PathBuf,
    pub manifest: Manifest,
}

impl Bank {
    /// Reads and checks `dir/bank.json` and that every file it lists is there with its recorded size.
    pub fn open(dir: &Path) -> Result<Bank> {
        let path = dir.join(MANIFEST);
        if !dir.is_dir() {
            return Err(Error::bad_argument(
                "--bank",
                format!(
                    "{} is not a folder (give a bank made by `mri-ad bank`)",
                    dir.display()
                ),
            ));
        }
        let text = std::fs::read_to_string(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::bad_input(
                &path,
                "missing: this folder is not a finished bank (`mri-ad bank --tokens DIR --out BANK` makes one)",
            ),
            _ => Error::io(&path, e),
        })?;
        let raw: Value = serde_json::from_str(&text)
            .map_err(|e| Error::bad_input(&path, format!("not valid JSON: {e}")))?;
        let format = raw.get("format").and_then(Value::as_str);
        let version = raw.get("version").and_then(Value::as_u64);
        if format != Some(FORMAT) {
            return Err(Error::bad_input(
                &path,
                format!(
                    "not a bank manifest: `format` is {}, expected \"{FORMAT}\"",
                    format.map_or("missing".to_string(), |f| format!("\"{f}\""))
                ),
            ));
        }
        if version != Some(VERSION as u64) {
            return Err(Error::bad_input(
                &path,
                format!(
                    "bank format version {}, this mri-ad reads version {VERSION}: rebuild the bank with \
                     this version's `mri-ad bank`",
                    version.map_or("missing".to_string(), |v| v.to_string())
                ),
            ));
        }
        let manifest: Manifest = serde_json::from_value(raw)
            .map_err(|e| Error::bad_input(&path, format!("malformed bank manifest: {e}")))?;
        let bank = Bank {
            dir: dir.into(),
            manifest,
        };
        bank.check_files()?;
        Ok(bank)
    }

    /// Recomputes the SHA-256 of every file the manifest lists and refuses the first that differs,
    /// naming it (what `--verify-bank` asks for: reading the whole bank once, about 1 s per GB).
    pub fn verify(&self) -> Result<()> {
        let files: Vec<&BankFile> = self.files().collect();
        let paths: Vec<PathBuf> = files.iter().map(|f| self.dir.join(&f.path)).collect();
        let digests = crate::run::folder::hash_files(
            &paths.iter().map(PathBuf::as_path).collect::<Vec<_>>(),
        )?;
        for ((f, path), digest) in files.iter().zip(&paths).zip(digests) {
            if digest != f.sha256 {
                return Err(Error::bad_input(
                    path,
                    format!(
                        "SHA-256 {digest}, but {MANIFEST} records {}: the file was changed or replaced; \
                         rebuild the bank",
                        f.sha256
                    ),
                ));
            }
        }
        Ok(())
    }

    fn files(&self) -> impl Iterator<Item = &BankFile> {
        let m = &self.manifest;
        m.cases
            .iter()
            .flat_map(|c| std::iter::once(&c.tokens).chain(c.sidecar.as_ref()))
            .chain(&m.tables)
    }

    fn check_files(&self) -> Result<()> {
        if self.manifest.tables.len() != self.manifest.shape.views {
            return Err(Error::bad_input(
                self.dir.join(MANIFEST),
                format!(
                    "lists {} table files for {} views",
                    self.manifest.tables.len(),
                    self.manifest.shape.views
                ),
            ));
        }
        for f in self.files() {
            let path = self.dir.join(&f.path);
            let meta = std::fs::metadata(&path).map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => Error::bad_input(
                    &path,
                    format!("missing: the bank lists it in {MANIFEST}; rebuild the bank"),
                ),
                _ => Error::io(&path, e),
            })?;
            if meta.len() != f.bytes {
                return Err(Error::bad_input(
                    &path,
                    format!(
                        "{} bytes, but {MANIFEST} records {}: the file was truncated or replaced; rebuild \
                         the bank",
                        meta.len(),
                        f.bytes
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The bank's cases, in the bank's order, each checked against the manifest: token sets whose
    /// `tokens` are zeros (for their shape, valid mask and grid) and, beside them, each case's active
    /// tokens `[L, R, D]` (R = the active positions, ascending), which are what the scorer must use.
    pub fn token_sets(&self) -> Result<(Vec<TokenFile>, Vec<ndarray::Array3<f32>>)> {
        let cases = &self.manifest.cases;
        let read = crate::parallel::map_in_order(
            std::thread::available_parallelism().map_or(1, |n| n.get()),
            cases,
            &|| {},
            &|_, c| {
                read_packed(
                    c,
                    &self.dir.join(&c.tokens.path),
                    self.manifest.search.keep_void,
                )
            },
        )?;
        let (files, rows): (Vec<TokenFile>, Vec<_>) = read.into_iter().unzip();
        for f in &files {
            self.check_shape(f)?;
        }
        Ok((files, rows))
    }

    /// Refuses a token file whose layout (views, positions, grid, dimension) is not the bank's.
    pub fn check_shape(&self, f: &TokenFile) -> Result<()> {
        let s = &self.manifest.shape;
        let own = Shape {
            views: f.set.n_views(),
            positions: f.set.n_positions(),
            grid: f.set.grid,
            dim: f.set.dim(),
        };
        if own != *s {
            return Err(Error::Mismatch {
                path: f.path.clone(),
                what: "the token layout (views, positions, grid, D)".into(),
                expected: format!("{:?}", (s.views, s.positions, s.grid, s.dim)),
                actual: format!("{:?}", (own.views, own.positions, own.grid, own.dim)),
                reference: format!("the bank {}", self.dir.display()),
            });
        }
        Ok(())
    }

    /// Refuses a query token file made otherwise than the bank's (layout or preparation).
    pub fn check_query(&self, f: &TokenFile) -> Result<()> {
        self.check_shape(f)?;
        let what = format!("the bank {}", self.dir.join(MANIFEST).display());
        let hint = format!(
            "prepare new cases as the bank's were, with `mri-ad extract --input DIR --out DIR --bank {}`",
            self.dir.display()
        );
        check_preparation(&self.manifest.preparation, &what, f, &hint)
    }

    /// Refuses scoring settings that the stored tables do not describe, naming the flag.
    pub fn check_config(&self, config: &ScoreConfig) -> Result<()> {
        let (want, got) = (&self.manifest.search, SearchSettings::of(config));
        let flag = if want.search != got.search {
            "--search"
        } else if want.radius != got.radius {
            "--radius"
        } else if want.keep_void != got.keep_void {
            "--keep-void"
        } else {
            return Ok(());
        };
        Err(Error::bad_argument(
            flag,
            format!(
                "the bank {} was built with {} (its tables hold those distances); score with the same, or \
                 build a bank with these settings",
                self.dir.display(),
                describe_search(want)
            ),
        ))
    }

    /// Reads the stored table of view `v`.
    pub fn load_table(&self, v: usize) -> Result<DistTable> {
        let path = self.dir.join(&self.manifest.tables[v].path);
        let problem =
            |what: &str, e: &dyn std::fmt::Display| Error::bad_input(&path, format!("{what}: {e}"));
        let file = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
        let mut npz =
            NpzReader::new(file).map_err(|e| problem("not a readable .npz archive", &e))?;
        let dist: Array2<f32> = npz
            .by_name("dist")
            .map_err(|e| problem("array `dist`", &e))?;
        let arg: Array2<u32> = npz.by_name("arg").map_err(|e| problem("array `arg`", &e))?;
        let counts: Array1<i64> = npz
            .by_name("rows")
            .map_err(|e| problem("array `rows`", &e))?;
        let h = self.manifest.cases.len();
        let want: Vec<i64> = self.manifest.cases.iter().map(|c| c.rows as i64).collect();
        let rows: usize = want.iter().sum::<i64>() as usize;
        if counts.to_vec() != want || dist.dim() != (rows, h) || arg.dim() != (rows, h) {
            return Err(Error::Mismatch {
                path: path.clone(),
                what: "the table's shape".into(),
                expected: format!("[{rows}, {h}]"),
                actual: format!("{:?}", dist.dim()),
                reference: MANIFEST.into(),
            });
        }
        let mut offsets = vec![0usize];
        for &c in &want {
            offsets.push(offsets.last().unwrap() + c as usize);
        }
        Ok(DistTable {
            n_collections: h,
            offsets,
            dist: dist.into_raw_vec_and_offset().0,
            arg: arg.into_raw_vec_and_offset().0,
            compared: 0,
        })
    }
}

/// What `extract --bank` needs to prepare new volumes exactly as the bank's were: the token settings
/// and the preprocessing (the crop, the world space of `--crop batch`, the Nyúl landmarks).
#[derive(Debug, Clone)]
pub struct VolumePreparation {
    pub model_sha256: String,
    pub layers: Vec<usize>,
    pub proj_dim: usize,
    pub seed: u64,
    pub void_threshold: f64,
    pub size: usize,
    pub margin: usize,
    pub crop: crate::volume::CropMode,
    pub space: Option<crate::volume::space::BatchSpace>,
    pub nyul: crate::volume::nyul::NyulModel,
}

impl Bank {
    /// The preparation of the bank's volumes, from its token files' sidecars; refused (naming
    /// bank.json) for a bank made from token files without them, or from `.npy` cubes.
    pub fn volume_preparation(&self) -> Result<VolumePreparation> {
        let path = self.dir.join(MANIFEST);
        let prep = &self.manifest.preparation;
        let missing = |what: &str| {
            Error::bad_input(
                &path,
                format!(
                    "this bank does not record {what} (its token files had no sidecar from `mri-ad \
                     extract` on NIfTI volumes), so new volumes cannot be prepared as its were"
                ),
            )
        };
        let field = |key: &str| prep.get(key).ok_or_else(|| missing(key));
        fn parse<T: serde::de::DeserializeOwned>(path: &Path, key: &str, v: &Value) -> Result<T> {
            serde_json::from_value(v.clone())
                .map_err(|e| Error::bad_input(path, format!("`preparation.{key}`: {e}")))
        }
        let pre = field("preprocessing")?;
        if pre.get("source").and_then(Value::as_str) != Some("nifti") {
            return Err(missing("the preprocessing of NIfTI volumes"));
        }
        let sub = |key: &str| {
            pre.get(key)
                .ok_or_else(|| missing(&format!("preprocessing.{key}")))
        };
        Ok(VolumePreparation {
            model_sha256: parse(&path, "model_sha256", field("model_sha256")?)?,
            layers: parse(&path, "layers", field("layers")?)?,
            proj_dim: parse(&path, "proj_dim", field("proj_dim")?)?,
            seed: parse(&path, "seed", field("seed")?)?,
            void_threshold: parse(&path, "void_threshold", field("void_threshold")?)?,
            size: parse(&path, "size", field("size")?)?,
            margin: parse(&path, "preprocessing.margin", sub("margin")?)?,
            crop: parse(&path, "preprocessing.crop", sub("crop")?)?,
            space: parse(&path, "preprocessing.space", sub("space")?)?,
            nyul: parse(&path, "preprocessing.nyul", sub("nyul")?)?,
        })
    }
}

/// The search settings in words (`--search exact`, `--search window --radius 2`, with `--keep-void`).
fn describe_search(s: &SearchSettings) -> String {
    let mut words = match (s.search, s.radius) {
        (SearchKind::Window, Some(r)) => format!("--search window --radius {r}"),
        _ => "--search exact".to_string(),
    };
    words.push_str(if s.keep_void {
        " --keep-void"
    } else {
        " without --keep-void"
    });
    words
}

/// The joined batch of a bank and query token files: sorted by case id (the order of `score --tokens`
/// on one folder holding them all), with the batch indices of the bank's cases. Refuses a query case
/// whose id is one of the bank's.
pub fn join(bank: Vec<TokenFile>, queries: Vec<TokenFile>) -> Result<(Vec<TokenFile>, Vec<usize>)> {
    let bank_names: std::collections::BTreeSet<String> =
        bank.iter().map(|f| f.set.name.clone()).collect();
    if let Some(q) = queries.iter().find(|q| bank_names.contains(&q.set.name)) {
        return Err(Error::bad_input(
            &q.path,
            format!(
                "case `{}` is in the bank already; a query case needs an id of its own",
                q.set.name
            ),
        ));
    }
    let mut all: Vec<(bool, TokenFile)> = bank
        .into_iter()
        .map(|f| (true, f))
        .chain(queries.into_iter().map(|f| (false, f)))
        .collect();
    all.sort_by(|x, y| x.1.set.name.cmp(&y.1.set.name));
    let members = all
        .iter()
        .enumerate()
        .filter_map(|(i, (in_bank, _))| in_bank.then_some(i))
        .collect();
    Ok((all.into_iter().map(|(_, f)| f).collect(), members))
}
