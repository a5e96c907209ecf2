#!/usr/bin/env python3
"""Independent numpy implementation of Nyúl–Udupa standardisation (ALGORITHM.md §3.2 step 1), to check mri-ad.

  ref_nyul.py DIR    DIR holds cube_<n>.npy (f32 S³ cubes), mask_<n>.npy (bool), std_<n>.npy (mri-ad's
                     standardised cubes) and model.json (mri-ad's standard landmarks). Fits the standard
                     landmarks on all cubes with numpy, standardises every cube, and compares both with
                     mri-ad's. Prints the maximum absolute differences; exits 1 above 1e-4.

Convention (TorchIO's): landmarks at percentiles 1,10,20,25,30,40,50,60,70,75,80,90,99 (numpy 'linear')
inside the mask; training maps each volume's landmarks linearly so that the 1st -> 0 and the 99th -> 100
and averages them; applying is piecewise linear from the volume's own landmarks to the standard ones,
extrapolated along the end segments; a landmark equal to its predecessor is dropped.
"""
import glob
import json
import os
import sys

import numpy as np

PCT = np.array([1, 10, 20, 25, 30, 40, 50, 60, 70, 75, 80, 90, 99], dtype=np.float64)


def landmarks(cube, mask):
    return np.percentile(cube[mask].astype(np.float64), PCT)


def fit(all_landmarks):
    mapped = [(l - l[0]) / (l[-1] - l[0]) * 100.0 for l in all_landmarks]
    return np.mean(mapped, axis=0)


def apply(cube, own, standard):
    keep = [0]
    for i in range(1, len(own)):
        if own[i] > own[keep[-1]]:
            keep.append(i)
    xp, fp = own[keep], standard[keep]
    v = cube.astype(np.float64)
    # Segment index: 0 below the second landmark, last segment above the second-to-last one.
    seg = np.clip(np.searchsorted(xp, v, side="right") - 1, 0, len(xp) - 2)
    x0, x1, f0, f1 = xp[seg], xp[seg + 1], fp[seg], fp[seg + 1]
    return f0 + (v - x0) * (f1 - f0) / (x1 - x0)


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    d = sys.argv[1]
    ids = sorted(int(os.path.basename(p)[5:-4]) for p in glob.glob(os.path.join(d, "cube_*.npy")))
    cubes = [np.load(os.path.join(d, f"cube_{i}.npy")) for i in ids]
    masks = [np.load(os.path.join(d, f"mask_{i}.npy")).astype(bool) for i in ids]
    lms = [landmarks(c, m) for c, m in zip(cubes, masks)]
    standard = fit(lms)
    ours = np.array(json.load(open(os.path.join(d, "model.json")))["standard"], dtype=np.float64)
    err_model = float(np.max(np.abs(ours - standard)))
    err_vol = 0.0
    for i, c, l in zip(ids, cubes, lms):
        ref = apply(c, l, standard)
        got = np.load(os.path.join(d, f"std_{i}.npy")).astype(np.float64)
        e = float(np.max(np.abs(got - ref)))
        err_vol = max(err_vol, e)
        print(f"volume {i}: shape {c.shape}, {int(masks[ids.index(i)].sum())} mask voxels, "
              f"max |ours - numpy| = {e:.2e}")
    print(f"SUMMARY volumes={len(ids)} max_err_landmarks={err_model:.2e} max_err_voxels={err_vol:.2e}")
    return 0 if err_model <= 1e-4 and err_vol <= 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
