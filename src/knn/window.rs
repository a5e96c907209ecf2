//! The spatial-window search (`--search window --radius R`): a token at grid position `p` is compared only
//! with the active tokens of the other collection whose positions lie within Chebyshev distance `R` of `p`
//! (`max(|Δz|, |Δy|, |Δx|) ≤ R`), exactly as the exact search would compare them (nearest by Euclidean
//! distance, the stored distance recomputed directly).
//!
//! What it assumes: the collections are registered to one atlas, so that a token's anatomical match in
//! another volume lies within `R` grid steps of its own position (at 224³ one step is 14 voxels). A
//! query whose window holds no active token of `b` gets `+inf` in column `b`, as an empty base does in the
//! exact search.
//!
//! How: the query tokens of `a` are taken in runs of up to four consecutive positions on one grid line,
//! whose windows differ only in `x`; the active rows of `b` in the union of their windows are listed in
//! position order, and each row's dot products with the run's queries are taken at once (AVX-512 or AVX2
//! FMA intrinsics when the CPU has them, chosen at run time; each path sums in a fixed order, so a run is
//! deterministic on one machine, while the paths may pick another of two near-tied tokens). One
//! dot product updates both the query's row minimum (`‖w‖² − 2u·w`) and the base token's column minimum
//! (`‖u‖² − 2u·w`), so each unordered pair of tokens is compared once, as in the exact kernel; the stored
//! distance of the chosen token is then recomputed directly, as there. Unlike the exact kernel this is
//! not a GEMM: each base row is streamed from cache once per run, so it does fewer multiply-adds per
//! second, against about `(2R+1)³` tokens instead of every active one.
//!
//! Trap: the window is symmetric (the same set of pairs seen from either side), which is what lets one
//! product serve both directions; a non-symmetric neighbourhood would need two passes.

use super::{PackedView, PairResult, NO_TOKEN};

/// `lookup[p]`: the row of collection `a` at grid position `p`, or [`NO_TOKEN`] when `p` is not active.
pub(super) fn row_lookup(view: &PackedView, a: usize, n_positions: usize) -> Vec<u32> {
    let mut lookup = vec![NO_TOKEN; n_positions];
    for (i, &p) in view.positions[a].iter().enumerate() {
        lookup[p as usize] = i as u32;
    }
    lookup
}

/// Grid coordinates `[z, y, x]` of position `p`.
pub(super) fn coords(p: usize, grid: [usize; 3]) -> [usize; 3] {
    [
        p / (grid[1] * grid[2]),
        (p / grid[2]) % grid[1],
        p % grid[2],
    ]
}

/// Chebyshev distance between two grid coordinates.
#[cfg(test)]
pub(super) fn chebyshev(u: [usize; 3], w: [usize; 3]) -> usize {
    (0..3).map(|k| u[k].abs_diff(w[k])).max().unwrap_or(0)
}

/// The clipped range `[lo, hi)` of `[start − r, end + r)` on an axis of length `len`.
fn widen(start: usize, end: usize, r: usize, len: usize) -> (usize, usize) {
    (start.saturating_sub(r), (end + r).min(len))
}

/// The active rows of `lookup` whose positions lie within Chebyshev distance `radius` of the run of
/// positions `p .. p + len` (one grid line, consecutive `x`), in position order, with their `x`, written
/// to `out`.
fn window_rows(
    lookup: &[u32],
    grid: [usize; 3],
    (p, len): (usize, usize),
    radius: usize,
    out: &mut Vec<(u32, u32)>,
) {
    out.clear();
    let c = coords(p, grid);
    let (z0, z1) = widen(c[0], c[0] + 1, radius, grid[0]);
    let (y0, y1) = widen(c[1], c[1] + 1, radius, grid[1]);
    let (x0, x1) = widen(c[2], c[2] + len, radius, grid[2]);
    for z in z0..z1 {
        for y in y0..y1 {
            let line = (z * grid[1] + y) * grid[2];
            for x in x0..x1 {
                let j = lookup[line + x];
                if j != NO_TOKEN {
                    out.push((j, x as u32));
                }
            }
        }
    }
}

/// Queries taken together: consecutive active positions on one grid line share most of their windows, so
/// each base row is loaded once for up to this many queries.
const RUN: usize = 4;

/// The length of the run of rows starting at row `i` of `positions`: up to [`RUN`] rows at consecutive
/// positions on one grid line (`x` increasing by one).
fn run_length(positions: &[u32], i: usize, line_len: usize) -> usize {
    let p = positions[i] as usize;
    let room = line_len - p % line_len;
    let mut len = 1;
    while len < RUN.min(room) && positions.get(i + len) == Some(&((p + len) as u32)) {
        len += 1;
    }
    len
}

/// `out[k][m] = q_k · w_m` in plain Rust (CPUs without AVX2 and FMA).
fn dots4x4_generic(q: [&[f32]; 4], w: [&[f32]; 4]) -> [[f32; 4]; 4] {
    q.map(|q| w.map(|w| q.iter().zip(w).map(|(a, b)| a * b).sum()))
}

/// `out[k][m] = q_k · w_m` with AVX-512 FMA: a 4 × 4 block of accumulators, so that each loaded chunk of
/// a row serves four products (the register blocking of a GEMM micro-kernel); the tail in scalar code.
///
/// # Safety
/// The CPU must have AVX-512F; every row must be at least as long as `q[0]`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn dots4x4_avx512(q: [&[f32]; 4], w: [&[f32]; 4]) -> [[f32; 4]; 4] {
    use std::arch::x86_64::*;
    let d = q[0].len();
    let full = d / 16 * 16;
    let (qp, wp) = (q.map(<[f32]>::as_ptr), w.map(<[f32]>::as_ptr));
    let mut acc = [[_mm512_setzero_ps(); 4]; 4];
    let mut c = 0;
    while c < full {
        // SAFETY: c + 16 ≤ d ≤ every row's length.
        unsafe {
            let wv = wp.map(|p| _mm512_loadu_ps(p.add(c)));
            for k in 0..4 {
                let qv = _mm512_loadu_ps(qp[k].add(c));
                for m in 0..4 {
                    acc[k][m] = _mm512_fmadd_ps(qv, wv[m], acc[k][m]);
                }
            }
        }
        c += 16;
    }
    let mut out = [[0f32; 4]; 4];
    for k in 0..4 {
        for m in 0..4 {
            let tail: f32 = (full..d).map(|i| q[k][i] * w[m][i]).sum();
            out[k][m] = _mm512_reduce_add_ps(acc[k][m]) + tail;
        }
    }
    out
}

/// [`dots4x4_avx512`] with AVX2 FMA (8 lanes).
///
/// # Safety
/// The CPU must have AVX2 and FMA; every row must be at least as long as `q[0]`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dots4x4_avx2(q: [&[f32]; 4], w: [&[f32]; 4]) -> [[f32; 4]; 4] {
    use std::arch::x86_64::*;
    let d = q[0].len();
    let full = d / 8 * 8;
    let (qp, wp) = (q.map(<[f32]>::as_ptr), w.map(<[f32]>::as_ptr));
    let mut acc = [[_mm256_setzero_ps(); 4]; 4];
    let mut c = 0;
    while c < full {
        // SAFETY: c + 8 ≤ d ≤ every row's length.
        unsafe {
            let wv = wp.map(|p| _mm256_loadu_ps(p.add(c)));
            for k in 0..4 {
                let qv = _mm256_loadu_ps(qp[k].add(c));
                for m in 0..4 {
                    acc[k][m] = _mm256_fmadd_ps(qv, wv[m], acc[k][m]);
                }
            }
        }
        c += 8;
    }
    let mut out = [[0f32; 4]; 4];
    for k in 0..4 {
        for m in 0..4 {
            let mut lanes = [0f32; 8];
            // SAFETY: `lanes` holds 8 floats.
            unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), acc[k][m]) };
            let tail: f32 = (full..d).map(|i| q[k][i] * w[m][i]).sum();
            out[k][m] = lanes.iter().sum::<f32>() + tail;
        }
    }
    out
}

/// Which compiled variant of the dot products this CPU runs (checked once per pair of collections).
#[derive(Clone, Copy)]
enum Simd {
    Avx512,
    Avx2,
    Generic,
}

impl Simd {
    fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return Simd::Avx512;
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                return Simd::Avx2;
            }
        }
        Simd::Generic
    }

    #[inline(always)]
    fn dots4x4(self, q: [&[f32]; 4], w: [&[f32]; 4]) -> [[f32; 4]; 4] {
        let d = q[0].len();
        assert!(
            q.iter().chain(&w).all(|r| r.len() >= d),
            "rows of one width"
        );
        match self {
            // SAFETY: the features were detected at run time (`detect`), the lengths checked above.
            #[cfg(target_arch = "x86_64")]
            Simd::Avx512 => unsafe { dots4x4_avx512(q, w) },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            Simd::Avx2 => unsafe { dots4x4_avx2(q, w) },
            _ => dots4x4_generic(q, w),
        }
    }
}

/// Minima of one pair of collections inside the window; also returns the token pairs compared (within the
/// window).
pub(super) fn pair_minima(
    view: &PackedView,
    lookups: &[Vec<u32>],
    a: usize,
    b: usize,
    radius: usize,
) -> (PairResult, u64) {
    let grid = view.grid;
    let simd = Simd::detect();
    let (na, nb) = (view.n_rows(a), view.n_rows(b));
    let mut row_min = vec![f32::INFINITY; na];
    let mut row_arg = vec![NO_TOKEN; na];
    let mut col_min = vec![f32::INFINITY; nb];
    let mut col_arg = vec![NO_TOKEN; nb];
    let mut compared = 0u64;
    let mut near = Vec::new();
    let mut i = 0;
    while i < na {
        let len = run_length(&view.positions[a], i, grid[2]);
        let p = view.positions[a][i] as usize;
        let x0 = p % grid[2];
        window_rows(&lookups[b], grid, (p, len), radius, &mut near);
        // a short run repeats its last query; the repeats are not used
        let queries = [0, 1, 2, 3].map(|k| view.row(a, i + k.min(len - 1)));
        for group in near.chunks(4) {
            // a short group repeats its last base row; the repeats are not used
            let base = [0, 1, 2, 3].map(|m| view.row(b, group[m.min(group.len() - 1)].0 as usize));
            let dots = simd.dots4x4(queries, base);
            for (m, &(j, x)) in group.iter().enumerate() {
                let j = j as usize;
                let nj = view.norms[b][j];
                for (k, row) in dots.iter().enumerate().take(len) {
                    if (x as usize).abs_diff(x0 + k) > radius {
                        continue;
                    }
                    compared += 1;
                    let q = i + k;
                    let two_g = 2.0 * row[m];
                    // the nearest base token of query q (base rows come in position order: the first
                    // on ties)
                    let vr = nj - two_g;
                    if vr < row_min[q] {
                        row_min[q] = vr;
                        row_arg[q] = j as u32;
                    }
                    // the nearest query token of base j (the first row on ties)
                    let vc = view.norms[a][q] - two_g;
                    if vc < col_min[j] || (vc == col_min[j] && (q as u32) < col_arg[j]) {
                        col_min[j] = vc;
                        col_arg[j] = q as u32;
                    }
                }
            }
        }
        i += len;
    }
    // Replace the dot-product estimates by exact distances to the chosen tokens; +inf where the window
    // was empty.
    for (i, (m, &q)) in row_min.iter_mut().zip(&row_arg).enumerate() {
        if q != NO_TOKEN {
            *m = view.exact_distance(a, i, b, q as usize);
        }
    }
    for (j, (m, &p)) in col_min.iter_mut().zip(&col_arg).enumerate() {
        if p != NO_TOKEN {
            *m = view.exact_distance(b, j, a, p as usize);
        }
    }
    let result = PairResult {
        a,
        b,
        row_min,
        row_arg,
        col_min,
        col_arg,
    };
    (result, compared)
}

/// The nearest remaining token of collection `b` within the window of grid position `p` (its row and
/// exact distance; `None` when the window holds none), for the refinement after exclusions.
pub(super) fn nearest_remaining(
    view: &PackedView,
    lookup_b: &[u32],
    b: usize,
    query: &[f32],
    p: usize,
    radius: usize,
    excluded_b: &[bool],
) -> Option<(u32, f32)> {
    let grid = view.grid;
    let c = coords(p, grid);
    let r: Vec<(usize, usize)> = (0..3)
        .map(|k| widen(c[k], c[k] + 1, radius, grid[k]))
        .collect();
    let mut best: Option<(u32, f32)> = None;
    for z in r[0].0..r[0].1 {
        for y in r[1].0..r[1].1 {
            for x in r[2].0..r[2].1 {
                let q = (z * grid[1] + y) * grid[2] + x;
                let j = lookup_b[q];
                if j == NO_TOKEN || excluded_b[q] {
                    continue;
                }
                let dist = super::euclidean(query, view.row(b, j as usize));
                if best.is_none_or(|(_, bd)| dist < bd) {
                    best = Some((j, dist));
                }
            }
        }
    }
    best
}
