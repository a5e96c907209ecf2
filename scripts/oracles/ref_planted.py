#!/usr/bin/env python3
"""Evaluates CoDeGraph (and MuSc) runs on a planted token batch written by make_tokens.py.

Reads truth.json of the token folder, graph.json and token_scores/ of the runs, and prints:
the outlier communities, the fraction of planted tokens excluded, the fraction of normal tokens excluded
(normal = valid, neither planted nor a random one-off anomaly), and the AUROC of planted vs normal tokens
(scikit-learn). With --expect, checks the issue's acceptance targets and exits 1 if one fails:
  planted: exactly the planted cases form the one outlier community; >= 90% of planted tokens and
           <= 2% of normal tokens excluded; CoDeGraph AUROC >= 0.95; MuSc AUROC < 0.5 (when --musc given).
  clean:   < 1% of all tokens excluded.
"""
import argparse
import glob
import json
import os
import sys

import numpy as np
from sklearn.metrics import roc_auc_score


def token_labels(tokens_dir, truth):
    names = truth["cases"]
    planted_cases = set(truth["planted_cases"])
    planted_pos = set(truth["planted_positions"])
    lab = {}
    for name in names:
        valid = np.load(os.path.join(tokens_dir, f"{name}.tokens.npz"))["valid"].astype(bool)
        y = np.full(valid.size, -1)  # -1: not evaluated (void or one-off anomaly)
        y[valid] = 0
        if name in planted_cases:
            for p in planted_pos:
                y[p] = 1
        for p in truth["random_anomalies"].get(name, []):
            y[p] = -1
        lab[name] = y
    return lab


def auroc(run, lab):
    ys, ss = [], []
    for name, y in lab.items():
        s = np.load(os.path.join(run, "token_scores", f"{name}.npy"))
        keep = y >= 0
        ys.append(y[keep])
        ss.append(s[keep])
    y, s = np.concatenate(ys), np.concatenate(ss)
    return roc_auc_score(y, s) if 0 < y.sum() < y.size else float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", required=True)
    ap.add_argument("--codegraph", required=True, help="run folder of --method codegraph")
    ap.add_argument("--musc", help="run folder of --method musc")
    ap.add_argument("--expect", choices=["planted", "clean"])
    a = ap.parse_args()
    truth = json.load(open(os.path.join(a.tokens, "truth.json")))
    graph = json.load(open(os.path.join(a.codegraph, "graph.json")))
    lab = token_labels(a.tokens, truth)
    outliers = [sorted(c["members"]) for c in graph["communities"] if c["outlier"]]
    n_planted = sum(int((y == 1).sum()) for y in lab.values())
    n_normal = sum(int((y == 0).sum()) for y in lab.values())
    n_all = sum(y.size for y in lab.values())
    exc_planted = exc_normal = exc_all = 0
    for name, idx in graph["excluded"].items():
        y = lab[name]
        idx = np.asarray(idx, dtype=int)
        exc_all += idx.size
        exc_planted += int((y[idx] == 1).sum())
        exc_normal += int((y[idx] == 0).sum())
    fails = []
    print(f"cases: {len(truth['cases'])}, planted cases: {truth['planted_cases']}")
    print(f"links selected: {graph['links_selected']} of {graph['link_candidates']}, coverage {graph['coverage']:.2f}, "
          f"resolution {graph['resolution']}, communities: {len(graph['communities'])} "
          f"({sum(1 for c in graph['communities'] if len(c['members']) > 1)} non-singleton)")
    print(f"outlier communities: {outliers}")
    print(f"excluded: {exc_all} of {n_all} tokens ({exc_all / n_all:.2%}); planted {exc_planted}/{n_planted}"
          f" ({exc_planted / max(n_planted, 1):.1%}); normal {exc_normal}/{n_normal} ({exc_normal / n_normal:.2%})")
    if n_planted:
        auc_cg = auroc(a.codegraph, lab)
        print(f"AUROC planted vs normal tokens: CoDeGraph {auc_cg:.4f}")
        if a.musc:
            auc_m = auroc(a.musc, lab)
            print(f"AUROC planted vs normal tokens: MuSc      {auc_m:.4f}")
    if a.expect == "planted":
        if outliers != [sorted(truth["planted_cases"])]:
            fails.append("the one outlier community is not exactly the planted cases")
        if exc_planted < 0.9 * n_planted:
            fails.append("fewer than 90% of the planted tokens excluded")
        if exc_normal > 0.02 * n_normal:
            fails.append("more than 2% of the normal tokens excluded")
        if not auc_cg >= 0.95:
            fails.append("CoDeGraph AUROC below 0.95")
        if a.musc and not auc_m < 0.5:
            fails.append("MuSc AUROC not below 0.5 (the batch does not exercise the recurring-anomaly problem)")
    elif a.expect == "clean":
        if exc_all >= 0.01 * n_all:
            fails.append("1% or more of the tokens excluded on a batch with nothing planted")
    for f in fails:
        print("FAIL:", f)
    sys.exit(1 if fails else 0)


if __name__ == "__main__":
    main()
