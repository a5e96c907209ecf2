//! Nearest-collection distances: for every query token of every collection and every *other* collection
//! `b`, the Euclidean distance to its nearest token in `b`, and which token that was; over every active
//! token of `b` ([`Search::Exact`]) or over those within a grid window ([`Search::Window`], see
//! [`window`]).
//!
//! Input: one view (layer) of every collection, packed as a row-major `[n_a, D]` matrix of the collection's
//! active tokens (see [`PackedView`]). Output: a [`DistTable`] with one row per active token of the batch and
//! one column per collection (`+inf` in the own-collection column).
//!
//! How (exact): each unordered pair `(a, b)` is computed once. Squared distances come from one GEMM per tile,
//! `‖u‖² + ‖w‖² − 2 u·w` (faer, single-threaded inside a job), and the row minima (queries of `a` against
//! base `b`) and the column minima (queries of `b` against base `a`) are both taken from the same product.
//! Jobs run in parallel with rayon; a job holds one `tile_rows × n_b` block, so the memory of the kernel is
//! bounded by [`KnnPlan::tile_rows`] whatever the batch size. The N·M × N·M matrix never exists.
//!
//! Traps:
//! * f32 GEMM loses precision for near-duplicate tokens (cancellation in `2 − 2u·w`). The GEMM only picks
//!   the nearest token; the distance stored for it is recomputed directly as `‖u − w‖`, so stored values are
//!   accurate to f32 rounding even for duplicates. Near-ties may pick a different (equally near) token.
//! * The symmetric trick needs the query set and the base set of a collection to be the same rows. That
//!   holds for the first pass; exclusions later (CoDeGraph) are applied with [`DistTable::refine`], which
//!   recomputes only the entries whose nearest token was excluded (every other entry keeps its minimum,
//!   because the minimum over a subset that still contains the argmin is unchanged).
//! * Each pair's minima depend on that pair's tokens alone, which is what lets a healthy bank store some
//!   pairs and [`DistTable::compute_pairs`] + [`DistTable::fill_from`] compute only the others.

use faer::{Accum, MatRef, Par};
use rayon::prelude::*;

pub mod window;

/// Which tokens of another collection a query token is compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Search {
    /// Every active token of the other collection (GEMM tiles).
    Exact,
    /// Only the active tokens within Chebyshev distance `radius` of the query's grid position, for
    /// registered volumes ([`window`]'s doc says what it assumes).
    Window { radius: usize },
}

/// Stale rows recomputed per GEMM in [`DistTable::refine`] (exact mode).
const REFINE_GROUP: usize = 256;

/// Sentinel for "no token" in [`DistTable::arg`].
pub const NO_TOKEN: u32 = u32::MAX;

/// One view of the batch: for each collection, its active tokens as a row-major `[n_a, D]` matrix, the
/// position each row came from, and the squared norms.
#[derive(Debug, Clone)]
pub struct PackedView {
    /// Feature dimension.
    pub dim: usize,
    /// The grid of the positions, `[z, y, x]` (the same for every collection).
    pub grid: [usize; 3],
    /// `rows[a]`: row-major `[n_a, D]`.
    pub rows: Vec<Vec<f32>>,
    /// `positions[a][i]`: grid position of row `i` of collection `a`.
    pub positions: Vec<Vec<u32>>,
    /// `norms[a][i] = ‖rows[a][i]‖²`.
    pub norms: Vec<Vec<f32>>,
}

impl PackedView {
    /// Packs view `view` of every collection, keeping the positions for which `active(a, p)` is true.
    pub fn pack(
        sets: &[crate::TokenSet],
        view: usize,
        active: impl Fn(usize, usize) -> bool + Sync,
    ) -> Self {
        Self::pack_some(sets, view, &active, &|_| true)
    }

    /// [`PackedView::pack`] of the collections for which `read(a)` holds; the others are left empty.
    fn pack_some(
        sets: &[crate::TokenSet],
        view: usize,
        active: &(dyn Fn(usize, usize) -> bool + Sync),
        read: &(dyn Fn(usize) -> bool + Sync),
    ) -> Self {
        let dim = sets[0].dim();
        let packed: Vec<(Vec<f32>, Vec<u32>, Vec<f32>)> = sets
            .par_iter()
            .enumerate()
            .map(|(a, set)| {
                let layer = set.tokens.index_axis(ndarray::Axis(0), view);
                let mut rows = Vec::new();
                let mut pos = Vec::new();
                if !read(a) {
                    return (rows, pos, Vec::new());
                }
                for (p, token) in layer.outer_iter().enumerate() {
                    if active(a, p) {
                        rows.extend(token.iter().copied());
                        pos.push(p as u32);
                    }
                }
                let norms = squared_norms(&rows, dim);
                (rows, pos, norms)
            })
            .collect();
        let mut out = PackedView {
            dim,
            grid: sets[0].grid,
            rows: Vec::with_capacity(sets.len()),
            positions: Vec::with_capacity(sets.len()),
            norms: Vec::with_capacity(sets.len()),
        };
        for (r, p, n) in packed {
            out.rows.push(r);
            out.positions.push(p);
            out.norms.push(n);
        }
        out
    }

    /// [`PackedView::pack`], with the active rows of some collections given already packed
    /// (`prepacked(a)`: `[n_a, D]`, the active positions in ascending order) instead of read from their
    /// token sets. Fails, saying why, when a prepacked collection's row count is not its active count.
    pub fn pack_with<'s>(
        sets: &[crate::TokenSet],
        view: usize,
        active: impl Fn(usize, usize) -> bool + Sync,
        prepacked: impl Fn(usize) -> Option<ndarray::ArrayView2<'s, f32>> + Sync,
    ) -> Result<Self, String> {
        let mut out = PackedView::pack_some(sets, view, &active, &|a| prepacked(a).is_none());
        let dim = out.dim;
        // (collection, rows, positions, norms) of each prepacked collection
        type Given = (usize, Vec<f32>, Vec<u32>, Vec<f32>);
        let given: Vec<Given> = (0..sets.len())
            .into_par_iter()
            .filter_map(|a| Some((a, prepacked(a)?)))
            .map(|(a, rows)| {
                let positions: Vec<u32> = (0..sets[a].n_positions())
                    .filter(|&p| active(a, p))
                    .map(|p| p as u32)
                    .collect();
                if rows.nrows() != positions.len() || rows.ncols() != dim {
                    return Err(format!(
                        "case {} has {} stored rows of width {}, its token set {} active positions of \
                         width {dim}",
                        sets[a].name,
                        rows.nrows(),
                        rows.ncols(),
                        positions.len(),
                    ));
                }
                let flat = match rows.as_slice() {
                    Some(s) => s.to_vec(),
                    None => rows.iter().copied().collect(),
                };
                let norms = squared_norms(&flat, dim);
                Ok((a, flat, positions, norms))
            })
            .collect::<Result<_, String>>()?;
        for (a, rows, positions, norms) in given {
            out.rows[a] = rows;
            out.positions[a] = positions;
            out.norms[a] = norms;
        }
        Ok(out)
    }

    /// Number of collections.
    pub fn n_collections(&self) -> usize {
        self.rows.len()
    }

    /// Number of active rows of collection `a`.
    pub fn n_rows(&self, a: usize) -> usize {
        self.positions[a].len()
    }

    /// Row `i` of collection `a`.
    pub fn row(&self, a: usize, i: usize) -> &[f32] {
        &self.rows[a][i * self.dim..(i + 1) * self.dim]
    }

    /// Exact Euclidean distance between row `i` of `a` and row `j` of `b`.
    pub fn exact_distance(&self, a: usize, i: usize, b: usize, j: usize) -> f32 {
        euclidean(self.row(a, i), self.row(b, j))
    }
}

/// `‖row‖²` of each row of a row-major `[n, dim]` matrix, summed in order (as [`PackedView::pack`] does:
/// every packing of the same rows gives the same norms, bit for bit).
pub fn squared_norms(rows: &[f32], dim: usize) -> Vec<f32> {
    rows.chunks(dim.max(1))
        .map(|r| r.iter().map(|v| v * v).sum())
        .collect()
}

fn euclidean(u: &[f32], w: &[f32]) -> f32 {
    // Four accumulators so the loop vectorises and sums in a fixed order (deterministic).
    let mut acc = [0f32; 8];
    let chunks = u.len() / 8;
    for c in 0..chunks {
        for k in 0..8 {
            let d = u[c * 8 + k] - w[c * 8 + k];
            acc[k] += d * d;
        }
    }
    let mut s: f32 = acc.iter().sum();
    for k in chunks * 8..u.len() {
        let d = u[k] - w[k];
        s += d * d;
    }
    s.sqrt()
}

/// How the kernel is cut into work: rows per GEMM tile (memory per job is `tile_rows × max n_b × 4` bytes).
#[derive(Debug, Clone, Copy)]
pub struct KnnPlan {
    pub tile_rows: usize,
}

impl KnnPlan {
    /// Sizes the tiles so that all concurrent jobs together stay within `budget_bytes` of scratch memory.
    pub fn for_budget(budget_bytes: usize, max_rows: usize, threads: usize) -> Self {
        let per_job = budget_bytes / threads.max(1);
        let rows = per_job / (4 * max_rows.max(1));
        // Tiles of a few hundred rows keep the block in cache; never less than 16 rows.
        KnnPlan {
            tile_rows: rows.clamp(16, 256),
        }
    }

    /// Scratch bytes one job needs.
    pub fn scratch_bytes(&self, max_rows: usize) -> usize {
        self.tile_rows * max_rows * 4
    }
}

/// Distances from every active token to its nearest token in every collection.
///
/// Row `offsets[a] + i` holds row `i` of collection `a`; column `b` is collection `b`. `dist` is `+inf` in
/// the own column and where the base of `b` is empty; `arg` holds the *grid position* (not the row) of the
/// nearest token of `b`, or [`NO_TOKEN`].
#[derive(Debug, Clone)]
pub struct DistTable {
    pub n_collections: usize,
    pub offsets: Vec<usize>,
    pub dist: Vec<f32>,
    pub arg: Vec<u32>,
    /// Token pairs the search compared to fill the table (each unordered pair once).
    pub compared: u64,
}

struct PairResult {
    a: usize,
    b: usize,
    /// queries of a → base b
    row_min: Vec<f32>,
    row_arg: Vec<u32>,
    /// queries of b → base a
    col_min: Vec<f32>,
    col_arg: Vec<u32>,
}

impl DistTable {
    /// A one-collection table from given rows of distances (unit tests of the stages that read tables).
    #[cfg(test)]
    pub(crate) fn from_rows(rows: Vec<Vec<f32>>) -> DistTable {
        let n = rows[0].len();
        DistTable {
            n_collections: n,
            offsets: vec![0, rows.len()],
            arg: vec![NO_TOKEN; rows.len() * n],
            dist: rows.concat(),
            compared: 0,
        }
    }

    fn empty(view: &PackedView) -> Self {
        let n = view.n_collections();
        let mut offsets = vec![0usize; n + 1];
        for a in 0..n {
            offsets[a + 1] = offsets[a] + view.n_rows(a);
        }
        let rows = offsets[n];
        DistTable {
            n_collections: n,
            offsets,
            dist: vec![f32::INFINITY; rows * n],
            arg: vec![NO_TOKEN; rows * n],
            compared: 0,
        }
    }

    /// Number of rows (active tokens of the whole batch).
    pub fn n_rows(&self) -> usize {
        *self.offsets.last().unwrap_or(&0)
    }

    /// The row of distances (one per collection) of row `i` of collection `a`.
    pub fn dist_row(&self, a: usize, i: usize) -> &[f32] {
        let r = self.offsets[a] + i;
        &self.dist[r * self.n_collections..(r + 1) * self.n_collections]
    }

    /// The nearest-token positions of row `i` of collection `a`.
    pub fn arg_row(&self, a: usize, i: usize) -> &[u32] {
        let r = self.offsets[a] + i;
        &self.arg[r * self.n_collections..(r + 1) * self.n_collections]
    }

    /// Computes the full table for one view: every unordered pair once.
    ///
    /// `on_pair` is called after each finished pair (for progress reporting).
    pub fn compute(
        view: &PackedView,
        plan: KnnPlan,
        search: Search,
        on_pair: &(dyn Fn() + Sync),
    ) -> Self {
        let n = view.n_collections();
        let pairs: Vec<(usize, usize)> = (0..n)
            .flat_map(|a| (a + 1..n).map(move |b| (a, b)))
            .collect();
        Self::compute_pairs(view, plan, search, &pairs, on_pair)
    }

    /// The table of one view with only the pairs `pairs` (`a < b`) filled; every other entry is `+inf`.
    pub fn compute_pairs(
        view: &PackedView,
        plan: KnnPlan,
        search: Search,
        pairs: &[(usize, usize)],
        on_pair: &(dyn Fn() + Sync),
    ) -> Self {
        let mut table = DistTable::empty(view);
        let n_positions = view.grid.iter().product::<usize>();
        let lookups: Vec<Vec<u32>> = match search {
            Search::Exact => Vec::new(),
            Search::Window { .. } => (0..view.n_collections())
                .into_par_iter()
                .map(|a| window::row_lookup(view, a, n_positions))
                .collect(),
        };
        // Results are scattered in chunks so that at most `chunk` pair results are held at once.
        let chunk = (rayon::current_num_threads() * 8).max(8);
        for group in pairs.chunks(chunk) {
            let results: Vec<(PairResult, u64)> = group
                .par_iter()
                .map(|&(a, b)| {
                    let r = match search {
                        Search::Exact => {
                            let compared = view.n_rows(a) as u64 * view.n_rows(b) as u64;
                            (pair_minima(view, a, b, plan), compared)
                        }
                        Search::Window { radius } => {
                            window::pair_minima(view, &lookups, a, b, radius)
                        }
                    };
                    on_pair();
                    r
                })
                .collect();
            for (r, compared) in results {
                table.scatter(view, &r);
                table.compared += compared;
            }
        }
        table
    }

    fn scatter(&mut self, view: &PackedView, r: &PairResult) {
        let n = self.n_collections;
        let position = |c: usize, row: u32| match row {
            NO_TOKEN => NO_TOKEN,
            row => view.positions[c][row as usize],
        };
        for (i, (&d, &q)) in r.row_min.iter().zip(&r.row_arg).enumerate() {
            let row = self.offsets[r.a] + i;
            self.dist[row * n + r.b] = d;
            self.arg[row * n + r.b] = position(r.b, q);
        }
        for (j, (&d, &p)) in r.col_min.iter().zip(&r.col_arg).enumerate() {
            let row = self.offsets[r.b] + j;
            self.dist[row * n + r.a] = d;
            self.arg[row * n + r.a] = position(r.a, p);
        }
    }

    /// Copies a table over some of this table's collections into place: collection `i` of `part` is
    /// collection `members[i]` here, row for row (the same active tokens in the same order). Fails, saying
    /// why, when a member's row count differs.
    pub fn fill_from(&mut self, part: &DistTable, members: &[usize]) -> Result<(), String> {
        if part.n_collections != members.len() {
            return Err(format!(
                "the stored table has {} cases, the bank {}",
                part.n_collections,
                members.len()
            ));
        }
        let (n, m) = (self.n_collections, part.n_collections);
        for (s, &a) in members.iter().enumerate() {
            let rows = self.offsets[a + 1] - self.offsets[a];
            let stored = part.offsets[s + 1] - part.offsets[s];
            if rows != stored {
                return Err(format!(
                    "case {s} of the stored table has {stored} rows, its tokens {rows} active ones"
                ));
            }
            for i in 0..rows {
                let (to, from) = ((self.offsets[a] + i) * n, (part.offsets[s] + i) * m);
                for (t, &b) in members.iter().enumerate() {
                    if t != s {
                        self.dist[to + b] = part.dist[from + t];
                        self.arg[to + b] = part.arg[from + t];
                    }
                }
            }
        }
        Ok(())
    }

    /// Applies exclusions: `excluded[b][p]` true removes position `p` of collection `b` from the base.
    ///
    /// With `recompute` (refine mode `exact`), every entry whose nearest token was excluded is recomputed
    /// against the remaining base of `b` (`+inf` if nothing remains). Without it (mode `invalidate`), such
    /// entries become `+inf`. Entries whose nearest token survives are unchanged in both modes, which is
    /// exact: the minimum over a subset containing the argmin is the same minimum. With
    /// [`Search::Window`] the recomputation looks only inside the window, as the table was made. Returns
    /// how many entries were affected.
    pub fn refine(
        &mut self,
        view: &PackedView,
        excluded: &[Vec<bool>],
        recompute: bool,
        search: Search,
    ) -> usize {
        let n = self.n_collections;
        // For each base collection b with exclusions: its remaining rows.
        let remaining: Vec<Option<Vec<usize>>> = (0..n)
            .map(|b| {
                if excluded[b].iter().any(|&x| x) {
                    Some(
                        (0..view.n_rows(b))
                            .filter(|&j| !excluded[b][view.positions[b][j] as usize])
                            .collect(),
                    )
                } else {
                    None
                }
            })
            .collect();
        let offsets = self.offsets.clone();
        let row_owner = |row: usize| offsets.partition_point(|&o| o <= row) - 1;
        // Entries (row, b) whose nearest token in b was excluded.
        let stale: Vec<(usize, usize)> = self
            .arg
            .par_chunks(n)
            .enumerate()
            .flat_map_iter(|(row, args)| {
                let remaining = &remaining;
                args.iter().enumerate().filter_map(move |(b, &q)| {
                    remaining[b].as_ref()?;
                    (q != NO_TOKEN && excluded[b][q as usize]).then_some((row, b))
                })
            })
            .collect();
        if !recompute {
            for &(row, b) in &stale {
                self.dist[row * n + b] = f32::INFINITY;
                self.arg[row * n + b] = NO_TOKEN;
            }
            return stale.len();
        }
        if let Search::Window { radius } = search {
            self.refine_window(view, excluded, &stale, radius);
            return stale.len();
        }
        // Recompute per base collection with GEMM tiles: the stale query rows against b's remaining rows.
        let mut by_base: Vec<Vec<usize>> = vec![Vec::new(); n];
        for &(row, b) in &stale {
            by_base[b].push(row);
        }
        let d = view.dim;
        let jobs: Vec<(usize, &[usize])> = by_base
            .iter()
            .enumerate()
            .flat_map(|(b, rows)| rows.chunks(REFINE_GROUP).map(move |c| (b, c)))
            .collect();
        let updates: Vec<Vec<(usize, f32, u32)>> = jobs
            .par_iter()
            .map(|&(b, rows)| {
                let rem = remaining[b].as_ref().expect("b has exclusions");
                if rem.is_empty() {
                    return rows
                        .iter()
                        .map(|&r| (r * n + b, f32::INFINITY, NO_TOKEN))
                        .collect();
                }
                let mut base = Vec::with_capacity(rem.len() * d);
                let mut base_norms = Vec::with_capacity(rem.len());
                for &j in rem {
                    base.extend_from_slice(view.row(b, j));
                    base_norms.push(view.norms[b][j]);
                }
                let mut queries = Vec::with_capacity(rows.len() * d);
                let mut query_norms = Vec::with_capacity(rows.len());
                for &r in rows {
                    let a = row_owner(r);
                    queries.extend_from_slice(view.row(a, r - offsets[a]));
                    query_norms.push(view.norms[a][r - offsets[a]]);
                }
                // Always a full group of REFINE_GROUP rows (zeros after the stale ones): every entry
                // then comes from the same GEMM shape however the stale rows were grouped, so a block of
                // the batch refined alone ([`crate::shard`]) picks the same tokens as the whole batch.
                queries.resize(REFINE_GROUP * d, 0.0);
                let mut gram = faer::Mat::<f32>::zeros(REFINE_GROUP, rem.len());
                faer::linalg::matmul::matmul(
                    gram.as_mut(),
                    Accum::Replace,
                    MatRef::from_row_major_slice(&queries, REFINE_GROUP, d),
                    MatRef::from_row_major_slice(&base, rem.len(), d).transpose(),
                    1.0f32,
                    Par::Seq,
                );
                let mut rmin = vec![f32::INFINITY; rows.len()];
                let mut rarg = vec![0u32; rows.len()];
                let mut cmin = vec![f32::INFINITY; rem.len()];
                let mut carg = vec![0u32; rem.len()];
                TileMinima {
                    gram: gram.as_ref().submatrix(0, 0, rows.len(), rem.len()),
                    norm_rows: &query_norms,
                    norm_cols: &base_norms,
                    row_offset: 0,
                }
                .update(&mut rmin, &mut rarg, &mut cmin, &mut carg);
                rows.iter()
                    .zip(&rarg)
                    .enumerate()
                    .map(|(k, (&r, &j))| {
                        let dist =
                            euclidean(&queries[k * d..(k + 1) * d], view.row(b, rem[j as usize]));
                        (r * n + b, dist, view.positions[b][rem[j as usize]])
                    })
                    .collect()
            })
            .collect();
        for &(idx, dist, q) in updates.iter().flatten() {
            self.dist[idx] = dist;
            self.arg[idx] = q;
        }
        stale.len()
    }

    /// Recomputes the `stale` entries `(row, b)` against the remaining tokens of `b` inside the window.
    fn refine_window(
        &mut self,
        view: &PackedView,
        excluded: &[Vec<bool>],
        stale: &[(usize, usize)],
        radius: usize,
    ) {
        let n = self.n_collections;
        let n_positions = view.grid.iter().product::<usize>();
        let mut bases: Vec<usize> = stale.iter().map(|&(_, b)| b).collect();
        bases.sort_unstable();
        bases.dedup();
        let lookups: std::collections::BTreeMap<usize, Vec<u32>> = bases
            .into_iter()
            .map(|b| (b, window::row_lookup(view, b, n_positions)))
            .collect();
        let offsets = &self.offsets;
        let updates: Vec<(usize, f32, u32)> = stale
            .par_iter()
            .map(|&(row, b)| {
                let a = offsets.partition_point(|&o| o <= row) - 1;
                let i = row - offsets[a];
                let p = view.positions[a][i] as usize;
                let found = window::nearest_remaining(
                    view,
                    &lookups[&b],
                    b,
                    view.row(a, i),
                    p,
                    radius,
                    &excluded[b],
                );
                match found {
                    Some((j, dist)) => (row * n + b, dist, view.positions[b][j as usize]),
                    None => (row * n + b, f32::INFINITY, NO_TOKEN),
                }
            })
            .collect();
        for (idx, dist, q) in updates {
            self.dist[idx] = dist;
            self.arg[idx] = q;
        }
    }
}

/// One GEMM tile `G = A_tile · Bᵀ` (column-major) with the squared norms of its rows and columns.
struct TileMinima<'a> {
    gram: faer::MatRef<'a, f32>,
    norm_rows: &'a [f32],
    norm_cols: &'a [f32],
    row_offset: u32,
}

/// Lanes of the column-minimum accumulators: the loop over a column is cut into chunks of this many rows
/// so that the compiler turns the per-lane compare-and-select into SIMD instructions.
const LANES: usize = 16;

/// `update_generic` compiled with the target features `$features` (the compiler vectorises the same code
/// for them); callers check the features at run time first.
macro_rules! simd_variant {
    ($name:ident, $features:literal) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = $features)]
        unsafe fn $name(
            &self,
            rmin: &mut [f32],
            rarg: &mut [u32],
            cmin: &mut [f32],
            carg: &mut [u32],
        ) {
            self.update_generic(rmin, rarg, cmin, carg)
        }
    };
}

impl TileMinima<'_> {
    /// Folds the tile into the running row minima (queries of the tile against every column token) and
    /// column minima (every column token against the tile's queries), with their arg-minima.
    ///
    /// The squared distance up to a per-row (or per-column) constant is `‖w‖² − 2 u·w`, so the row side
    /// compares `norm_cols[q] − 2G[i,q]` and the column side `norm_rows[i] − 2G[i,q]`. The loop is written
    /// as branch-free selects and compiled for the widest SIMD the CPU has (runtime dispatch); the result
    /// is bit-identical on every path (same operations, no fused multiply-add, earliest index on ties
    /// within a lane).
    fn update(&self, rmin: &mut [f32], rarg: &mut [u32], cmin: &mut [f32], carg: &mut [u32]) {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512vl")
                && std::arch::is_x86_feature_detected!("avx512bw")
                && std::arch::is_x86_feature_detected!("avx512dq")
            {
                // SAFETY: the features were detected at run time.
                return unsafe { self.update_avx512(rmin, rarg, cmin, carg) };
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the feature was detected at run time.
                return unsafe { self.update_avx2(rmin, rarg, cmin, carg) };
            }
        }
        self.update_generic(rmin, rarg, cmin, carg)
    }

    simd_variant!(update_avx512, "avx512f,avx512vl,avx512bw,avx512dq");
    simd_variant!(update_avx2, "avx2");

    #[inline(always)]
    fn update_generic(
        &self,
        rmin: &mut [f32],
        rarg: &mut [u32],
        cmin: &mut [f32],
        carg: &mut [u32],
    ) {
        let rows = self.norm_rows.len();
        let chunks = rows / LANES;
        for q in 0..self.norm_cols.len() {
            let col = self
                .gram
                .col(q)
                .try_as_col_major()
                .expect("faer Mat columns are contiguous")
                .as_slice();
            let nq = self.norm_cols[q];
            let qq = q as u32;
            let mut acc = [f32::INFINITY; LANES];
            let mut acc_i = [0u32; LANES];
            for c in 0..chunks {
                let base = c * LANES;
                let col = &col[base..base + LANES];
                let nr = &self.norm_rows[base..base + LANES];
                let rm = &mut rmin[base..base + LANES];
                let ra = &mut rarg[base..base + LANES];
                for k in 0..LANES {
                    let two_g = 2.0 * col[k];
                    let vr = nq - two_g;
                    let better = vr < rm[k];
                    rm[k] = if better { vr } else { rm[k] };
                    ra[k] = if better { qq } else { ra[k] };
                    let vc = nr[k] - two_g;
                    let better = vc < acc[k];
                    acc[k] = if better { vc } else { acc[k] };
                    acc_i[k] = if better { (base + k) as u32 } else { acc_i[k] };
                }
            }
            for i in chunks * LANES..rows {
                let two_g = 2.0 * col[i];
                let vr = nq - two_g;
                if vr < rmin[i] {
                    rmin[i] = vr;
                    rarg[i] = qq;
                }
                let vc = self.norm_rows[i] - two_g;
                let k = i % LANES;
                if vc < acc[k] {
                    acc[k] = vc;
                    acc_i[k] = i as u32;
                }
            }
            // Reduce the lanes: smallest value, then smallest row index.
            let (mut best, mut best_i) = (f32::INFINITY, u32::MAX);
            for k in 0..LANES {
                if acc[k] < best || (acc[k] == best && acc_i[k] < best_i) {
                    best = acc[k];
                    best_i = acc_i[k];
                }
            }
            if best < cmin[q] {
                cmin[q] = best;
                carg[q] = self.row_offset + best_i;
            }
        }
    }
}

/// Minima of one pair of collections from GEMM tiles.
fn pair_minima(view: &PackedView, a: usize, b: usize, plan: KnnPlan) -> PairResult {
    let d = view.dim;
    let (na, nb) = (view.n_rows(a), view.n_rows(b));
    let mut row_min = vec![f32::INFINITY; na];
    let mut row_arg = vec![0u32; na];
    let mut col_min = vec![f32::INFINITY; nb];
    let mut col_arg = vec![0u32; nb];
    let base = MatRef::from_row_major_slice(&view.rows[b], nb, d);
    let (norm_a, norm_b) = (&view.norms[a], &view.norms[b]);
    let tile = plan.tile_rows.min(na.max(1));
    let mut gram = faer::Mat::<f32>::zeros(tile, nb);
    for r0 in (0..na).step_by(tile) {
        let rows = tile.min(na - r0);
        let queries = MatRef::from_row_major_slice(&view.rows[a][r0 * d..(r0 + rows) * d], rows, d);
        let mut g = gram.as_mut().submatrix_mut(0, 0, rows, nb);
        faer::linalg::matmul::matmul(
            g.as_mut(),
            Accum::Replace,
            queries,
            base.transpose(),
            1.0f32,
            Par::Seq,
        );
        let tile = TileMinima {
            gram: g.as_ref(),
            norm_rows: &norm_a[r0..r0 + rows],
            norm_cols: norm_b,
            row_offset: r0 as u32,
        };
        tile.update(
            &mut row_min[r0..r0 + rows],
            &mut row_arg[r0..r0 + rows],
            &mut col_min,
            &mut col_arg,
        );
    }
    // Replace the GEMM estimates by exact distances to the chosen tokens.
    for (i, (m, &q)) in row_min.iter_mut().zip(&row_arg).enumerate() {
        *m = view.exact_distance(a, i, b, q as usize);
    }
    for (j, (m, &p)) in col_min.iter_mut().zip(&col_arg).enumerate() {
        *m = view.exact_distance(b, j, a, p as usize);
    }
    PairResult {
        a,
        b,
        row_min,
        row_arg,
        col_min,
        col_arg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TokenSet;
    use ndarray::Array3;
    use rand::{Rng, SeedableRng};

    fn random_sets(n: usize, m: usize, d: usize, seed: u64) -> Vec<TokenSet> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..n)
            .map(|a| {
                let t = Array3::from_shape_fn((1, m, d), |_| rng.random::<f32>() - 0.5);
                let valid = (0..m).map(|p| (p + a) % 5 != 0).collect();
                TokenSet::new(format!("c{a}"), t, valid, [1, 1, m]).unwrap()
            })
            .collect()
    }

    fn brute(sets: &[TokenSet], a: usize, p: usize, b: usize, excl: &[Vec<bool>]) -> (f32, u32) {
        let t = &sets[a].tokens;
        let mut best = (f32::INFINITY, NO_TOKEN);
        for q in 0..sets[b].n_positions() {
            if !sets[b].valid[q] || excl[b][q] {
                continue;
            }
            let d: f32 = (0..t.dim().2)
                .map(|c| (t[[0, p, c]] - sets[b].tokens[[0, q, c]]).powi(2))
                .sum::<f32>()
                .sqrt();
            if d < best.0 {
                best = (d, q as u32);
            }
        }
        best
    }

    #[test]
    fn table_matches_brute_force_and_refine_is_exact() {
        let sets = random_sets(5, 37, 19, 3);
        let view = PackedView::pack(&sets, 0, |a, p| sets[a].valid[p]);
        // Tiny tiles so several tiles per pair are exercised.
        let plan = KnnPlan { tile_rows: 16 };
        let mut table = DistTable::compute(&view, plan, Search::Exact, &|| {});
        let none: Vec<Vec<bool>> = sets.iter().map(|s| vec![false; s.n_positions()]).collect();
        let check = |table: &DistTable, excl: &[Vec<bool>]| {
            for a in 0..sets.len() {
                for (i, &p) in view.positions[a].iter().enumerate() {
                    for b in 0..sets.len() {
                        let got = table.dist_row(a, i)[b];
                        if a == b {
                            assert!(got.is_infinite());
                            continue;
                        }
                        let (want, want_q) = brute(&sets, a, p as usize, b, excl);
                        if want.is_infinite() {
                            assert!(got.is_infinite() && table.arg_row(a, i)[b] == NO_TOKEN);
                            continue;
                        }
                        assert!(
                            (got - want).abs() <= 1e-5 * want.max(1.0),
                            "{a} {p} {b}: {got} vs {want}"
                        );
                        assert_eq!(table.arg_row(a, i)[b], want_q);
                    }
                }
            }
        };
        check(&table, &none);
        let mut excl = none.clone();
        for p in 0..20 {
            excl[2][p] = true;
        }
        for p in 0..37 {
            excl[4][p] = true; // everything of collection 4 is gone
        }
        let mut inval = table.clone();
        let changed = table.refine(&view, &excl, true, Search::Exact);
        assert!(changed > 0);
        check(&table, &excl);
        inval.refine(&view, &excl, false, Search::Exact);
        for r in 0..table.n_rows() {
            for b in 0..5 {
                let (e, v) = (table.dist[r * 5 + b], inval.dist[r * 5 + b]);
                assert!(
                    v.is_infinite() || v == e,
                    "invalidate keeps only unchanged entries"
                );
            }
        }
    }

    #[test]
    fn window_table_and_its_refinement_match_a_windowed_brute_force() {
        let grid = [3, 4, 5];
        let mut sets = random_sets(4, 60, 11, 9);
        sets.iter_mut().for_each(|s| s.grid = grid);
        let view = PackedView::pack(&sets, 0, |a, p| sets[a].valid[p]);
        let radius = 1;
        let mut table = DistTable::compute(
            &view,
            KnnPlan { tile_rows: 16 },
            Search::Window { radius },
            &|| {},
        );
        let near = |p: usize, q: usize| {
            window::chebyshev(window::coords(p, grid), window::coords(q, grid)) <= radius
        };
        let check = |table: &DistTable, excl: &[Vec<bool>]| {
            for a in 0..4 {
                for (i, &p) in view.positions[a].iter().enumerate() {
                    for b in (0..4).filter(|&b| b != a) {
                        // the brute force with everything outside the window excluded too
                        let mut outside = excl.to_vec();
                        (0..60).for_each(|q| outside[b][q] |= !near(p as usize, q));
                        let (want, want_q) = brute(&sets, a, p as usize, b, &outside);
                        let got = table.dist_row(a, i)[b];
                        assert!((got - want).abs() <= 1e-5 || got == want, "{a} {p} {b}");
                        assert_eq!(table.arg_row(a, i)[b], want_q, "{a} {p} {b}");
                    }
                }
            }
        };
        let none: Vec<Vec<bool>> = vec![vec![false; 60]; 4];
        check(&table, &none);
        // Every token pair within the window compared once.
        let pairs: u64 = (0..4)
            .flat_map(|a| (a + 1..4).map(move |b| (a, b)))
            .map(|(a, b)| {
                let (pa, pb) = (&view.positions[a], &view.positions[b]);
                let within =
                    |&p: &u32| pb.iter().filter(|&&q| near(p as usize, q as usize)).count();
                pa.iter().map(within).sum::<usize>() as u64
            })
            .sum();
        assert_eq!(table.compared, pairs);
        let mut excl = none.clone();
        (0..30).for_each(|p| excl[1][p] = true);
        assert!(table.refine(&view, &excl, true, Search::Window { radius }) > 0);
        check(&table, &excl);
    }
}
