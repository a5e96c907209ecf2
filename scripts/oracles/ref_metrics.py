#!/usr/bin/env python3
"""Reference metrics with scikit-learn and numpy/scipy, for tests/eval.rs.

Input: an .npz with, for every score set k, `scores_k` and `labels_k` (flat), and for the Dice protocol
`tokens_i` (G³ token maps) and `mask_i` (S³ lesion masks, S = 14·G). Prints JSON: per score set the AUROC
(roc_auc_score), AP (average_precision_score) and F1-max with its threshold (precision_recall_curve), or null
when undefined; and the Dice protocol of ALGORITHM.md §8.3: token labels by 14³ max-pool, t* = token-grid
F1-max threshold over all cases, trilinear upsampling (scipy map_coordinates, order 1) with the token values
at the centres of their 14-voxel blocks ("centres", mri-ad's default) and with align-corners ("corners"),
prediction score >= t*, Dice per case (1 when prediction and mask are both empty), mean over all cases and
over lesion cases, one such result per upsampling; and the same Dice at the voxel-level F1-max
threshold (precision_recall_curve over every voxel of every upsampled map), a supplementary figure
outside §8.3, as is the token-level Dice per case (tokens >= t* against the pooled token labels). With `points_i` ([K, 3] voxel indices) for a case with a
lesion: each point's Euclidean distance to the nearest lesion voxel (scipy distance_transform_edt, 0 inside).
"""
import json
import sys

import numpy as np
from scipy.ndimage import distance_transform_edt, map_coordinates
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score


def f1max(scores, labels):
    p, r, t = precision_recall_curve(labels, scores)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = 2 * p * r / (p + r)
    f1 = f1[:-1]  # the last point has no threshold
    f1 = np.where(np.isfinite(f1), f1, -1)
    i = int(np.argmax(f1))
    return float(f1[i]), float(t[i])


def upsample(grid, size, mode):
    """Trilinear S³ map of a G³ token grid (scipy map_coordinates, order 1): "corners" = align-corners, voxel o
    samples o·(G−1)/(S−1); "centres" = voxel o lies at (o + 0.5)·G/S − 0.5 token cells, the edge value beyond
    the outer centres."""
    g = grid.shape[0]
    if mode == "corners":
        c = np.arange(size) * (g - 1) / (size - 1)
    else:
        c = np.clip((np.arange(size) + 0.5) / (size / g) - 0.5, 0, g - 1)
    zz, yy, xx = np.meshgrid(c, c, c, indexing="ij")
    return map_coordinates(grid.astype(np.float64), [zz, yy, xx], order=1)


def dice_at(ups, masks, t):
    """Dice of every upsampled map at `score >= t` (None: nothing predicted), 1 when both sets are empty."""
    per_case = []
    for up, mask in zip(ups, masks):
        pred = up >= t if t is not None else np.zeros_like(mask)
        denom = pred.sum() + mask.sum()
        per_case.append(1.0 if denom == 0 else 2.0 * (pred & mask).sum() / denom)
    lesion = [dc for dc, mask in zip(per_case, masks) if mask.any()]
    return {"threshold": t, "per_case": per_case, "mean": float(np.mean(per_case)),
            "mean_lesion": float(np.mean(lesion)) if lesion else None}


def main():
    d = np.load(sys.argv[1])
    out = {"sets": {}}
    for key in sorted(k for k in d.files if k.startswith("scores_")):
        name = key[len("scores_"):]
        s = d[key].astype(np.float64)
        y = d["labels_" + name].astype(bool)
        both = 0 < y.sum() < y.size
        entry = {
            "auroc": float(roc_auc_score(y, s)) if both else None,
            "ap": float(average_precision_score(y, s)) if y.any() else None,
            "f1max": f1max(s, y) if y.any() else None,
        }
        out["sets"][name] = entry
    tokens = sorted(k for k in d.files if k.startswith("tokens_"))
    if tokens:
        maps = [d[k].astype(np.float64) for k in tokens]
        masks = [d["mask_" + k[len("tokens_"):]].astype(bool) for k in tokens]
        g = maps[0].shape[0]
        pooled = [m.reshape(g, 14, g, 14, g, 14).any(axis=(1, 3, 5)) for m in masks]
        s = np.concatenate([m.ravel() for m in maps])
        y = np.concatenate([p.ravel() for p in pooled])
        t = f1max(s, y)[1] if y.any() else None
        out["dice"] = {}
        # Token-level Dice per case (outside §8.3): tokens >= t* against the pooled token labels.
        out["token_dice"] = dice_at(maps, pooled, t)["per_case"]
        for mode in ("centres", "corners"):
            ups = [upsample(m, mask.shape[0], mode) for m, mask in zip(maps, masks)]
            out["dice"][mode] = dice_at(ups, masks, t)
            # The supplementary Dice at the voxel-level F1-max threshold (pooled over every voxel of every map).
            vox_labels = np.concatenate([mask.ravel() for mask in masks])
            best = f1max(np.concatenate([u.ravel() for u in ups]), vox_labels) if vox_labels.any() else None
            voxel = dice_at(ups, masks, best[1] if best else None)
            voxel["f1max"] = best[0] if best else None
            out["dice"][mode]["at_voxel_threshold"] = voxel
        out["distance"] = {}
        for k in tokens:
            i = k[len("tokens_"):]
            if "points_" + i in d.files and d["mask_" + i].any():
                edt = distance_transform_edt(~d["mask_" + i].astype(bool))
                out["distance"][i] = [float(edt[tuple(p)]) for p in d["points_" + i]]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
