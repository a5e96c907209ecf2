#!/usr/bin/env python3
"""Prints the results table of runs of one batch with different searches (exact, window R = 1, 2, 3):
the scoring stage's wall time and its ratio to the first run's, the distance kernel's share, patient AUROC,
voxel AUROC, mean Dice at t* over every case and over the lesion cases, mean voxel AP over the lesion cases,
each metric's difference from the first run in brackets; how many of the cohort's recurring cases
(truth.json `recurring`) rank above every lesion-free case, and whether the CoDeGraph graph flagged exactly
them.

Reads each run's summary.json, scores.csv and graph.json. Standard library only.

Usage: window_table.py --truth TRUTH.json NAME=RUN [NAME=RUN ...]   (the first run is the reference)
"""
import argparse
import csv
import json
import os
import sys


def load(run):
    summary = json.load(open(os.path.join(run, "summary.json")))
    graph_path = os.path.join(run, "graph.json")
    graph = json.load(open(graph_path)) if os.path.exists(graph_path) else None
    rows = list(csv.DictReader(open(os.path.join(run, "scores.csv"))))
    return summary, graph, rows


def above_healthy(rows, recurring):
    best_healthy = min(int(r["rank"]) for r in rows if r["label"] == "0")
    return sum(1 for r in rows if r["case"] in recurring and int(r["rank"]) < best_healthy)


def stage_seconds(summary, prefix):
    return sum(t["seconds"] for t in summary["timings"] if t["stage"].startswith(prefix))


def flagged(graph):
    if graph is None:
        return None
    return sorted(m for c in graph["communities"] if c["outlier"] for m in c["members"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--truth", required=True)
    ap.add_argument("runs", nargs="+", help="NAME=RUN")
    a = ap.parse_args()
    recurring = sorted(json.load(open(a.truth))["recurring"])
    rows = []
    for spec in a.runs:
        name, _, path = spec.rpartition("=")
        if not path:
            print(f"window_table: give NAME=RUN, got {spec!r}", file=sys.stderr)
            return 2
        summary, graph, ranked = load(path)
        m = summary["metrics"]
        rows.append({
            "name": name,
            "scoring": sum(t["seconds"] for t in summary["timings"] if t["stage"] == "scoring"),
            "kernel": stage_seconds(summary, "scoring: distances"),
            "patient AUROC": m["patient_auroc"],
            "voxel AUROC": m["voxel_auroc"],
            "Dice (all)": m["dice_mean"],
            "Dice (lesion)": m["dice_mean_lesion_cases"],
            "voxel AP (lesion)": m["voxel_ap_mean_lesion_cases"],
            "flagged": flagged(graph),
            "above": above_healthy(ranked, recurring),
        })
    ref = rows[0]
    metrics = ["patient AUROC", "voxel AUROC", "Dice (all)", "Dice (lesion)", "voxel AP (lesion)"]
    print("| search | scoring s | × faster | distances s | " + " | ".join(metrics)
          + f" | recurring above all healthy (of {len(recurring)}) | recurring group found |")
    print("|---" * (6 + len(metrics)) + "|")
    for r in rows:
        cells = [r["name"], f"{r['scoring']:.2f}", f"{ref['scoring'] / r['scoring']:.1f}", f"{r['kernel']:.2f}"]
        for k in metrics:
            diff = r[k] - ref[k]
            cells.append(f"{r[k]:.3f}" + ("" if r is ref else f" ({diff:+.3f})"))
        cells.append(str(r["above"]))
        f = r["flagged"]
        cells.append("–" if f is None else ("yes" if f == recurring else f"no ({len(f)} flagged)"))
        print("| " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
