#!/usr/bin/env python3
"""Copies a cohort (healthy/, query/, labels/ folders of NIfTI files) with every other volume stored in
another orientation on the same world grid (nibabel's as_reoriented: the voxels permuted and flipped, the
affine adjusted, so every voxel keeps its world position). A query case's label map is reoriented with its
image, so that it stays on the image's grid. Files that are not reoriented are copied byte for byte.

  mix_orientations.py --src demo/cohort --out demo/cohort_lps [--code LPS] [--every 2]

Prints one line per file: its name and its storage orientation in the copy.
"""
import argparse
import glob
import os
import shutil

import nibabel as nib
import numpy as np


def reorient(src, dst, code):
    img = nib.load(src)
    ornt = nib.orientations.ornt_transform(
        nib.orientations.io_orientation(img.affine), nib.orientations.axcodes2ornt(tuple(code)))
    copy = img.as_reoriented(ornt)
    data = np.asarray(copy.dataobj)
    out = nib.Nifti1Image(data, copy.affine)
    out.set_data_dtype(img.get_data_dtype())
    nib.save(out, dst)
    return "".join(nib.aff2axcodes(copy.affine))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--code", default="LPS")
    ap.add_argument("--every", type=int, default=2)
    a = ap.parse_args()
    for sub in ("healthy", "query"):
        os.makedirs(os.path.join(a.out, sub), exist_ok=True)
        if sub == "query":
            os.makedirs(os.path.join(a.out, "labels"), exist_ok=True)
        for i, f in enumerate(sorted(glob.glob(os.path.join(a.src, sub, "*.nii*")))):
            name = os.path.basename(f)
            pairs = [(f, os.path.join(a.out, sub, name))]
            label = os.path.join(a.src, "labels", name)
            if sub == "query" and os.path.exists(label):
                pairs.append((label, os.path.join(a.out, "labels", name)))
            for src, dst in pairs:
                if i % a.every == 0:
                    code = reorient(src, dst, a.code)
                else:
                    shutil.copyfile(src, dst)
                    code = "".join(nib.aff2axcodes(nib.load(dst).affine))
                print(f"{os.path.relpath(dst, a.out)}: {code}")
    truth = os.path.join(a.src, "truth.json")
    if os.path.exists(truth):
        shutil.copyfile(truth, os.path.join(a.out, "truth.json"))


if __name__ == "__main__":
    main()
