#!/usr/bin/env python3
"""How the Dice protocol's one threshold cuts each lesion case's map, from a finished `mri-ad score` run:
per lesion case, on the written maps (each input's own grid) against its label map (any label > 0),
|P|/|G| at t* (summary.json's `dice_threshold`, predicted = map >= t*), the fraction of the lesion covered,
the Dice at t*, the best Dice the same map reaches with a threshold of its own (over its distinct values),
and the median map value inside the lesion. nibabel and numpy only.

Usage: map_threshold_report.py --run RUN --labels LABELS_DIR [--cases q00,q01,...]
"""
import argparse
import json
import os

import nibabel as nib
import numpy as np


def canonical(path):
    return np.asarray(nib.as_closest_canonical(nib.load(path)).dataobj)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True)
    ap.add_argument("--labels", required=True)
    ap.add_argument("--cases", help="comma-separated case ids (default: every case with a label file)")
    a = ap.parse_args()
    t = json.load(open(os.path.join(a.run, "summary.json")))["metrics"]["dice_threshold"]
    cases = a.cases.split(",") if a.cases else sorted(
        f[:-7] for f in os.listdir(a.labels) if f.endswith(".nii.gz"))
    print(f"{a.run}: t* = {t:.4f}")
    for case in cases:
        lesion = canonical(os.path.join(a.labels, f"{case}.nii.gz")) > 0
        if not lesion.any():
            continue
        m = canonical(os.path.join(a.run, "maps", f"{case}_anomaly.nii.gz")).astype(np.float64)
        pred = m >= t
        g = int(lesion.sum())
        dice = 2 * int((pred & lesion).sum()) / (int(pred.sum()) + g)
        v, y = m.ravel(), lesion.ravel()
        order = np.argsort(-v, kind="stable")
        vs, tp = v[order], np.cumsum(y[order])
        last_of_value = np.r_[vs[1:] != vs[:-1], True]  # a threshold keeps every voxel of equal value
        best = (2 * tp / (np.arange(1, v.size + 1) + g))[last_of_value].max()
        print(f"  {case}: |P|/|G| {pred.sum() / g:.2f}, lesion covered {(pred & lesion).sum() / g:.2f}, "
              f"Dice at t* {dice:.3f}, best own-threshold Dice {best:.3f}, median in lesion {np.median(m[lesion]):.3f}")


if __name__ == "__main__":
    main()
