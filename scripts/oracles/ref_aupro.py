#!/usr/bin/env python3
"""numpy/scipy/scikit-learn reference for AUPRO (ALGORITHM.md §8.2), written the way MuSc's routine works:
one pass over the images per threshold.

Usage: ref_aupro.py IN.npz OUT.npz

Input keys: map__<case>__<i> [H, W] float32 and mask__<case>__<i> [H, W] bool, images i = 0, 1, ... of a case.
Output keys per case: aupro_<case> [1] (NaN when undefined), aupro03_<case> [1] (the wrong variant that
divides the kept FPRs by 0.3 instead of min–max rescaling them), labels__<case>__<i> (the 8-connected
region labels of scipy.ndimage.label with a 3×3 structure, as float64).

Thresholds t_j = min + j·Δ, Δ = (max − min)/200, j = 0..199; prediction map > t; PRO = mean over all regions of
all images of TP/area; FPR = FP / GT-negative pixels; keep FPR < 0.3; rescale the kept FPRs to [0, 1];
sklearn.metrics.auc over the points in threshold order (its trapezoid on a decreasing x).
"""
import sys
from collections import defaultdict

import numpy as np
from scipy.ndimage import label
from sklearn.metrics import auc


def curve(maps, masks):
    values = np.concatenate([m.ravel() for m in maps]).astype(np.float64)
    lo, hi = values.min(), values.max()
    delta = (hi - lo) / 200
    regions = []  # (image index, boolean region mask)
    labels = []
    for i, mask in enumerate(masks):
        lab, n = label(mask, structure=np.ones((3, 3), dtype=int))
        labels.append(lab)
        regions += [(i, lab == r) for r in range(1, n + 1)]
    negatives = sum(int((~m).sum()) for m in masks)
    pros, fprs = [], []
    for j in range(200):
        t = lo + j * delta
        pred = [m.astype(np.float64) > t for m in maps]
        pros.append(np.mean([pred[i][reg].sum() / reg.sum() for i, reg in regions]) if regions else np.nan)
        fp = sum(int((p & ~m).sum()) for p, m in zip(pred, masks))
        fprs.append(fp / negatives if negatives else np.nan)
    return np.array(pros), np.array(fprs), labels, bool(regions) and negatives > 0


def integrate(pros, fprs, rescale):
    keep = fprs < 0.3
    f, p = fprs[keep], pros[keep]
    if f.size < 2 or f.max() == f.min():
        return np.nan
    f = (f - f.min()) / (f.max() - f.min()) if rescale else f / 0.3
    return auc(f, p)


def main():
    d = np.load(sys.argv[1])
    cases = defaultdict(dict)
    for key in d.files:
        kind, case, i = key.split("__")
        cases[case].setdefault(int(i), {})[kind] = d[key]
    out = {}
    for case, images in cases.items():
        order = sorted(images)
        maps = [images[i]["map"] for i in order]
        masks = [images[i]["mask"].astype(bool) for i in order]
        pros, fprs, labels, defined = curve(maps, masks)
        out[f"aupro_{case}"] = np.array([integrate(pros, fprs, True) if defined else np.nan])
        out[f"aupro03_{case}"] = np.array([integrate(pros, fprs, False) if defined else np.nan])
        for i, lab in zip(order, labels):
            out[f"labels__{case}__{i}"] = lab.astype(np.float64)
    np.savez(sys.argv[2], **out)


if __name__ == "__main__":
    main()
