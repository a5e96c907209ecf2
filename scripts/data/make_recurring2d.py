#!/usr/bin/env python3
"""Writes a 2D set with a recurring defect (like the thesis's MVTec-SynCA) from the demo cohort, for
acceptance 3 of issue 6: CoDeGraph should find the images that share the defect as an outlier community.

* Normal images: axial slices of every healthy volume at the given levels (default 86 and 92, around the
  level where the donor lesion is largest), scaled by the volume's 99.5th percentile of brain voxels, in
  radiological display (anterior up), zero-padded to a square, 8-bit grey PNG (as scripts/data/make_slices2d.py).
* The defect: ONE real lesion of the demo cohort (default query case q04: the lesion pixels of its largest
  axial lesion slice, with their intensities), pasted into round(fraction · N) normal images chosen at
  random (seeded), at the donor's own position shifted by up to --shift pixels, with a lighting change:
  intensity · gain + offset, gain in [0.9, 1.1], offset in [-0.03, 0.03]. Only the lesion's own pixels are
  replaced; the mask is exactly those pixels.

Layout written: <out>/images/<case>.png, <out>/masks/<case>.png (defective images only, 255 = defect),
<out>/truth.json ({"recurring": [...], "normal": [...], "donor": ..., per-image shift and lighting}).

Usage: make_recurring2d.py --cohort demo/cohort --out demo/recurring2d [--levels 86,92] [--fraction 0.15]
       [--donor q04] [--shift 3] [--seed 0]
"""
import argparse
import json
import os

import nibabel as nib
import numpy as np
from PIL import Image

from make_slices2d import display, scaled, to_square


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cohort", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--levels", default="86,92")
    ap.add_argument("--fraction", type=float, default=0.15)
    ap.add_argument("--donor", default="q04")
    ap.add_argument("--shift", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    levels = [int(v) for v in args.levels.split(",")]
    img_dir, mask_dir = os.path.join(args.out, "images"), os.path.join(args.out, "masks")
    os.makedirs(img_dir, exist_ok=True)
    os.makedirs(mask_dir, exist_ok=True)

    # The donor lesion (display coordinates of the squared slice).
    vol = scaled(nib.load(os.path.join(args.cohort, "query", f"{args.donor}.nii.gz")).get_fdata(dtype=np.float32))
    lab = nib.load(os.path.join(args.cohort, "labels", f"{args.donor}.nii.gz")).get_fdata(dtype=np.float32) > 0
    z = int(lab.sum(axis=(0, 1)).argmax())
    donor_img = to_square(display(vol[:, :, z]))
    donor_mask = to_square(display(lab[:, :, z]))

    normals = []
    for f in sorted(os.listdir(os.path.join(args.cohort, "healthy"))):
        if not f.endswith(".nii.gz"):
            continue
        v = scaled(nib.load(os.path.join(args.cohort, "healthy", f)).get_fdata(dtype=np.float32))
        for lv in levels:
            normals.append((f"{f[:-7]}_z{lv}", to_square(display(v[:, :, lv]))))
    n = len(normals)
    n_defect = max(2, int(round(args.fraction * n)))
    chosen = set(rng.choice(n, size=n_defect, replace=False).tolist())
    truth = {"donor": {"case": args.donor, "level": z, "pixels": int(donor_mask.sum())}, "recurring": [],
             "normal": [], "paste": {}}
    for i, (case, img) in enumerate(normals):
        if i in chosen:
            dy, dx = (int(v) for v in rng.integers(-args.shift, args.shift + 1, size=2))
            gain, offset = float(rng.uniform(0.9, 1.1)), float(rng.uniform(-0.03, 0.03))
            mask = np.roll(donor_mask, (dy, dx), axis=(0, 1))
            src = np.roll(donor_img, (dy, dx), axis=(0, 1))
            img = np.where(mask, np.clip(src * gain + offset, 0, 1), img)
            Image.fromarray(mask.astype(np.uint8) * 255).save(os.path.join(mask_dir, f"{case}.png"))
            truth["recurring"].append(case)
            truth["paste"][case] = {"shift": [dy, dx], "gain": gain, "offset": offset}
        else:
            truth["normal"].append(case)
        Image.fromarray(np.round(img * 255).astype(np.uint8)).save(os.path.join(img_dir, f"{case}.png"))
    with open(os.path.join(args.out, "truth.json"), "w") as fh:
        json.dump(truth, fh, indent=1)
    print(f"{n} images, {n_defect} with the recurring defect ({args.donor}, {int(donor_mask.sum())} px) -> {args.out}")


if __name__ == "__main__":
    main()
