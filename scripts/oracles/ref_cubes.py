#!/usr/bin/env python3
"""Writes the preprocessed cubes of scripts/oracles/ref_pipeline.py (batch union crop box + 2 voxels, centred padding,
zoom to S³, 99th-percentile intensity scaling, background 0) as `<case>.npy` float32 [S, S, S] (z, y, x),
which `mri-ad extract --input DIR` reads as already preprocessed cubes, plus the label cubes
`<labels-out>/<case>.npy` (bool) for scripts/analysis/metrics_from_scores.py. Used to separate the effect of the
intensity standardisation from the rest of the pipeline (docs/experiments/2026-11-30-demo-cohort.md).

Usage: ref_cubes.py --healthy DIR --query DIR --labels DIR --size 224 --out CUBES --labels-out LABELS
"""
import argparse
import glob
import os

import numpy as np

import ref_pipeline as pp


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for a in ("--healthy", "--query", "--labels", "--out", "--labels-out"):
        ap.add_argument(a, required=True)
    ap.add_argument("--size", type=int, default=224)
    a = ap.parse_args()
    files = [(pp.case_id(f), f, None) for f in sorted(glob.glob(os.path.join(a.healthy, "*.nii*")))]
    for f in sorted(glob.glob(os.path.join(a.query, "*.nii*"))):
        c = pp.case_id(f)
        lab = glob.glob(os.path.join(a.labels, c + ".nii*"))
        files.append((c, f, lab[0] if lab else None))
    vols = [pp.canonical(f)[0] for _, f, _ in files]
    if len({v.shape for v in vols}) != 1:
        raise SystemExit("every volume must lie on one grid for the batch crop box")
    lo = np.min([np.argwhere(v > 0).min(0) for v in vols], axis=0)
    hi = np.max([np.argwhere(v > 0).max(0) + 1 for v in vols], axis=0)
    box = [(max(int(l) - 2, 0), min(int(h) + 2, s)) for l, h, s in zip(lo, hi, vols[0].shape)]
    os.makedirs(a.out, exist_ok=True)
    os.makedirs(a.labels_out, exist_ok=True)
    for (c, _, lab), vol in zip(files, vols):
        cube = pp.to_cube(vol, box, a.size, 1)
        mask = pp.to_cube((vol > 0).astype(np.float32), box, a.size, 0) > 0.5
        p99 = np.percentile(cube[mask], 99)
        np.save(os.path.join(a.out, f"{c}.npy"), np.where(mask, np.clip(cube / p99, 0, 1), 0).astype(np.float32))
        label = np.zeros((a.size,) * 3, bool)
        if lab is not None:
            label = pp.to_cube((pp.canonical(lab)[0] > 0).astype(np.float32), box, a.size, 0) > 0.5
        np.save(os.path.join(a.labels_out, f"{c}.npy"), label)
    print(f"{len(files)} cubes written to {a.out}, labels to {a.labels_out}")


if __name__ == "__main__":
    main()
