#!/usr/bin/env python3
"""Independent numpy/scipy computation of the similarity-scaling curve (ALGORITHM.md §10), compared with
`scoring.similarity_scaling` in the summary.json of an `mri-ad score --tokens` run.

For every layer l, case a, valid position p and other case b: D = min over valid q of ||x_ap - x_bq||
(float64, scipy cdist): the first-pass distances, before any CoDeGraph exclusion. The N-1 values are sorted
(m_1 <= ... <= m_{N-1}) and tau_i = ln(m_{i+1}/m_i), i = 1..N-2 (undefined when m_i = 0). A token's value
at rank i is the mean over the layers (undefined if any layer's is); the curve is the mean over the tokens,
split into "flagged" (the positions listed under "excluded" in graph.json, when there is one) and "normal"
(every other valid token). Checks the counts exactly and the means to --tol; also checks that the fitted
slope printed by mri-ad equals an OLS fit of the reference curve over the same ranks. Exits 1 on a mismatch.
Compares runs without --divide (a divided run's curve is the sum of its parts' curves, each with its own N).
"""
import argparse
import json
import os
import sys

import numpy as np
from scipy.spatial.distance import cdist

from ref_musc import load  # the token-file reader (names, float64 tokens, valid, grids)


def taus(tokens, valid, squared):
    """Per case: array [n_valid, N-2] of layer-averaged tau (NaN where undefined)."""
    n = len(tokens)
    n_layers = tokens[0].shape[0]
    out = [np.zeros((int(v.sum()), n - 2)) for v in valid]
    for layer in range(n_layers):
        for a in range(n):
            qa = tokens[a][layer][valid[a]]
            cols = [cdist(qa, tokens[b][layer][valid[b]]).min(axis=1) for b in range(n) if b != a]
            msv = np.sort(np.stack(cols, axis=1), axis=1)
            if squared:
                msv = msv**2
            with np.errstate(divide="ignore", invalid="ignore"):
                t = np.log(msv[:, 1:] / msv[:, :-1])
            t[msv[:, :-1] <= 0] = np.nan
            out[a] += t / n_layers
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tokens", required=True)
    ap.add_argument("--run", required=True, help="output folder of mri-ad score --tokens")
    ap.add_argument("--squared", action="store_true", help="the run used --distance squared")
    ap.add_argument("--tol", type=float, default=1e-4)
    a = ap.parse_args()
    names, tokens, valid, _ = load(a.tokens)
    summary = json.load(open(os.path.join(a.run, "summary.json")))
    ours = summary["scoring"]["similarity_scaling"]
    excluded = {}
    graph_path = os.path.join(a.run, "graph.json")
    if os.path.exists(graph_path):
        excluded = json.load(open(graph_path))["excluded"]
    per_case = taus(tokens, valid, a.squared)
    width = len(names) - 2
    sums = {"normal": np.zeros(width), "flagged": np.zeros(width)}
    counts = {"normal": np.zeros(width, int), "flagged": np.zeros(width, int)}
    for name, v, t in zip(names, valid, per_case):
        positions = np.flatnonzero(v)
        flag = np.isin(positions, np.asarray(excluded.get(name, []), dtype=int))
        for group, rows in [("flagged", t[flag]), ("normal", t[~flag])]:
            ok = np.isfinite(rows)
            sums[group] += np.where(ok, rows, 0).sum(axis=0)
            counts[group] += ok.sum(axis=0)
    problems = []
    worst = 0.0
    for group in ["normal", "flagged"]:
        got_counts = np.asarray(ours[f"count_{group}"])
        if got_counts.shape != counts[group].shape or (got_counts != counts[group]).any():
            problems.append(f"{group} counts {got_counts.tolist()} != reference {counts[group].tolist()}")
            continue
        with np.errstate(invalid="ignore"):
            ref = np.where(counts[group] > 0, sums[group] / np.maximum(counts[group], 1), np.nan)
        got = np.array([np.nan if x is None else x for x in ours[f"mean_tau_{group}"]], dtype=float)
        if (np.isnan(got) != np.isnan(ref)).any():
            problems.append(f"{group}: defined ranks differ")
            continue
        ok = ~np.isnan(ref)
        if ok.any():
            err = np.abs(got[ok] - ref[ok]).max()
            worst = max(worst, err)
            if err > a.tol:
                problems.append(f"{group}: max |mean tau - reference| = {err:.3g} > {a.tol}")
    ref_normal = sums["normal"] / np.maximum(counts["normal"], 1)
    fit = ours["fit_normal"]
    if fit is not None:
        hi = fit["fit_range"][1]
        i = np.arange(1, hi + 1)
        y = ref_normal[:hi]
        keep = (counts["normal"][:hi] > 0) & (y > 0)
        slope = np.polyfit(np.log(i[keep]), np.log(y[keep]), 1)[0]
        if abs(slope - fit["slope"]) > 1e-3:
            problems.append(f"fit slope {fit['slope']:.5f} != reference {slope:.5f}")
    flagged_total = int(counts["flagged"][0]) if width else 0
    print(
        f"similarity scaling: {len(names)} cases, {int(counts['normal'][0]) if width else 0} normal / "
        f"{flagged_total} flagged tokens, max |diff| {worst:.2e}; normal tau_1 {ref_normal[0]:.4f}, "
        f"tau_{width} {ref_normal[-1]:.4f}; fit {fit}"
    )
    if problems:
        print("MISMATCH:\n  " + "\n  ".join(problems))
        sys.exit(1)


if __name__ == "__main__":
    main()
