#!/usr/bin/env python3
"""numpy reference for RsCIN (ALGORITHM.md §7.1 step 4).

Usage: ref_rscin.py IN.npz OUT.npz

Input keys per case k: raw_k [N] float64, emb_k [N, D] float32, windows_k [n_windows] int.
Output keys: out_k [N] (the refined scores) and outhi_k (the same with the wrong tie rule "higher column index
first", for the test to show that the tie rule is observable in its tie case).

Definition: ŝ = min–max normalised raw scores (all 0 when the raw scores are all equal); W = E·Eᵀ in float64;
for each κ, a row keeps its κ largest entries (ranking by value descending, ties by column ascending: a stable
argsort of −W), zeroes the rest and is divided by its sum; S_κ = P_κ ŝ; result = mean over κ.
"""
import sys

import numpy as np


def rscin(raw, emb, windows, ties_low_first=True):
    raw = raw.astype(np.float64)
    span = raw.max() - raw.min()
    s_hat = (raw - raw.min()) / span if span > 0 else np.zeros_like(raw)
    e = emb.astype(np.float64)
    w = e @ e.T
    n = w.shape[0]
    if ties_low_first:
        order = np.argsort(-w, axis=1, kind="stable")
    else:
        # reverse the columns, sort stably, map back: among equal values the higher index comes first
        order = (n - 1) - np.argsort(-w[:, ::-1], axis=1, kind="stable")
    total = np.zeros(n)
    for k in windows:
        keep = np.zeros_like(w, dtype=bool)
        np.put_along_axis(keep, order[:, :k], True, axis=1)
        p = np.where(keep, w, 0.0)
        p = p / p.sum(axis=1, keepdims=True)
        total += p @ s_hat
    return total / len(windows)


def main():
    d = np.load(sys.argv[1])
    out = {}
    for key in d.files:
        if key.startswith("raw_"):
            k = key[len("raw_"):]
            args = (d[key], d["emb_" + k], [int(v) for v in d["windows_" + k]])
            out["out_" + k] = rscin(*args)
            out["outhi_" + k] = rscin(*args, ties_low_first=False)
    np.savez(sys.argv[2], **out)


if __name__ == "__main__":
    main()
