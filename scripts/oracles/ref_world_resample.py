#!/usr/bin/env python3
"""Independent check of mri-ad's world-space resampling into the batch cube (numpy + scipy + nibabel).

  ref_world_resample.py CASES.json

CASES.json is a list of {"image": NIfTI path, "cube": .npy path (mri-ad's S^3 cube, [z][y][x], before
standardisation), "cube_affine": mri-ad's cube voxel (x, y, z) -> world matrix, "frame_affine": the batch
frame (reference canonical grid) voxel -> world, "crop_lo", "crop_hi": the crop box in frame voxels,
"size": S}; a case with "nearest": true holds mri-ad's label cube (labels > 0, nearest voxel) instead. For each
case this script, on its own:
  1. derives the cube's world grid from the frame affine, the crop box and S by the documented rule
     (isotropic, the crop's longest side voxel centre to voxel centre over S - 1 steps, centred on the crop,
     axes along the frame's) and compares it with mri-ad's cube_affine;
  2. maps every cube voxel centre to world mm and then to the image's own voxel indices (nibabel's affine,
     its storage order: no reorientation), and samples the image there with scipy's map_coordinates
     (order 1); points outside the crop box (frame coordinates, 1e-6 voxel tolerance) or outside the
     image's field of view (its first to last voxel centre, same tolerance) are 0; with "nearest", it takes
     the nearest voxel instead (floor(v + 0.5 + 1e-9): halves round up) of label > 0, 0 more than half a
     voxel outside the field of view;
  3. compares with mri-ad's cube: max |difference| relative to the image's maximum must stay within f32
     precision (2e-6); label cubes must be equal voxel for voxel.
Prints one line per case and a SUMMARY line with failed=N; exits 1 on any failure.
"""
import json
import sys

import nibabel as nib
import numpy as np
from scipy.ndimage import map_coordinates

EPS = 1e-6
REL_TOL = 2e-6


def cube_affine(frame, lo, hi, size):
    spacing = np.linalg.norm(frame[:3, :3], axis=0)
    extent = np.asarray(hi) - np.asarray(lo)
    longest = max(np.max((np.maximum(extent, 1) - 1) * spacing), spacing.min())
    voxel = longest / (max(size, 2) - 1)
    centre = (np.asarray(lo) + np.asarray(hi) - 1) / 2.0
    step = voxel / spacing
    half = (size - 1) / 2.0
    placement = np.eye(4)
    placement[:3, :3] = np.diag(step)
    placement[:3, 3] = centre - half * step
    return frame @ placement


def resample(case):
    img = nib.load(case["image"])
    data = np.asarray(img.dataobj, dtype=np.float64)
    size = case["size"]
    mine = cube_affine(np.array(case["frame_affine"]), case["crop_lo"], case["crop_hi"], size)
    grid = np.stack(np.meshgrid(*[np.arange(size, dtype=np.float64)] * 3, indexing="ij"), -1)  # (x, y, z)
    world = grid @ mine[:3, :3].T + mine[:3, 3]
    frame_inv = np.linalg.inv(np.array(case["frame_affine"]))
    p = world @ frame_inv[:3, :3].T + frame_inv[:3, 3]
    lo, hi = np.asarray(case["crop_lo"], float), np.asarray(case["crop_hi"], float) - 1
    in_box = np.all((p >= lo - EPS) & (p <= hi + EPS), axis=-1)
    own_inv = np.linalg.inv(img.affine)
    v = world @ own_inv[:3, :3].T + own_inv[:3, 3]  # the image's own (i, j, k)
    last = np.array(data.shape, float) - 1
    if case.get("nearest"):
        idx = np.floor(v + 0.5 + 1e-9).astype(np.int64)
        in_view = np.all((idx >= 0) & (idx <= last), axis=-1)
        idx = np.clip(idx, 0, last.astype(np.int64))
        values = (data[idx[..., 0], idx[..., 1], idx[..., 2]] > 0) * (in_box & in_view)
        return mine, np.transpose(values, (2, 1, 0)).astype(np.float64), 1.0
    in_view = np.all((v >= -EPS) & (v <= last + EPS), axis=-1)
    v = np.clip(v, 0, last)
    values = map_coordinates(data, [v[..., a].ravel() for a in range(3)], order=1, mode="nearest")
    values = values.reshape(v.shape[:3]) * (in_box & in_view)
    # grid is indexed [x][y][z]; mri-ad's cube is [z][y][x].
    return mine, np.transpose(values, (2, 1, 0)), float(np.abs(data).max())


def main():
    cases = json.load(open(sys.argv[1]))
    failed = 0
    for case in cases:
        mine, ref, scale = resample(case)
        cube = np.load(case["cube"]).astype(np.float64)
        affine_diff = float(np.abs(mine - np.array(case["cube_affine"])).max())
        diff = float(np.abs(cube - ref).max()) / scale
        tol = 0.0 if case.get("nearest") else REL_TOL
        ok = affine_diff < 1e-9 and diff <= tol and ref.shape == cube.shape and (ref > 0).sum() > 0
        failed += not ok
        print(f"{case['image']}{' (labels)' if case.get('nearest') else ''}: cube affine max diff {affine_diff:.2e}, voxels max rel diff {diff:.2e}, "
              f"non-zero {(ref > 0).sum()} vs {(cube > 0).sum()} -> {'ok' if ok else 'FAIL'}")
    print(f"SUMMARY cases={len(cases)} failed={failed}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
