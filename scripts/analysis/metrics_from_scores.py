#!/usr/bin/env python3
"""The §8.3 metrics (as scripts/oracles/ref_pipeline.py computes them, in the cube space) of an `mri-ad score --tokens`
run folder against label cubes written by scripts/oracles/ref_cubes.py: patient AUROC and F1-max, mean Dice at the
token-grid F1-max threshold, Dice over lesion cases, hottest voxel in the lesion, and the mean Dice of the
cases named by --subset.

Usage: metrics_from_scores.py --run RUN --labels LABEL_CUBES [--size 224] [--subset q00,q01,q02,q03]
       [--upsample centres|corners]
"""
import argparse
import glob
import os
import sys

import numpy as np
from sklearn.metrics import roc_auc_score

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "oracles"))
from ref_pipeline import f1_max, upsample  # noqa: E402

P = 14


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True)
    ap.add_argument("--labels", required=True)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--subset", default="q00,q01,q02,q03")
    ap.add_argument("--upsample", choices=["corners", "centres"], default="centres",
                    help="token grid to voxels, as mri-ad's --upsample (default centres, mri-ad's default)")
    a = ap.parse_args()
    s, g = a.size, a.size // P
    names = sorted(os.path.basename(p)[:-4] for p in glob.glob(os.path.join(a.run, "token_scores", "*.npy")))
    scores = {n: np.load(os.path.join(a.run, "token_scores", f"{n}.npy")) for n in names}
    labels = {n: np.load(os.path.join(a.labels, f"{n}.npy")) for n in names}
    lesion = np.array([labels[n].any() for n in names])
    patient = np.array([scores[n].max() for n in names])
    tok_labels = np.concatenate([labels[n].reshape(g, P, g, P, g, P).any(axis=(1, 3, 5)).ravel() for n in names])
    _, t = f1_max(tok_labels, np.concatenate([scores[n] for n in names]))
    dice, hot = {}, {}
    for n in names:
        up = upsample(scores[n].reshape(g, g, g).astype(np.float32), s, a.upsample)
        lab = labels[n]
        pred = up >= t
        denom = pred.sum() + lab.sum()
        dice[n] = 1.0 if denom == 0 else float(2 * (pred & lab).sum() / denom)
        if lab.any():
            hot[n] = bool(lab.ravel()[int(np.argmax(up))])
    subset = [n for n in a.subset.split(",") if n in dice]
    print(f"{a.run}: patient AUROC {roc_auc_score(lesion, patient):.3f}, F1-max {f1_max(lesion, patient)[0]:.3f}, "
          f"mean Dice {np.mean(list(dice.values())):.3f}, Dice lesion cases "
          f"{np.mean([dice[n] for n in names if labels[n].any()]):.3f}, hottest in lesion {np.mean(list(hot.values())):.1f}, "
          f"Dice {','.join(subset)} {np.mean([dice[n] for n in subset]):.3f}")


if __name__ == "__main__":
    main()
