//! CoDeGraph stages 1–2 (ALGORITHM.md §6.1–6.3): layer-averaged sorted distance vectors, the weighted
//! endurance ratio of every (token, rank) candidate link, and coverage-based link selection (Algorithm 1).
//!
//! Input: the distance tables of the graph views and which rows may create links (non-void tokens).
//! Output: the symmetric integer weight matrix of the case graph and how many links were selected.
//!
//! Traps: ranks are 1-based in the spec and 0-based here (`rank` field = i − 1). Each selected link adds
//! one unit per layer (`|L|` connections, the neighbour at that rank may differ per layer). Sorting is by
//! (key, row, rank), and rows are ordered by (collection, position), so the tie order of the spec holds.

use rayon::prelude::*;

use super::super::msm::Distance;
use crate::knn::DistTable;

/// Per eligible row: the layer-averaged sorted distances `m̄_1..m̄_{r_ref}` and, per layer, the collection
/// at each rank.
#[derive(Debug, Clone)]
pub struct GraphMsv {
    pub r_ref: usize,
    pub n_layers: usize,
    /// Table rows that are eligible (non-void), ascending.
    pub rows: Vec<u32>,
    /// `[rows.len() × r_ref]`, `m̄_i` at `i − 1`; `NaN` when the row has fewer than `r_ref` finite entries.
    pub mean: Vec<f32>,
    /// `[rows.len() × n_layers × r_ref]`: collection at rank i of layer l.
    pub neighbour: Vec<u32>,
}

/// Computes [`GraphMsv`] for the rows where `eligible[row]` is true.
pub fn graph_msv(
    tables: &[DistTable],
    eligible: &[bool],
    r_ref: usize,
    distance: Distance,
) -> GraphMsv {
    let n_layers = tables.len();
    let n = tables[0].n_collections;
    let rows: Vec<u32> = (0..eligible.len() as u32)
        .filter(|&r| eligible[r as usize])
        .collect();
    let per_row: Vec<(Vec<f32>, Vec<u32>)> =
        rows.par_iter()
            .map_init(
                || Vec::<u64>::with_capacity(n),
                |sorted, &row| {
                    let row = row as usize;
                    let mut mean = vec![0f32; r_ref];
                    let mut neigh = vec![0u32; n_layers * r_ref];
                    let mut complete = true;
                    for (l, table) in tables.iter().enumerate() {
                        sorted.clear();
                        let d = &table.dist[row * n..(row + 1) * n];
                        // (distance, case) as one integer: distances are ≥ 0, whose IEEE bits order as
                        // unsigned integers, so this sorts by distance, then by case, as a pair would.
                        sorted.extend(d.iter().enumerate().filter(|(_, v)| v.is_finite()).map(
                            |(b, &v)| ((distance.apply(v).to_bits() as u64) << 32) | b as u64,
                        ));
                        if sorted.len() < r_ref {
                            complete = false;
                            continue;
                        }
                        // Only the r_ref smallest are used: select them, then sort those.
                        if sorted.len() > r_ref {
                            sorted.select_nth_unstable(r_ref - 1);
                        }
                        sorted[..r_ref].sort_unstable();
                        for i in 0..r_ref {
                            mean[i] += f32::from_bits((sorted[i] >> 32) as u32) / n_layers as f32;
                            neigh[l * r_ref + i] = sorted[i] as u32;
                        }
                    }
                    if !complete {
                        mean.iter_mut().for_each(|m| *m = f32::NAN);
                    }
                    (mean, neigh)
                },
            )
            .collect();
    let mut mean = Vec::with_capacity(rows.len() * r_ref);
    let mut neighbour = Vec::with_capacity(rows.len() * n_layers * r_ref);
    for (m, nb) in per_row {
        mean.extend(m);
        neighbour.extend(nb);
    }
    GraphMsv {
        r_ref,
        n_layers,
        rows,
        mean,
        neighbour,
    }
}

/// One candidate link: eligible row index `e` (into [`GraphMsv::rows`]) at rank `rank + 1`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    pub key: f64,
    pub e: u32,
    pub rank: u32,
}

/// The order of the candidates: ascending key, ties broken by (row, rank) — a total order, so any sort
/// gives the same sequence.
pub fn candidate_order(x: &Candidate, y: &Candidate) -> std::cmp::Ordering {
    x.key
        .total_cmp(&y.key)
        .then(x.e.cmp(&y.e))
        .then(x.rank.cmp(&y.rank))
}

/// The weighted endurance ratio `ζ̃_i = (m̄_i / m̄_{r_ref}) · (m̄_i + ε)^{−β}` of every candidate, sorted
/// ascending with ties broken by (row, rank).
pub fn candidates(msv: &GraphMsv, beta: f64, epsilon: f64) -> Vec<Candidate> {
    let mut out = candidate_keys(msv, beta, epsilon);
    out.par_sort_unstable_by(candidate_order);
    out
}

/// [`candidates`] unsorted: [`select_links`] sorts only the prefix it reads.
pub fn candidate_keys(msv: &GraphMsv, beta: f64, epsilon: f64) -> Vec<Candidate> {
    let r = msv.r_ref;
    let out: Vec<Candidate> = (0..msv.rows.len())
        .into_par_iter()
        .flat_map_iter(|e| {
            let m = &msv.mean[e * r..(e + 1) * r];
            let reference = m[r - 1] as f64;
            let usable = reference.is_finite() && reference > 0.0;
            (0..r - 1).filter(move |_| usable).map(move |i| {
                let mi = m[i] as f64;
                let key = if mi == 0.0 {
                    0.0
                } else {
                    (mi / reference) * (mi + epsilon).powf(-beta)
                };
                Candidate {
                    key,
                    e: e as u32,
                    rank: i as u32,
                }
            })
        })
        .collect();
    out
}

/// Sorts `cands[done..]` far enough that `cands[..want]` is the sorted prefix of the whole list (given
/// that `cands[..done]` already is and every later element follows it); returns the new sorted length.
fn sort_prefix<C: Send>(
    cands: &mut [C],
    done: usize,
    want: usize,
    order: &(impl Fn(&C, &C) -> std::cmp::Ordering + Sync),
) -> usize {
    let want = want.min(cands.len());
    if want <= done {
        return done;
    }
    // Grow geometrically so that a long selection costs no more than one full sort.
    let upto = want.max(2 * done).max(1 << 14).min(cands.len());
    let rest = &mut cands[done..];
    if upto - done < rest.len() {
        rest.select_nth_unstable_by(upto - done - 1, order);
    }
    rest[..upto - done].par_sort_unstable_by(order);
    upto
}

/// Result of Algorithm 1.
#[derive(Debug, Clone)]
pub struct LinkSelection {
    /// Symmetric `[n × n]` weights (number of selected connections between two cases).
    pub weights: Vec<u64>,
    pub n_collections: usize,
    /// Length of the selected prefix of the candidate list.
    pub n_selected: usize,
    /// Number of candidates.
    pub n_candidates: usize,
    /// Fraction of cases with at least one neighbour at the end.
    pub coverage: f64,
}

/// Algorithm 1: add candidate links in batches of `batch`, smallest key first ([`candidates`]' order),
/// until `coverage_target` of the cases have a neighbour (or the candidates run out). `cands` may come
/// in any order: only the prefix that is read gets sorted (a few thousand of millions, typically).
pub fn select_links(
    cands: &mut [Candidate],
    msv: &GraphMsv,
    row_collection: &[u32],
    n: usize,
    coverage_target: f64,
    batch: usize,
) -> LinkSelection {
    let (r, nl) = (msv.r_ref, msv.n_layers);
    select_links_by(
        cands,
        &candidate_order,
        n,
        coverage_target,
        batch,
        |c, connect| {
            let a = row_collection[msv.rows[c.e as usize] as usize] as usize;
            for l in 0..nl {
                connect(
                    a,
                    msv.neighbour[(c.e as usize * nl + l) * r + c.rank as usize] as usize,
                );
            }
        },
    )
}

/// The loop of Algorithm 1 over candidates of any form: `order` is their total order, `connections(c, f)`
/// calls `f(a, b)` for each connection candidate `c` adds (one per layer). Shared by [`select_links`] and
/// the sharded scorer's graph step ([`crate::shard`]), whose candidates carry their cases.
pub fn select_links_by<C: Send>(
    cands: &mut [C],
    order: &(impl Fn(&C, &C) -> std::cmp::Ordering + Sync),
    n: usize,
    coverage_target: f64,
    batch: usize,
    connections: impl Fn(&C, &mut dyn FnMut(usize, usize)),
) -> LinkSelection {
    let mut weights = vec![0u64; n * n];
    let mut covered = vec![false; n];
    let mut n_cov = 0usize;
    let mut pos = 0usize;
    let target = coverage_target * n as f64;
    let mut sorted = 0;
    while (n_cov as f64) < target && pos < cands.len() {
        let end = (pos + batch.max(1)).min(cands.len());
        sorted = sort_prefix(cands, sorted, end, order);
        for c in &cands[pos..end] {
            connections(c, &mut |a, b| {
                weights[a * n + b] += 1;
                weights[b * n + a] += 1;
                for x in [a, b] {
                    if !covered[x] {
                        covered[x] = true;
                        n_cov += 1;
                    }
                }
            });
        }
        pos = end;
    }
    LinkSelection {
        weights,
        n_collections: n,
        n_selected: pos,
        n_candidates: cands.len(),
        coverage: n_cov as f64 / n as f64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endurance_keys_and_selection_follow_algorithm_1() {
        // 4 collections, 1 layer, r_ref = 3; two eligible rows.
        let msv = GraphMsv {
            r_ref: 3,
            n_layers: 1,
            rows: vec![0, 5],
            mean: vec![0.1, 0.5, 1.0, 0.0, 0.2, 0.4],
            neighbour: vec![1, 2, 3, 3, 2, 0],
        };
        let c = candidates(&msv, 0.0, 1e-12);
        // Keys (β = 0): row0: 0.1, 0.5; row5: 0 (exact duplicate), 0.5.
        let keys: Vec<f64> = c.iter().map(|c| c.key).collect();
        for (k, want) in keys.iter().zip([0.0, 0.1, 0.5, 0.5]) {
            assert!((k - want).abs() < 1e-7, "{keys:?}");
        }
        assert_eq!((c[2].e, c[2].rank), (0, 1)); // tie broken by row
        let c_beta = candidates(&msv, 0.2, 1e-12);
        let k = c_beta.iter().find(|c| c.e == 0 && c.rank == 0).unwrap().key;
        assert!((k - 0.1 * (0.1f64 + 1e-12).powf(-0.2)).abs() < 1e-6);
        // rows 0..=2 belong to collection 0, rows 3..=5 to collection 1
        let owner = [0, 0, 0, 1, 1, 1];
        let sel = select_links(&mut c.clone(), &msv, &owner, 4, 0.5, 1);
        // First link: row 5 (collection 1) → rank 1 neighbour 3: covers {1, 3} = 50%.
        assert_eq!(sel.n_selected, 1);
        assert_eq!(sel.weights[4 + 3], 1);
        assert_eq!(sel.weights[3 * 4 + 1], 1);
        let mut reversed: Vec<Candidate> = c.iter().rev().copied().collect();
        let all = select_links(&mut reversed, &msv, &owner, 4, 1.0, 1);
        assert_eq!(all.n_selected, 3);
        assert_eq!(all.coverage, 1.0);
    }
}
