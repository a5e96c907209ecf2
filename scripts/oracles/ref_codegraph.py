#!/usr/bin/env python3
"""Independent numpy implementation of CoDeGraph (ALGORITHM.md §6, default settings, void tokens left out of
the search) on token files, compared with an `mri-ad score` (codegraph) run folder.

Computed here from the tokens, in float64: the nearest-collection distances of every layer; the
layer-averaged sorted MSVs up to r_ref = clamp(floor(0.3 N), 2, N-1); the weighted endurance ratios
(beta 0.2, eps 1e-12) of the link sources (non-void tokens at least `link-margin` 6-connected steps from
every void token, the margin read from the run's config.toml; scipy binary erosion); Algorithm 1 (coverage 0.9, batches of 100); the case graph and gamma (25th
percentile of the edge weights). Community detection is checked separately against leidenalg
(ref_leiden.py), so the membership is taken from the run's graph.json; from it the densities, the Tukey rule
(k_T and the fence pool -- the other communities or all of them -- read from config.toml, IQR floored at
0.5·Q3, at least 4 non-singleton communities), Algorithm 2 (alpha 0.1, p_dep 95, exact
refinement against the current base) and the final scores are recomputed and compared (with the run's
`search = "window"`, every nearest-token search looks only at base positions within Chebyshev distance
`radius` on the token grid, see ref_musc.py): links selected,
edges, gamma, densities and outlier flags, the excluded tokens of every case, and the token scores
(relative 1e-4). Exits 1 on any difference.
"""
import argparse
import glob
import json
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


def link_sources(valid, grid, margin):
    """Valid tokens at least `margin` 6-connected steps from every void token (outside the grid is not void)."""
    if margin == 0:
        return valid.copy()
    from scipy.ndimage import binary_erosion, generate_binary_structure
    v = valid.reshape(grid)
    return binary_erosion(v, structure=generate_binary_structure(3, 1), iterations=margin, border_value=1).ravel()


def max_relative_difference(ours, ref):
    """The largest |ours - ref| / |ref| over the entries (ref floored at 1e-12; entries 0 on both sides agree)."""
    rel = np.abs(ours - ref) / np.maximum(np.abs(ref), 1e-12)
    rel[(ref == 0) & (ours == 0)] = 0
    return float(rel.max())


# (grid, radius) of the run's window search; radius None = the exact search (set by main from config.toml).
WINDOW = (None, None)


def tables(tokens, valid, excluded):
    """dist[l][a]: [n_valid(a), N] distance of each valid token of a to the nearest base token of b."""
    from ref_musc import windowed_cdist
    grid, radius = WINDOW
    n, n_layers = len(tokens), tokens[0].shape[0]
    out = []
    for layer in range(n_layers):
        per = []
        for a in range(n):
            q = tokens[a][layer][valid[a]]
            d = np.full((q.shape[0], n), np.inf)
            for b in range(n):
                base = valid[b] & ~excluded[b]
                if b != a and base.any():
                    d[:, b] = windowed_cdist(q, tokens[b][layer][base], np.flatnonzero(valid[a]),
                                             np.flatnonzero(base), grid, radius).min(axis=1)
            per.append(d)
        out.append(per)
    return out


def s_value(rows_per_layer, k, skip):
    """Layer-average of the sorted rows (columns in `skip` removed), mean of the first k ranks."""
    sorted_rows = []
    for r in rows_per_layer:
        v = np.sort(r[~skip & np.isfinite(r)])
        sorted_rows.append(v[:k])
    m = min(len(v) for v in sorted_rows)
    if m == 0:
        return 0.0
    return float(np.mean([v[:m] for v in sorted_rows], axis=0).mean())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", required=True)
    ap.add_argument("--run", required=True)
    a = ap.parse_args()
    names, tokens, valid, grids = load(a.tokens)
    graph = json.load(open(os.path.join(a.run, "graph.json")))
    import tomllib
    with open(os.path.join(a.run, "config.toml"), "rb") as fh:
        run_config = tomllib.load(fh)
    margin = run_config.get("link-margin", 0)
    global WINDOW
    if run_config.get("search", "exact") == "window":
        WINDOW = (grids[0], int(run_config["radius"]))
    tukey_k = run_config.get("tukey-k", 3.0)
    tukey_fence = run_config.get("tukey-fence", "others")
    source = [link_sources(valid[c], grids[c], margin) for c in range(len(names))]
    n, n_layers, m = len(names), tokens[0].shape[0], tokens[0].shape[1]
    fails = []
    none = [np.zeros(m, bool) for _ in range(n)]
    dist = tables(tokens, valid, none)

    # Stage 1-2: MSVs, candidate keys, Algorithm 1.
    r_ref = min(max(int(np.floor(0.3 * n)), 2), n - 1)
    cands, neigh = [], {}
    for ca in range(n):
        for i, p in enumerate(np.flatnonzero(valid[ca])):
            layers = []
            for layer in range(n_layers):
                row = dist[layer][ca][i]
                order = np.lexsort((np.arange(n), row))[:r_ref]
                layers.append((row[order], order))
            mbar = np.mean([v for v, _ in layers], axis=0)
            neigh[(ca, p)] = [o for _, o in layers]
            if not source[ca][p] or not np.isfinite(mbar[-1]) or mbar[-1] <= 0:
                continue
            for rank in range(r_ref - 1):
                mi = mbar[rank]
                key = 0.0 if mi == 0 else (mi / mbar[-1]) * (mi + 1e-12) ** -0.2
                cands.append((key, ca, p, rank))
    cands.sort()
    w = np.zeros((n, n), int)
    covered = np.zeros(n, bool)
    pos = 0
    while covered.sum() < 0.9 * n and pos < len(cands):
        for key, ca, p, rank in cands[pos:pos + 100]:
            for layer in range(n_layers):
                b = neigh[(ca, p)][layer][rank]
                w[ca, b] += 1
                w[b, ca] += 1
                covered[[ca, b]] = True
        pos = min(pos + 100, len(cands))
    edges = [[i, j, float(w[i, j])] for i in range(n) for j in range(i + 1, n) if w[i, j] > 0]
    if pos != graph["links_selected"]:
        fails.append(f"links selected: reference {pos}, run {graph['links_selected']}")
    if edges != graph["edges"]:
        fails.append("edges differ")
    gamma = float(np.percentile([e[2] for e in edges], 25)) if edges else None
    if gamma != graph["resolution"]:
        fails.append(f"resolution: reference {gamma}, run {graph['resolution']}")

    # Stage 3: densities and outliers on the run's membership.
    comms = [c["member_indices"] for c in graph["communities"]]
    dens = {}
    for ci, c in enumerate(comms):
        if len(c) >= 2:
            wc = sum(w[u, v] for x, u in enumerate(c) for v in c[x + 1:])
            dens[ci] = wc / (len(c) * (len(c) - 1) / 2)
    outlier = set()
    if len(dens) >= 4:
        for ci, d in dens.items():
            pool = [x for cj, x in dens.items() if cj != ci] if tukey_fence == "others" else list(dens.values())
            q1, q3 = np.percentile(pool, [25, 75])
            if d > q3 + tukey_k * max(q3 - q1, 0.5 * q3):
                outlier.add(ci)
    for ci, c in enumerate(graph["communities"]):
        if (c["density"] is None) != (ci not in dens) or (ci in dens and abs(c["density"] - dens[ci]) > 1e-9):
            fails.append(f"community {ci}: density differs")
        if c["outlier"] != (ci in outlier):
            fails.append(f"community {ci}: outlier flag differs")

    # Algorithm 2 against the current base, densest community first.
    k = max(1, int(np.floor(0.1 * (n - 1))))
    excluded = [np.zeros(m, bool) for _ in range(n)]
    for ci in sorted(outlier, key=lambda c: (-dens[c], comms[c][0])):
        in_c = np.zeros(n, bool)
        in_c[comms[ci]] = True
        cur = tables(tokens, valid, excluded) if any(e.any() for e in excluded) else dist
        ratios = []
        for ca in range(n):
            for i, p in enumerate(np.flatnonzero(valid[ca])):
                if excluded[ca][p]:
                    continue
                rows = [cur[layer][ca][i] for layer in range(n_layers)]
                full = s_value(rows, k, np.zeros(n, bool))
                minus = s_value(rows, k, in_c)
                ratios.append((ca, p, minus / max(full, 1e-12)))
        tau = np.percentile([r for ca, p, r in ratios if not in_c[ca]], 95)
        for ca, p, r in ratios:
            if in_c[ca] and r > tau:
                excluded[ca][p] = True
    for ci, name in enumerate(names):
        want = np.flatnonzero(excluded[ci]).tolist()
        if want != graph["excluded"][name]:
            fails.append(f"{name}: excluded tokens differ ({len(want)} reference, {len(graph['excluded'][name])} run)")

    # Final scores on the refined base.
    final = tables(tokens, valid, excluded)
    worst = 0.0
    for ca, name in enumerate(names):
        ref = np.zeros(m)
        for layer in range(n_layers):
            msv = np.sort(final[layer][ca], axis=1)
            finite = np.where(np.isfinite(msv), msv, np.nan)
            ref[valid[ca]] += np.nanmean(finite[:, :k], axis=1) / n_layers
        ours = np.load(os.path.join(a.run, "token_scores", f"{name}.npy")).astype(np.float64)
        worst = max(worst, max_relative_difference(ours, ref))
    if worst > 1e-4:
        fails.append(f"token scores differ: max relative difference {worst:.2e}")
    n_exc = int(sum(e.sum() for e in excluded))
    print(f"codegraph reference: {n} cases, {len(cands)} candidate links, {pos} selected, {len(edges)} edges, "
          f"gamma {gamma}, {len(outlier)} outlier communities, {n_exc} tokens excluded; "
          f"token scores max relative difference {worst:.2e}")
    for f in fails:
        print("FAIL:", f)
    sys.exit(1 if fails else 0)


if __name__ == "__main__":
    main()
