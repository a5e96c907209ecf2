#!/usr/bin/env python3
"""Recompute the cube-space metrics of a finished `mri-ad score` run on NIfTI volumes with labels, independently
of mri-ad's code (numpy, scipy, nibabel, scikit-learn), for tests/pipeline.rs.

From the run folder it reads only what fixes the inputs: summary.json (the inputs with their labels, the cube
size, the batch crop box and the upsampling) and token_scores/<case>.npy. Each label map goes to the cube in
mri-ad's geometry (scripts/oracles/ref_revoid.py: RAS+, the batch box, the isotropic cube, nearest voxel). Then:
token labels by 14³ max-pool, t* = token-grid F1-max threshold (scikit-learn's precision_recall_curve),
trilinear maps (scipy map_coordinates, token values at the block centres or align-corners, as the run says),
the §8.3 Dice per case at t*; outside §8.3, the token-level Dice per case at t*, the exact voxel-level
F1-max over every voxel of every map and the Dice per case at its threshold. Prints JSON.

The exact voxel F1-max needs every upsampled map at once: above 2^26 voxels in all (a 224³ batch) it is left
out (null) and the maps are made one at a time. Only `--crop batch`.

Usage: ref_run_metrics.py --run RUN [--root DIR]
"""
import argparse
import json
import os
import sys

import numpy as np

from ref_metrics import dice_at, f1max, upsample
from ref_revoid import canonical, cube_coords, nearest_mask

P = 14


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True)
    ap.add_argument("--root", default=".", help="folder the input paths of summary.json are relative to")
    a = ap.parse_args()
    summary = json.load(open(os.path.join(a.run, "summary.json")))
    pre = summary["preprocessing"]
    if pre.get("crop") != "batch" or pre.get("source") != "nifti":
        sys.exit("ref_run_metrics: only runs on NIfTI volumes with --crop batch")
    size = int(pre["size"])
    g = size // P
    whole_batch = len(summary["inputs"]) * size ** 3 <= 1 << 26
    mode = summary["maps"]["upsample"]
    lo, hi = np.array(pre["batch_box"]["lo"]), np.array(pre["batch_box"]["hi"])
    cases, tokens, masks = [], [], []
    for inp in summary["inputs"]:
        tokens.append(np.load(os.path.join(a.run, "token_scores", inp["case"] + ".npy")).reshape(g, g, g))
        if inp["label"]:
            vol, spacing = canonical(os.path.join(a.root, inp["label"]))
            masks.append(nearest_mask(vol, lo, hi, cube_coords(lo, hi, spacing, size)))
        else:
            masks.append(np.zeros((size,) * 3, bool))
        cases.append(inp["case"])
    pooled = [m.reshape(g, P, g, P, g, P).any(axis=(1, 3, 5)) for m in masks]
    t = f1max(np.concatenate([s.ravel() for s in tokens]), np.concatenate([p.ravel() for p in pooled]))[1]
    token_dice = dice_at(tokens, pooled, t)
    if whole_batch:
        maps = [upsample(s, size, mode) for s in tokens]
        protocol = dice_at(maps, masks, t)["per_case"]
        best = f1max(np.concatenate([m.ravel() for m in maps]), np.concatenate([m.ravel() for m in masks]))
        voxel = dice_at(maps, masks, best[1])["per_case"]
    else:
        protocol = [dice_at([upsample(s, size, mode)], [m], t)["per_case"][0] for s, m in zip(tokens, masks)]
        best, voxel = (None, None), None
    per_case = lambda values: dict(zip(cases, map(float, values))) if values is not None else None
    print(json.dumps({
        "dice_threshold": float(t),
        "dice_per_case": per_case(protocol),
        "token_dice_per_case": per_case(token_dice["per_case"]),
        "voxel_f1_max": best[0],
        "voxel_f1_threshold": best[1],
        "dice_at_voxel_threshold_per_case": per_case(voxel),
        "lesion_voxels": dict(zip(cases, (int(m.sum()) for m in masks))),
        "lesion_tokens": dict(zip(cases, (int(p.sum()) for p in pooled))),
    }))


if __name__ == "__main__":
    main()
