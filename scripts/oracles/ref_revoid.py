#!/usr/bin/env python3
"""Recompute the void flags of an `mri-ad extract` token folder with another brain-mask rule, everything else
kept (an experiment of docs/experiments/2026-11-30-demo-cohort.md, "The brain-mask rule and the mean-Dice gap").

mri-ad decides void tokens from Ω = 1[V > 0] on the *resized* cube (ALGORITHM.md §3.2 step 0): trilinear
interpolation widens the brain by up to one input voxel. `scripts/oracles/ref_pipeline.py` resizes the native mask
V > 0 by nearest voxel instead. This script rebuilds, for every token file, both masks in mri-ad's own cube
geometry (read from the sidecar: the batch crop box; the isotropic cube of src/volume/resize.rs, align-corners
along the longest side, centred; trilinear with everything outside the box read as 0; nearest voxel rounding
half up), checks that the interpolated rule reproduces the file's `valid` flags exactly (else it stops: the
geometry is not mri-ad's), and writes a copy of the folder whose `valid` (and sidecar `n_valid`) come from the
nearest-voxel rule. Tokens are copied unchanged, so only the void rule differs (a re-extraction with such masks
would also zero the rim voxels of the backbone input). The sidecars keep their cache keys, so putting the copy
in a run folder's `tokens/` and running `mri-ad score` with the run's arguments rescores it.

Only token folders of NIfTI inputs made with `--crop batch` are handled. Peak memory about 1 GB per volume at
224³.

Usage: ref_revoid.py --tokens RUN/tokens --out NEW/tokens [--root DIR]
"""
import argparse
import glob
import json
import os
import shutil
import sys

import nibabel as nib
import numpy as np
from scipy.ndimage import map_coordinates

P = 14


def canonical(path):
    """RAS+ array [z][y][x] and the canonical voxel spacing (x, y, z): the column norms of the affine, as mri-ad."""
    img = nib.as_closest_canonical(nib.load(path))
    spacing = np.linalg.norm(np.asarray(img.affine, float)[:3, :3], axis=0)
    return np.asarray(img.dataobj, dtype=np.float64).transpose(2, 1, 0), spacing


def cube_coords(lo, hi, spacing, size):
    """Canonical coordinate (per axis x, y, z) of every cube voxel index 0..size-1 (src/volume/resize.rs)."""
    ext = np.maximum(hi - lo, 1)
    longest = max(float(((ext - 1) * spacing).max()), float(spacing.min()))
    voxel_mm = longest / (max(size, 2) - 1)
    centre = (lo + hi - 1) / 2
    n = np.arange(size) - (size - 1) / 2
    return [centre[a] + n * voxel_mm / spacing[a] for a in range(3)]


def cube_points(coords):
    """The canonical coordinates (z, y, x) of every cube voxel, each [S, S, S]."""
    z, y, x = np.meshgrid(coords[2], coords[1], coords[0], indexing="ij")
    return z, y, x


def interpolated_mask(vol, lo, hi, coords):
    """V > 0 after trilinear resizing to the cube (everything outside the box read as 0), [z][y][x]."""
    pts = cube_points(coords)
    lo_zyx, hi_zyx = lo[::-1], hi[::-1]
    sub = vol[lo_zyx[0]:hi_zyx[0], lo_zyx[1]:hi_zyx[1], lo_zyx[2]:hi_zyx[2]]
    eps = 1e-6
    inside = np.ones(pts[0].shape, bool)
    for p, l, h in zip(pts, lo_zyx, hi_zyx):
        inside &= (p >= l - eps) & (p <= h - 1 + eps)
    local = np.stack([np.clip(p - l, 0, h - l - 1) for p, l, h in zip(pts, lo_zyx, hi_zyx)])
    return (map_coordinates(sub, local, order=1, mode="nearest") * inside) > 0


def nearest_mask(vol, lo, hi, coords):
    """Native V > 0 resized to the cube by nearest voxel (rounding half up; outside the box: 0), [z][y][x]."""
    lo_zyx, hi_zyx = lo[::-1], hi[::-1]
    sub = vol[lo_zyx[0]:hi_zyx[0], lo_zyx[1]:hi_zyx[1], lo_zyx[2]:hi_zyx[2]]
    rounded = [np.floor(p + 1e-9 + 0.5) for p in cube_points(coords)]
    inside = np.ones(rounded[0].shape, bool)
    for r, l, h in zip(rounded, lo_zyx, hi_zyx):
        inside &= (r >= l) & (r <= h - 1)
    idx = tuple(np.clip(r - l, 0, h - l - 1).astype(int) for r, l, h in zip(rounded, lo_zyx, hi_zyx))
    return (sub[idx] > 0) & inside


def valid_flags(mask, threshold):
    g = mask.shape[0] // P
    brain = mask.reshape(g, P, g, P, g, P).mean(axis=(1, 3, 5)).ravel()
    return (1 - brain) <= threshold


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", required=True, help="token folder written by mri-ad (npz + json sidecars)")
    ap.add_argument("--out", required=True, help="new folder (must not exist)")
    ap.add_argument("--root", default=".", help="folder the sidecars' input_file paths are relative to")
    a = ap.parse_args()
    files = sorted(glob.glob(os.path.join(a.tokens, "*.tokens.npz")))
    if not files:
        raise SystemExit(f"{a.tokens}: no *.tokens.npz files")
    if os.path.exists(a.out):
        raise SystemExit(f"{a.out}: exists; give a new folder")
    tmp = a.out + ".tmp"
    if os.path.exists(tmp):
        shutil.rmtree(tmp)
    os.makedirs(tmp)
    try:
        totals = revoid(files, tmp, a.root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    os.replace(tmp, a.out)
    print(f"{len(files)} files: {totals[0]} valid tokens -> {totals[1]}; wrote {a.out}")


def revoid(files, out, root):
    total_before = total_after = 0
    for npz in files:
        side_path = npz[: -len(".npz")] + ".json"
        side = json.load(open(side_path))
        pre = side.get("preprocessing", {})
        if pre.get("crop") != "batch" or "batch_box" not in pre or pre.get("source") != "nifti":
            raise SystemExit(f"{side_path}: only NIfTI inputs with --crop batch are handled")
        vol, spacing = canonical(os.path.join(root, side["input_file"]))
        lo, hi = np.array(pre["batch_box"]["lo"]), np.array(pre["batch_box"]["hi"])
        coords = cube_coords(lo, hi, spacing, int(side["size"]))
        interpolated, nearest = interpolated_mask(vol, lo, hi, coords), nearest_mask(vol, lo, hi, coords)
        data = np.load(npz)
        threshold = float(side["void_threshold"])
        before = valid_flags(interpolated, threshold)
        if (before != data["valid"]).any():
            raise SystemExit(f"{npz}: the interpolated-mask rule gives {int((before != data['valid']).sum())} "
                             "flags other than the file's; this geometry is not the one mri-ad used")
        after = valid_flags(nearest, threshold)
        base = os.path.basename(npz)
        np.savez(os.path.join(out, base), tokens=data["tokens"], valid=after, grid=data["grid"])
        side["n_valid"] = int(after.sum())
        with open(os.path.join(out, base[: -len(".npz")] + ".json"), "w") as fh:
            json.dump(side, fh, indent=2)
        total_before += int(before.sum())
        total_after += int(after.sum())
        print(f"{side['case']}: {int(before.sum())} valid tokens -> {int(after.sum())}", flush=True)
    return total_before, total_after


if __name__ == "__main__":
    sys.exit(main())
