#!/usr/bin/env python3
"""Pixel and image metrics of a `mri-ad score2d` run restricted to a group of images (scikit-learn).

For the recurring-defect experiments: the positives are the defect pixels of the chosen anomalous images,
the negatives every normal pixel of those images AND of every normal image (label 0 in scores.csv), so false
alarms anywhere count. Reads <run>/scores.csv, <run>/maps/<case>.npy and the masks folder (<case>.png).

Usage: subset_metrics2d.py RUN MASKS CASE [CASE ...]    (or --truth truth.json --key recurring)
Prints JSON: pixel AUROC, AP, F1-max and image AUROC (chosen anomalous vs normal images, column `score`).
"""
import argparse
import csv
import json
import os

import numpy as np
from PIL import Image
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score


def f1_max(y, s):
    p, r, _ = precision_recall_curve(y, s)
    f = 2 * p * r / np.maximum(p + r, 1e-300)
    return float(np.nanmax(f))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("masks")
    ap.add_argument("cases", nargs="*")
    ap.add_argument("--truth")
    ap.add_argument("--key", default="recurring")
    a = ap.parse_args()
    chosen = list(a.cases)
    if a.truth:
        chosen += json.load(open(a.truth))[a.key]
    rows = list(csv.DictReader(open(os.path.join(a.run, "scores.csv"))))
    normal = [r["case"] for r in rows if r["label"] == "0"]
    scores, labels = [], []
    for case in chosen + normal:
        m = np.load(os.path.join(a.run, "maps", f"{case}.npy"))
        mp = os.path.join(a.masks, f"{case}.png")
        gt = (np.asarray(Image.open(mp).convert("L")) > 0) if case in chosen and os.path.exists(mp) else np.zeros(m.shape, bool)
        scores.append(m.ravel())
        labels.append(gt.ravel())
    s, y = np.concatenate(scores), np.concatenate(labels)
    by_case = {r["case"]: float(r["score"]) for r in rows}
    img_s = [by_case[c] for c in chosen + normal]
    img_y = [1] * len(chosen) + [0] * len(normal)
    print(json.dumps({
        "cases": chosen,
        "normal_images": len(normal),
        "pixel_auroc": float(roc_auc_score(y, s)),
        "pixel_ap": float(average_precision_score(y, s)),
        "pixel_f1_max": f1_max(y, s),
        "image_auroc": float(roc_auc_score(img_y, img_s)),
    }))


if __name__ == "__main__":
    main()
