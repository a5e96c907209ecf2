#!/usr/bin/env python3
"""Geometry checks for maps written by mri-ad (independent of our reader: nibabel writes, SimpleITK reads).

  ref_geometry.py make DIR     write test volumes with nibabel: every axis flip/permutation class (RAS, LPS,
                                 LIA, PSR), oblique affines (sform; qform only with qfac -1), anisotropic voxels,
                                 non-cubic shapes; each holds an ellipsoidal "brain" and a bright blob at a known
                                 world position (RAS mm), listed in DIR/truth.json
  ref_geometry.py verify DIR   for every DIR/<case>.nii.gz, with DIR/out/<case>_anomaly.nii.gz (float32: the
                                 blob as found in mri-ad's S³ cube, mapped back), DIR/out/<case>_mask.nii.gz
                                 (uint8: a hot cube placed in S³, mapped back) and DIR/out/<case>.json (the hot
                                 cube's world position through mri-ad's cube affine):
                                 (a) SimpleITK opens both with the input's size, spacing, origin, direction
                                     (1e-4); nibabel sees the input's qform/sform and their codes;
                                 (b) the world centres (SimpleITK, LPS -> RAS) of the blob map and of the hot
                                     cube lie within one input voxel of the blob's true position and of the
                                     hot cube's S³ position.
                                 Prints one line per case and a SUMMARY; exits 1 on any failure.
"""
import json
import os
import sys

import numpy as np
import nibabel as nib
import SimpleITK as sitk


def rot(ax, deg):
    a = np.deg2rad(deg)
    c, s = np.cos(a), np.sin(a)
    m = np.eye(3)
    i, j = [(1, 2), (0, 2), (0, 1)][ax]
    m[i, i], m[i, j], m[j, i], m[j, j] = c, -s, s, c
    return m


def axes(code):
    r = np.zeros((3, 3))
    for v, ch in enumerate(code):
        w, sg = {"R": (0, 1), "L": (0, -1), "A": (1, 1), "P": (1, -1), "S": (2, 1), "I": (2, -1)}[ch]
        r[w, v] = sg
    return r


# name: (rotation/permutation, zooms, shape, dtype, how the affine is stored)
CASES = {
    "ras_iso": (axes("RAS"), (1.6, 1.6, 1.6), (30, 34, 26), np.float32, "both"),
    "lps_aniso": (axes("LPS"), (1.2, 1.4, 2.5), (36, 30, 20), np.int16, "both"),
    "lia_aniso": (axes("LIA"), (1.3, 2.8, 1.5), (34, 16, 28), np.float32, "sform"),
    "psr_aniso": (axes("PSR"), (2.0, 1.4, 1.5), (24, 30, 36), np.uint8, "both"),
    "oblique_sform": (rot(2, 25) @ rot(0, 15) @ axes("RAS"), (1.4, 1.6, 2.2), (34, 30, 22), np.float32, "sform"),
    "oblique_qform_lh": (rot(1, -20) @ rot(2, 10) @ axes("LAS"), (1.5, 1.5, 2.0), (30, 32, 24), np.float32,
                         "qform"),
}
BRAIN_CENTRE = np.array([4.0, -12.0, 18.0])
BRAIN_RADII = np.array([20.0, 24.0, 17.0])
BLOB = np.array([11.0, -3.0, 24.0])
BLOB_RADIUS = 4.5


def make(out):
    os.makedirs(out, exist_ok=True)
    truth = {}
    for name, (r, zooms, shape, dtype, store) in CASES.items():
        a = np.eye(4)
        a[:3, :3] = r @ np.diag(zooms)
        a[:3, 3] = BRAIN_CENTRE - a[:3, :3] @ ((np.array(shape) - 1) / 2.0)
        ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1).reshape(-1, 3)
        xyz = ijk @ a[:3, :3].T + a[:3, 3]
        inside = (((xyz - BRAIN_CENTRE) / BRAIN_RADII) ** 2).sum(1) <= 1.0
        blob = np.linalg.norm(xyz - BLOB, axis=1) <= BLOB_RADIUS
        data = np.where(inside, 80.0 + 10.0 * np.sin(xyz[:, 0] / 5.0), 0.0)
        data = np.where(blob, 220.0, data).reshape(shape)
        # Built with the affine so that pixdim holds the zooms, as scanners' converters write them.
        img = nib.Nifti1Image(data.astype(dtype), a)
        img.header.set_data_dtype(dtype)
        if store in ("both", "sform"):
            img.set_sform(a, code=2)
        if store in ("both", "qform"):
            img.set_qform(a, code=1)
        if store == "sform":
            img.set_qform(None, code=0)
        if store == "qform":
            img.set_sform(None, code=0)
        # The blob's world centre as sampled on this grid (centroid of its voxels).
        truth[name] = {
            "blob_world_ras": xyz[blob].mean(0).tolist(),
            "voxel_mm": max(zooms),
            "shape": list(shape),
            "orientation": "".join(nib.aff2axcodes(a)),
        }
        nib.save(img, os.path.join(out, f"{name}.nii.gz"))
    json.dump(truth, open(os.path.join(out, "truth.json"), "w"), indent=1)
    print(f"wrote {len(CASES)} volumes to {out}")


def lps_to_ras(p):
    return np.array([-p[0], -p[1], p[2]])


def world_centre(img):
    """Weighted centre (world RAS mm) of the positive voxels of a SimpleITK image, or None."""
    arr = sitk.GetArrayFromImage(img).astype(np.float64)  # [k, j, i]
    w = np.clip(arr, 0, None)
    if w.sum() <= 0:
        return None
    kji = np.stack(np.nonzero(w), axis=1).astype(np.float64)
    cidx = (kji * w[w > 0][:, None]).sum(0) / w.sum()
    return lps_to_ras(img.TransformContinuousIndexToPhysicalPoint(cidx[::-1].tolist()))


def verify(d):
    truth = json.load(open(os.path.join(d, "truth.json")))
    failures = 0
    worst_geo = worst_blob = worst_affine = 0.0
    for name, t in truth.items():
        src = os.path.join(d, f"{name}.nii.gz")
        rep = json.load(open(os.path.join(d, "out", f"{name}.json")))
        ri, ni = sitk.ReadImage(src), nib.load(src)
        problems = []
        centres = {}
        for kind, dtype in (("anomaly", np.float32), ("mask", np.uint8)):
            out = os.path.join(d, "out", f"{name}_{kind}.nii.gz")
            ro, no = sitk.ReadImage(out), nib.load(out)
            if ri.GetSize() != ro.GetSize():
                problems.append(f"{kind}: size {ro.GetSize()} vs {ri.GetSize()}")
            geo = max(
                np.max(np.abs(np.subtract(ri.GetSpacing(), ro.GetSpacing()))),
                np.max(np.abs(np.subtract(ri.GetOrigin(), ro.GetOrigin()))),
                np.max(np.abs(np.subtract(ri.GetDirection(), ro.GetDirection()))),
            )
            worst_geo = max(worst_geo, geo)
            if geo > 1e-4:
                problems.append(f"{kind}: spacing/origin/direction differ by {geo:.2e}")
            for what in ("qform", "sform"):
                ai, ci = getattr(ni.header, f"get_{what}")(coded=True)
                ao, co = getattr(no.header, f"get_{what}")(coded=True)
                if ci != co or (ai is not None and not np.allclose(ai, ao, atol=1e-5)):
                    problems.append(f"{kind}: {what} or its code differs ({ci} vs {co})")
            if no.get_data_dtype() != dtype:
                problems.append(f"{kind}: dtype {no.get_data_dtype()}, expected {np.dtype(dtype)}")
            if kind == "anomaly":
                # The map is 0 outside the brain (the input's voxels > 0), read through SimpleITK.
                outside = sitk.GetArrayFromImage(ri) <= 0
                stray = int(np.count_nonzero(sitk.GetArrayFromImage(ro)[outside]))
                if stray:
                    problems.append(f"anomaly: {stray} non-zero voxels outside the brain")
            centres[kind] = world_centre(ro)
            if centres[kind] is None:
                problems.append(f"{kind}: no hot voxel")
                centres[kind] = np.full(3, np.nan)
        # The anomaly map holds the blob as found in the S³ cube; the mask holds a hot cube placed in S³.
        err_blob = float(np.linalg.norm(centres["anomaly"] - np.array(t["blob_world_ras"])))
        err_aff = float(np.linalg.norm(centres["mask"] - np.array(rep["hot_world_ras"])))
        worst_blob, worst_affine = max(worst_blob, err_blob), max(worst_affine, err_aff)
        if not err_blob <= t["voxel_mm"]:
            problems.append(f"blob lands {err_blob:.2f} mm from its true position (one voxel = {t['voxel_mm']} mm)")
        if not err_aff <= t["voxel_mm"]:
            problems.append(f"hot cube lands {err_aff:.2f} mm from its S³ position (one voxel = {t['voxel_mm']} mm)")
        status = "ok  " if not problems else "FAIL"
        failures += bool(problems)
        print(f"{status} {name} ({t['orientation']}, shape {t['shape']}): blob lands {err_blob:.2f} mm from the truth, "
              f"hot cube {err_aff:.2f} mm from its S³ position" + ("; " + "; ".join(problems) if problems else ""))
    print(f"SUMMARY cases={len(truth)} failed={failures} max_geometry_diff={worst_geo:.2e} "
          f"max_blob_error_mm={worst_blob:.2f} max_hot_cube_error_mm={worst_affine:.2f}")
    return 1 if failures else 0


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "make":
        make(sys.argv[2])
        return 0
    if len(sys.argv) == 3 and sys.argv[1] == "verify":
        return verify(sys.argv[2])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
