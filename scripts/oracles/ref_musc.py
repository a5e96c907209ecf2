#!/usr/bin/env python3
"""Independent numpy/scipy implementation of MuSc mutual scoring (ALGORITHM.md §5) on token files, compared
with the token scores of an `mri-ad score --method musc` run.

For every layer l, case a, valid position p and other case b: D = min over valid q of ||x_ap - x_bq||
(float64, scipy cdist); the N-1 values are sorted and the k = max(1, floor(alpha*(N-1))) smallest averaged;
the scores are averaged over layers. Void positions score 0 (they are neither queries nor base).
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
    return names, [d["tokens"].astype(np.float64) for d in data], [d["valid"].astype(bool) for d in data]


def musc(tokens, valid, alpha):
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
                cols.append(cdist(qa, tokens[b][layer][valid[b]]).min(axis=1))
            msv = np.sort(np.stack(cols, axis=1), axis=1)
            scores[a, valid[a]] += msv[:, :k].mean(axis=1) / n_layers
    return scores


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tokens", required=True)
    ap.add_argument("--run", required=True, help="output folder of mri-ad score --method musc")
    ap.add_argument("--alpha", type=float, default=0.3)
    ap.add_argument("--tol", type=float, default=1e-4)
    ap.add_argument("--keep-void", action="store_true", help="void tokens are queries and base too")
    a = ap.parse_args()
    names, tokens, valid = load(a.tokens)
    if a.keep_void:
        valid = [np.ones_like(v) for v in valid]
    ref = musc(tokens, valid, a.alpha)
    worst = 0.0
    for i, name in enumerate(names):
        ours = np.load(os.path.join(a.run, "token_scores", f"{name}.npy")).astype(np.float64)
        if ours.shape != ref[i].shape:
            print(f"{name}: shape {ours.shape} != reference {ref[i].shape}")
            sys.exit(1)
        rel = np.abs(ours - ref[i]) / np.maximum(np.abs(ref[i]), 1e-12)
        rel[(ref[i] == 0) & (ours == 0)] = 0.0
        worst = max(worst, float(rel.max()))
    print(f"musc parity: {len(names)} cases, {tokens[0].shape[0]} layers, {tokens[0].shape[1]} positions, "
          f"max relative difference {worst:.3e} (tolerance {a.tol:g})")
    sys.exit(0 if worst <= a.tol else 1)


if __name__ == "__main__":
    main()
