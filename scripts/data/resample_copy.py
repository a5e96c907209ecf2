#!/usr/bin/env python3
"""Writes a copy of a NIfTI volume resampled by SimpleITK (linear, in world space) onto a coarser grid with
another field of view: the voxel size times --factor, the origin moved by --shift-mm along the first voxel
axis, and --cut voxels fewer along the second. The anatomy keeps its world position, so the copy is
"registered" with the original; mri-ad resamples it into a batch's world space.

  resample_copy.py --in h00.nii.gz --out h00_coarse.nii.gz [--factor 1.5] [--shift-mm 7] [--cut 4] [--labels]

Prints the copy's size, spacing and origin.
"""
import argparse

import numpy as np
import SimpleITK as sitk


def coarse_copy(src_path, dst_path, factor=1.5, shift_mm=7.0, cut=4, labels=False):
    """Writes the copy (labels: nearest neighbour, uint8; else linear, float32); returns size, spacing,
    origin."""
    src = sitk.ReadImage(src_path, sitk.sitkUInt8 if labels else sitk.sitkFloat32)
    spacing = [s * factor for s in src.GetSpacing()]
    size = [int(np.floor((n - 1) * s0 / s1)) + 1 for n, s0, s1 in zip(src.GetSize(), src.GetSpacing(), spacing)]
    size[1] -= cut
    origin = np.array(src.GetOrigin()) + np.array(src.GetDirection()).reshape(3, 3) @ [shift_mm, 0.0, 0.0]
    ref = sitk.Image(size, src.GetPixelID())
    ref.SetSpacing(spacing)
    ref.SetOrigin(tuple(origin))
    ref.SetDirection(src.GetDirection())
    r = sitk.ResampleImageFilter()
    r.SetReferenceImage(ref)
    r.SetInterpolator(sitk.sitkNearestNeighbor if labels else sitk.sitkLinear)
    r.SetDefaultPixelValue(0.0)
    sitk.WriteImage(r.Execute(src), dst_path)
    return size, spacing, tuple(origin)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--in", dest="src", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--factor", type=float, default=1.5)
    ap.add_argument("--shift-mm", type=float, default=7.0)
    ap.add_argument("--cut", type=int, default=4)
    ap.add_argument("--labels", action="store_true", help="a label map: nearest neighbour, uint8")
    a = ap.parse_args()
    size, spacing, origin = coarse_copy(a.src, a.out, a.factor, a.shift_mm, a.cut, a.labels)
    print(f"{a.out}: size {size}, spacing {[round(s, 4) for s in spacing]}, origin {[round(o, 3) for o in origin]}")


if __name__ == "__main__":
    main()
