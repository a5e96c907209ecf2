#!/usr/bin/env python3
"""Prints two runs of the same batch side by side (the demo's CoDeGraph and MuSc runs): what each averages
over, lesion cases first, then where the recurring cases rank and whether the graph flagged them.

Reads each run's summary.json, scores.csv (ranked: column `rank`) and graph.json (CoDeGraph), and the
cohort's truth.json (`recurring`: the cases that share one lesion). Standard library only.

Usage: demo_report.py --truth TRUTH.json NAME=RUN [NAME=RUN ...]
"""
import argparse
import csv
import json
import os
import sys


def load(run):
    summary = json.load(open(os.path.join(run, "summary.json")))
    rows = list(csv.DictReader(open(os.path.join(run, "scores.csv"))))
    graph_path = os.path.join(run, "graph.json")
    graph = json.load(open(graph_path)) if os.path.exists(graph_path) else None
    return summary, rows, graph


def fmt(v, digits=3):
    return "–" if v is None else f"{v:.{digits}f}"


def mean(values):
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--truth", required=True)
    ap.add_argument("runs", nargs="+", help="NAME=RUN")
    a = ap.parse_args()
    recurring = json.load(open(a.truth))["recurring"]
    runs = []
    for spec in a.runs:
        name, _, path = spec.partition("=")
        if not path:
            print(f"demo_report: give NAME=RUN, got {spec!r}", file=sys.stderr)
            return 2
        runs.append((name, *load(path)))

    _, s0, rows0, _ = runs[0]
    lesion = [r["case"] for r in rows0 if r["label"] == "1"]
    healthy = [r["case"] for r in rows0 if r["label"] == "0"]
    n = len(rows0)
    lines = [
        (f"Dice at t*, mean over the {len(lesion)} lesion cases", lambda s, r: s["metrics"]["dice_mean_lesion_cases"]),
        (f"Dice at t*, mean over the {len(recurring)} recurring cases",
         lambda s, r: mean([s["metrics"]["dice_per_case"].get(c) for c in recurring])),
        (f"voxel AP, mean over the {len(lesion)} lesion cases", lambda s, r: s["metrics"]["voxel_ap_mean_lesion_cases"]),
        (f"voxel AP, mean over the {len(recurring)} recurring cases",
         lambda s, r: mean([s["metrics"]["voxel_ap_per_case"].get(c) for c in recurring])),
        (f"patient AUROC ({len(lesion)} lesion against {len(healthy)} lesion-free cases)",
         lambda s, r: s["metrics"]["patient_auroc"]),
    ]
    width = max(len(label) for label, _ in lines) + 2
    header = "".ljust(width) + "".join(name.rjust(12) for name, *_ in runs)
    print(header)
    for label, get in lines:
        print(label.ljust(width) + "".join(fmt(get(s, r)).rjust(12) for _, s, r, _ in runs))

    print(f"\nrank of each recurring case (1 = the highest score of the {n} cases: {len(lesion)} with a lesion, "
          f"{len(healthy)} healthy):")
    print("case".ljust(width) + "".join(name.rjust(12) for name, *_ in runs))
    rank = [{r["case"]: int(r["rank"]) for r in rows} for _, _, rows, _ in runs]
    for c in recurring:
        print(c.ljust(width) + "".join(str(rk[c]).rjust(12) for rk in rank))
    print("highest-ranked healthy case".ljust(width)
          + "".join(str(min(rk[c] for c in healthy)).rjust(12) for rk in rank))

    print()
    for (name, s, rows, graph), rk in zip(runs, rank):
        above = sum(1 for c in recurring if rk[c] < min(rk[h] for h in healthy))
        verdict = "all" if above == len(recurring) else f"{above} of {len(recurring)}"
        flagged = ""
        if graph is not None:
            outliers = [sorted(c["members"]) for c in graph["communities"] if c["outlier"]]
            if outliers:
                flagged = "; the graph flagged " + " and ".join("{" + ", ".join(o) + "}" for o in outliers)
                exact = any(set(o) == set(recurring) for o in outliers)
                flagged += " (exactly the recurring cases)" if exact else ""
            else:
                groups = sum(1 for c in graph["communities"] if len(c["members"]) > 1)
                need = s["scoring"]["config"]["min-communities"]
                flagged = (f"; the graph flagged no community ({groups} communities of more than one case, "
                           f"the outlier rule needs {need}: --min-communities)" if groups < need
                           else "; the graph flagged no community")
        print(f"{name}: {verdict} recurring cases rank above every healthy case{flagged}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
