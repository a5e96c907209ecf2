#!/usr/bin/env python3
"""Independent numpy/scipy implementation of MuSc mutual scoring (ALGORITHM.md §5) on token files, compared
with the token scores of an `mri-ad score --method musc` run.

For every layer l, case a, valid position p and other case b: D = min over valid q of ||x_ap - x_bq||
(float64, scipy cdist); the N-1 values are sorted and the k = max(1, floor(alpha*(N-1))) smallest averaged;
the scores are averaged over layers. Void positions score 0 (they are neither queries nor base).
With --radius R (the run's `--search window --radius R`), q ranges only over the base positions within
Chebyshev distance R of p on the token grid; a case with no such position gives +inf, and the mean is then
over the finite values among the k smallest (as ALGORITHM.md Q20 has it for removed entries).
Exits 1 when the maximum relative difference exceeds --tol.
"""
import argparse
import glob
import os
import sys

import numpy as np
from scipy.spatial.distance import cdist


def load(folder):
    files = sorted(glob.glob(os.path.join(folder, "*.tokens.npz")))
    names = [os.path.basename(f)[: -len(".tokens.npz")] for f in files]
    data = [np.load(f) for f in files]
    return names, [d["tokens"].astype(np.float64) for d in data], [d["valid"].astype(bool) for d in data], \
        [tuple(int(g) for g in d["grid"]) for d in data]


def windowed_cdist(qa, qb, pos_a, pos_b, grid, radius):
    """cdist(qa, qb) with +inf where the grid positions are more than `radius` apart (Chebyshev);
    `radius` None = the exact search."""
    d = cdist(qa, qb)
    if radius is not None:
        ca = np.stack(np.unravel_index(pos_a, grid), axis=1)
        cb = np.stack(np.unravel_index(pos_b, grid), axis=1)
        cheb = np.abs(ca[:, None, :] - cb[None, :, :]).max(axis=2)
        d[cheb > radius] = np.inf
    return d


def finite_mean_of_k_smallest(msv, k):
    out = np.zeros(msv.shape[0])
    for i, row in enumerate(msv):
        v = row[:k][np.isfinite(row[:k])]
        out[i] = v.mean() if len(v) else 0.0
    return out


def musc(tokens, valid, alpha, grid=None, radius=None):
    n = len(tokens)
    n_layers, m, _ = tokens[0].shape
    k = max(1, int(np.floor(alpha * (n - 1))))
    scores = np.zeros((n, m))
    for layer in range(n_layers):
        for a in range(n):
            qa = tokens[a][layer][valid[a]]
            cols = []
            for b in range(n):
                if b == a:
                    continue
                d = windowed_cdist(qa, tokens[b][layer][valid[b]], np.flatnonzero(valid[a]),
                                   np.flatnonzero(valid[b]), grid, radius)
                cols.append(d.min(axis=1))
            msv = np.sort(np.stack(cols, axis=1), axis=1)
            scores[a, valid[a]] += finite_mean_of_k_smallest(msv, k) / n_layers
    return scores


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tokens", required=True)
    ap.add_argument("--run", required=True, help="output folder of mri-ad score --method musc")
    ap.add_argument("--alpha", type=float, default=0.3)
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--keep-void", action="store_true", help="void tokens are queries and base too")
    ap.add_argument("--radius", type=int, default=None, help="the window search's radius (default: exact)")
    a = ap.parse_args()
    names, tokens, valid, grids = load(a.tokens)
    if a.keep_void:
        valid = [np.ones_like(v) for v in valid]
    ref = musc(tokens, valid, a.alpha, grids[0], a.radius)
    worst = 0.0
    for i, name in enumerate(names):
        ours = np.load(os.path.join(a.run, "token_scores", f"{name}.npy")).astype(np.float64)
        if ours.shape != ref[i].shape:
            print(f"{name}: shape {ours.shape} != reference {ref[i].shape}")
            sys.exit(1)
        rel = np.abs(ours - ref[i]) / np.maximum(np.abs(ref[i]), 1e-12)
        rel[(ref[i] == 0) & (ours == 0)] = 0.0
        worst = max(worst, float(rel.max()))
    search = "exact" if a.radius is None else f"window R = {a.radius}"
    print(f"musc parity ({search}): {len(names)} cases, {tokens[0].shape[0]} layers, {tokens[0].shape[1]} positions, "
          f"max relative difference {worst:.3e} (tolerance {a.tol:g})")
    sys.exit(0 if worst <= a.tol else 1)


if __name__ == "__main__":
    main()
