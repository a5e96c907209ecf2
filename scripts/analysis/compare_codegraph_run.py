#!/usr/bin/env python3
"""Compare CoDeGraph as computed by `scripts/oracles/ref_pipeline.py --method codegraph` (numpy + leidenalg, written from
ALGORITHM.md §6 without mri-ad's code) with an `mri-ad score` run on the *same* tokens, at full scale.

The Python side writes its fused tokens with `--write-tokens DIR` (DIR/seed<k>/<case>.tokens.npz) and its token
scores with `--save-scores`; `mri-ad score --tokens DIR/seed<k> --out RUN` with the same CoDeGraph settings then
scores them. Compared: the links selected by Algorithm 1, the edges and their weights, gamma, the communities
(as sets of case names), the outlier flags, the tokens Algorithm 2 excluded in every case, and, with --py-scores,
every token score (relative difference; the Python side computes distances from float32 products in float64).
Exits 1 on any difference (token scores: relative 1e-4, as scripts/oracles/ref_codegraph.py).

Usage: compare_codegraph_run.py --py RESULT.json --seed K --run RUN [--py-scores DIR/seed<K>]
"""
import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "oracles"))
from ref_codegraph import max_relative_difference  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--py", required=True, help="ref_pipeline.py result JSON (--method codegraph)")
    ap.add_argument("--seed", required=True, help="the projection seed whose graph is compared")
    ap.add_argument("--run", required=True, help="mri-ad run folder scored from that seed's tokens")
    ap.add_argument("--py-scores", help="the Python token scores of that seed (a --save-scores folder)")
    a = ap.parse_args()
    res = json.load(open(a.py))
    res = res["per_seed"][a.seed] if "per_seed" in res else res
    if str(res.get("seed")) != str(a.seed) or "graph" not in res:
        raise SystemExit(f"{a.py}: no CoDeGraph result for seed {a.seed}")
    py = res["graph"]
    rs = json.load(open(os.path.join(a.run, "graph.json")))
    fails = []

    def check(what, want, got):
        if want != got:
            fails.append(f"{what}: python {want}, mri-ad {got}")

    check("links selected", py["links_selected"], rs["links_selected"])
    check("gamma", py["resolution"], rs["resolution"])
    # edges by case names: the two sides may order the cases differently. Older Python results have no
    # "cases"; their order is that of the per-case dictionaries (healthy, then query, each sorted).
    py_cases = py.get("cases") or list(res["patient_scores"])
    rs_cases = rs["cases"]
    named = lambda cases, e: tuple(sorted((cases[e[0]], cases[e[1]])))
    py_edges = {named(py_cases, e): int(e[2]) for e in py["edges"]}
    rs_edges = {named(rs_cases, e): int(e[2]) for e in rs["edges"]}
    if py_edges != rs_edges:
        fails.append(f"edges: python {len(py_edges)}, mri-ad {len(rs_edges)}, "
                     f"{sum(py_edges.get(e) != rs_edges.get(e) for e in set(py_edges) | set(rs_edges))} differ")
    communities = lambda g: sorted((sorted(c["members"]), bool(c["outlier"])) for c in g["communities"]
                                   if len(c["members"]) > 1)
    check("communities of two or more (members, outlier)", communities(py), communities(rs))
    names = sorted(py["excluded"])
    for name in names:
        want, got = set(py["excluded"][name]), set(rs["excluded"].get(name, []))
        if want != got:
            fails.append(f"{name}: excluded tokens: python {len(want)}, mri-ad {len(got)}, {len(want ^ got)} differ")
    worst = None
    if a.py_scores:
        worst = 0.0
        for name in names:
            want = np.load(os.path.join(a.py_scores, f"{name}.npy")).astype(np.float64)
            got = np.load(os.path.join(a.run, "token_scores", f"{name}.npy")).astype(np.float64)
            worst = max(worst, max_relative_difference(got, want))
        if worst > 1e-4:
            fails.append(f"token scores: max relative difference {worst:.2e}")
    flagged = [c["members"] for c in py["communities"] if c["outlier"]]
    print(f"seed {a.seed}: {len(names)} cases, {py['links_selected']} links, {len(py['edges'])} edges, gamma "
          f"{py['resolution']}, outlier communities {flagged}, "
          f"{sum(len(v) for v in py['excluded'].values())} tokens excluded"
          + ("" if worst is None else f", token scores max relative difference {worst:.2e}"))
    for f in fails:
        print("DIFFERS:", f)
    print("same" if not fails else f"{len(fails)} differences")
    sys.exit(1 if fails else 0)


if __name__ == "__main__":
    main()
