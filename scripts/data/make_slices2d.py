#!/usr/bin/env python3
"""Writes a 2D image set from the demo cohort (scripts/data/make_demo_cohort.py) for `mri-ad score2d`, as the
thesis does with BraTS slices: one axial slice per volume.

* Query (lesion) volumes: the axial slice with the largest lesion area, and its label slice as the mask.
* Healthy volumes: a comparable axial slice: the slice levels of the query images are handed out in turn
  (sorted, cycled), so normal and anomalous images come from the same range of levels and the level alone
  does not separate them.

Each slice is scaled by its volume's 99.5th percentile of brain voxels (clipped to [0, 1]), so the lesion
does not change the scaling, rotated to radiological display (anterior up), zero-padded to a square and
saved as 8-bit grey PNG. Masks (255 = lesion) go to <out>/masks/<case>.png with the image's size; healthy
images have no mask (mri-ad treats them as normal).

Layout written: <out>/images/<case>.png, <out>/masks/<case>.png, <out>/slices.json (levels, lesion areas).

Usage: make_slices2d.py --cohort demo/cohort --out demo/slices2d
"""
import argparse
import json
import os

import nibabel as nib
import numpy as np
from PIL import Image


def to_square(a):
    h, w = a.shape
    n = max(h, w)
    out = np.zeros((n, n), a.dtype)
    y0, x0 = (n - h) // 2, (n - w) // 2
    out[y0:y0 + h, x0:x0 + w] = a
    return out


def display(slice_xy):
    # array [x, y] (RAS voxel axes) -> image rows = y from anterior (top) to posterior, columns = x
    return np.flipud(slice_xy.T)


def scaled(vol):
    brain = vol[vol > 0]
    hi = np.percentile(brain, 99.5) if brain.size else 1.0
    return np.clip(vol / hi, 0.0, 1.0)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cohort", required=True, help="folder with healthy/, query/, labels/")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    img_dir = os.path.join(args.out, "images")
    mask_dir = os.path.join(args.out, "masks")
    os.makedirs(img_dir, exist_ok=True)
    os.makedirs(mask_dir, exist_ok=True)
    info = {}
    levels = []
    query = sorted(f for f in os.listdir(os.path.join(args.cohort, "query")) if f.endswith(".nii.gz"))
    for f in query:
        case = f[: -len(".nii.gz")]
        vol = scaled(nib.load(os.path.join(args.cohort, "query", f)).get_fdata(dtype=np.float32))
        lab = nib.load(os.path.join(args.cohort, "labels", f)).get_fdata(dtype=np.float32) > 0
        area = lab.sum(axis=(0, 1))
        z = int(area.argmax())
        levels.append(z)
        img = to_square(display(vol[:, :, z]))
        mask = to_square(display(lab[:, :, z]))
        Image.fromarray(np.round(img * 255).astype(np.uint8)).save(os.path.join(img_dir, f"{case}.png"))
        Image.fromarray(mask.astype(np.uint8) * 255).save(os.path.join(mask_dir, f"{case}.png"))
        info[case] = {"level": z, "lesion_pixels": int(area[z]), "group": "query"}
    levels.sort()
    healthy = sorted(f for f in os.listdir(os.path.join(args.cohort, "healthy")) if f.endswith(".nii.gz"))
    for i, f in enumerate(healthy):
        case = f[: -len(".nii.gz")]
        vol = scaled(nib.load(os.path.join(args.cohort, "healthy", f)).get_fdata(dtype=np.float32))
        z = levels[i % len(levels)]
        img = to_square(display(vol[:, :, z]))
        Image.fromarray(np.round(img * 255).astype(np.uint8)).save(os.path.join(img_dir, f"{case}.png"))
        info[case] = {"level": z, "lesion_pixels": 0, "group": "healthy"}
    with open(os.path.join(args.out, "slices.json"), "w") as fh:
        json.dump(info, fh, indent=1)
    print(f"{len(query)} lesion slices, {len(healthy)} healthy slices -> {args.out}")


if __name__ == "__main__":
    main()
