#!/usr/bin/env python3
"""Mean ± sd over projection draws, as the tables of docs/experiments/2026-11-30-demo-cohort.md show them.

Each --run LABEL=DIR is one finished `mri-ad score` run with labels (its summary.json, or with --eval-json the
eval.json that `mri-ad eval` last wrote there); each --py LABEL=FILE is a
`scripts/oracles/ref_pipeline.py` result JSON with one or more seeds (every seed in `per_seed` is one draw). Draws with
the same LABEL are pooled. The recurring and healthy cases come from --truth (the demo cohort's truth.json, keys
`recurring` and `healthy`).

Columns: patient AUROC, patient F1-max, voxel AUROC, mean Dice over all cases, mean Dice over lesion cases,
hottest voxel in the lesion (fraction of lesion cases), mean Dice over the recurring cases, mean voxel AP over
lesion cases and over recurring cases, the fraction of healthy cases with nothing at or above t* (their Dice is 1),
and t*; then, where the results have them (mri-ad since 2026-11-30, ref_pipeline.py likewise), the Dice over
lesion cases and over the recurring cases at the voxel-level F1-max threshold (outside §8.3), that
threshold, and the token-level Dice at t* over lesion cases and over the recurring cases ("nan" for results
without them). Prints one Markdown row per label (mean ± sample sd over its n draws; "–" for the sd of one draw), in
the order first given.

Usage: draws_table.py --truth demo/cohort/truth.json [--run LABEL=DIR ...] [--py LABEL=FILE ...] [--per-draw]
                      [--eval-json]
"""
import argparse
import json
import os
import sys

import numpy as np

COLUMNS = ["patient_auroc", "patient_f1_max", "voxel_auroc", "dice_mean", "dice_lesion", "hottest",
           "dice_recurring", "ap_lesion", "ap_recurring", "healthy_clean", "t_star", "vox_dice_lesion",
           "vox_dice_recurring", "t_voxel", "token_dice_lesion", "token_dice_recurring"]


def draw(metrics, recurring, healthy_cases):
    dice = metrics["dice_per_case"]
    ap = metrics.get("voxel_ap_per_case")  # absent in results of older versions: shown as nan
    healthy = [dice[c] for c in healthy_cases]
    vox = metrics.get("dice_at_voxel_threshold_per_case")
    tok = metrics.get("token_dice_per_case")
    lesion_cases = [c for c in dice if c not in healthy_cases]
    nan = float("nan")
    return {
        "patient_auroc": metrics["patient_auroc"],
        "patient_f1_max": metrics["patient_f1_max"],
        "voxel_auroc": metrics["voxel_auroc"],
        "dice_mean": metrics["dice_mean"],
        "dice_lesion": metrics["dice_mean_lesion_cases"],
        "hottest": metrics["hottest_voxel_in_lesion_fraction"],
        "dice_recurring": float(np.mean([dice[c] for c in recurring])),
        "ap_lesion": metrics.get("voxel_ap_mean_lesion_cases", float("nan")),
        "ap_recurring": float(np.mean([ap[c] for c in recurring])) if ap else float("nan"),
        "healthy_clean": float(np.mean(healthy)) if healthy else float("nan"),
        "t_star": metrics["dice_threshold"],
        "vox_dice_lesion": float(np.mean([vox[c] for c in lesion_cases])) if vox else nan,
        "vox_dice_recurring": float(np.mean([vox[c] for c in recurring])) if vox else nan,
        "t_voxel": metrics.get("voxel_f1_threshold", nan),
        "token_dice_lesion": float(np.mean([tok[c] for c in lesion_cases])) if tok else nan,
        "token_dice_recurring": float(np.mean([tok[c] for c in recurring])) if tok else nan,
    }


def split(arg):
    if "=" not in arg:
        sys.exit(f"draws_table: expected LABEL=PATH, got {arg!r}")
    return arg.split("=", 1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--truth", required=True)
    ap.add_argument("--run", action="append", default=[])
    ap.add_argument("--py", action="append", default=[])
    ap.add_argument("--per-draw", action="store_true", help="also print every draw")
    ap.add_argument("--eval-json", action="store_true", help="read each run's eval.json instead of summary.json")
    args = ap.parse_args()
    with open(args.truth) as f:
        truth = json.load(f)
    recurring, healthy = truth["recurring"], truth["healthy"]
    groups = {}
    for label, run in map(split, args.run):
        with open(os.path.join(run, "eval.json" if args.eval_json else "summary.json")) as f:
            groups.setdefault(label, []).append((run, draw(json.load(f)["metrics"], recurring, healthy)))
    for label, path in map(split, args.py):
        with open(path) as f:
            result = json.load(f)
        # ref_pipeline.py writes per_seed only for two or more seeds; one seed's metrics are at the top level
        per_seed = result.get("per_seed") or {str(result.get("seed", "?")): result}
        for seed, metrics in per_seed.items():
            groups.setdefault(label, []).append((f"{path} seed {seed}", draw(metrics, recurring, healthy)))
    print("| draws | n | " + " | ".join(COLUMNS) + " |")
    print("|---" * (len(COLUMNS) + 2) + "|")
    for label, draws in groups.items():
        if args.per_draw:
            for name, d in draws:
                print(f"| {name} | 1 | " + " | ".join(f"{d[c]:.5f}" if c == "voxel_auroc" else f"{d[c]:.3f}" for c in COLUMNS) + " |")
        cells = []
        for c in COLUMNS:
            x = np.array([d[c] for _, d in draws])
            digits = 5 if c == "voxel_auroc" else 3
            sd = f"{x.std(ddof=1):.{digits}f}" if len(x) > 1 else "–"
            cells.append(f"{x.mean():.{digits}f} ± {sd}")
        print(f"| {label} | {len(draws)} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
