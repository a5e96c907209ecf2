#!/usr/bin/env python3
"""Writes a small cohort registered to one atlas (MNI152 2009, from the nilearn wheel; no download) and the
variants of its first subject that the world-space tests and measurements need. Real brain sizes in mm, at a
coarse voxel size so that tests stay fast.

  make_world_cohort.py --out DIR [--healthy 5] [--query 3] [--spacing 3.0] [--seed 7]

DIR/healthy/h<i>.nii.gz, DIR/query/q<i>.nii.gz, DIR/labels/q<i>.nii.gz: skull-stripped T2-like subjects
(background exactly 0), each the template anatomy scaled by +-3 % per axis and shifted by up to 2 mm (the
residual differences of affinely registered brains), with tissue contrast +-8 %, noise 2 %; query subjects
carry an ellipsoidal lesion (label 1). Every file is stored RAS on the same world grid.

DIR/variants/ (copies of h0, made with nibabel and SimpleITK, independent of mri-ad):
  h0_lps, h0_lia, h0_psr   the same voxels on the same world grid, stored in other orientations (nibabel
                           as_reoriented)
  h0_coarse                resampled by SimpleITK (linear) to 1.5 times the voxel size, on a field of view
                           shifted by 7 mm and cut 4 voxels short along y
  q0_coarse, q0_coarse_label  q0 and its label map likewise (the label map by nearest neighbour)
  h0_tilted                the same voxels with the affine rotated by 3 degrees about z (an oblique grid of
                           the same space, within the tolerance)
  h0_rotated               the same voxels with the affine rotated by 20 degrees about z and shifted by 30 mm
                           along x (a scan that is not registered)
  h0_moved                 the anatomy rotated by 20 degrees and shifted by 30 mm (SimpleITK), on h0's grid
                           extended by 40 mm on every side so that the moved brain stays in the field of view
DIR/raw/healthy, DIR/raw/query, DIR/raw/masks: every subject "as scanned": the same brain voxels, a skull
shell and scalp around them and a noisy background (> 0 everywhere) outside, with the brain masks
(<case>_mask.nii.gz, 1 inside). Zeroing each raw volume outside its mask gives the skull-stripped subject.
DIR/truth.json lists the files and the parameters.
"""
import argparse
import json
import os

import nibabel as nib
import numpy as np
import SimpleITK as sitk
from scipy.ndimage import distance_transform_edt, map_coordinates

from make_demo_cohort import templates as demo_templates
from resample_copy import coarse_copy


def template():
    """The MNI152 2009 tissue maps (cropped to the brain as the demo cohort's) and their affine."""
    affine, gm, wm, csf, brain = demo_templates()
    return affine, {"gm": gm, "wm": wm, "csf": csf, "brain": brain.astype(np.float32)}


def output_grid(affine, brain, spacing, margin_mm):
    """A RAS grid of `spacing` mm around the template brain plus `margin_mm`."""
    nz = np.argwhere(brain > 0)
    lo = affine[:3, :3] @ nz.min(0) + affine[:3, 3] - margin_mm
    hi = affine[:3, :3] @ nz.max(0) + affine[:3, 3] + margin_mm
    shape = tuple(int(np.ceil((h - l) / spacing)) + 1 for l, h in zip(lo, hi))
    out = np.diag([spacing, spacing, spacing, 1.0])
    out[:3, 3] = lo
    return out, shape


def world_points(affine, shape):
    ijk = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float64) for s in shape], indexing="ij"), -1)
    return ijk @ affine[:3, :3].T + affine[:3, 3]


def subject(rng, tpl_affine, maps, out_affine, shape, lesion=None):
    centre = np.array([0.0, -18.0, 8.0])  # near the centre of the MNI brain
    scale = 1.0 + rng.uniform(-0.03, 0.03, 3)
    shift = rng.uniform(-2.0, 2.0, 3)
    w = world_points(out_affine, shape)
    t = centre + (w - centre - shift) / scale  # the template point this voxel shows
    vox = (t - tpl_affine[:3, 3]) @ np.linalg.inv(tpl_affine[:3, :3]).T
    coords = [vox[..., a] for a in range(3)]
    sample = {k: map_coordinates(m, coords, order=1, mode="constant") for k, m in maps.items()}
    brain = sample["brain"] > 0.5
    levels = {"csf": 1000.0, "gm": 620.0, "wm": 450.0}
    img = sum(sample[k] * v * rng.uniform(0.92, 1.08) for k, v in levels.items())
    label = np.zeros(shape, np.uint8)
    if lesion is not None:
        c, r = np.array(lesion["centre"]), np.array(lesion["radii"])
        inside = (((t - c) / r) ** 2).sum(-1) < 1.0
        inside &= brain
        img = np.where(inside, 1300.0, img)
        label[inside] = 1
    img = img + rng.normal(0, 9.0, shape)
    img = np.where(brain, np.maximum(img, 1.0), 0.0).astype(np.float32)
    return img, label, {"scale": scale.tolist(), "shift_mm": shift.tolist()}


def as_scanned(img, out_affine, rng):
    """The subject with a skull shell, scalp and a noisy background outside its brain (> 0 everywhere)."""
    brain = img > 0
    spacing = float(abs(out_affine[0, 0]))
    d = distance_transform_edt(~brain) * spacing  # mm from the brain
    raw = np.abs(rng.normal(0, 25.0, img.shape)) + 1.0  # background noise (Rayleigh-like), never 0
    raw = np.where((d > 3) & (d <= 9), 250.0 + rng.normal(0, 20, img.shape), raw)  # skull
    raw = np.where((d > 9) & (d <= 13), 700.0 + rng.normal(0, 30, img.shape), raw)  # scalp
    raw = np.where(brain, img, np.maximum(raw, 1.0))
    return raw.astype(np.float32), brain.astype(np.uint8)


def rotation_z(deg):
    a = np.deg2rad(deg)
    m = np.eye(4)
    m[:2, :2] = [[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]
    return m


def sitk_resample(src, reference, transform=None):
    r = sitk.ResampleImageFilter()
    r.SetReferenceImage(reference)
    r.SetInterpolator(sitk.sitkLinear)
    r.SetDefaultPixelValue(0.0)
    if transform is not None:
        r.SetTransform(transform)
    return r.Execute(src)


def variants(out, h0_path):
    vdir = os.path.join(out, "variants")
    os.makedirs(vdir, exist_ok=True)
    img = nib.load(h0_path)
    data = img.get_fdata(dtype=np.float32)
    made = {}
    for code in ("LPS", "LIA", "PSR"):
        ornt = nib.orientations.ornt_transform(
            nib.orientations.io_orientation(img.affine), nib.orientations.axcodes2ornt(tuple(code)))
        copy = img.as_reoriented(ornt)
        name = f"h0_{code.lower()}.nii.gz"
        nib.save(nib.Nifti1Image(np.asarray(copy.dataobj, np.float32), copy.affine), os.path.join(vdir, name))
        made[name] = f"h0 stored {code} ({nib.aff2axcodes(copy.affine)})"
    # Coarser voxels and another field of view, resampled by SimpleITK in world space.
    size, spacing, _ = coarse_copy(h0_path, os.path.join(vdir, "h0_coarse.nii.gz"), 1.5, 7.0, 4)
    made["h0_coarse.nii.gz"] = f"SimpleITK linear resampling to {spacing[0]:.2f} mm, size {size}, origin +7 mm"
    root = os.path.dirname(os.path.dirname(h0_path))
    coarse_copy(os.path.join(root, "query", "q0.nii.gz"), os.path.join(vdir, "q0_coarse.nii.gz"), 1.5, 7.0, 4)
    coarse_copy(os.path.join(root, "labels", "q0.nii.gz"), os.path.join(vdir, "q0_coarse_label.nii.gz"), 1.5, 7.0, 4,
                labels=True)
    made["q0_coarse.nii.gz"] = "q0 resampled like h0_coarse; q0_coarse_label.nii.gz its label map (nearest neighbour)"
    # The same voxels on rotated affines.
    for name, deg, shift in (("h0_tilted", 3.0, 0.0), ("h0_rotated", 20.0, 30.0)):
        centre = img.affine[:3, :3] @ (np.array(data.shape) / 2.0) + img.affine[:3, 3]
        move = np.eye(4)
        move[:3, 3] = centre
        back = np.eye(4)
        back[:3, 3] = -centre
        shifted = np.eye(4)
        shifted[0, 3] = shift
        affine = shifted @ move @ rotation_z(deg) @ back @ img.affine
        nib.save(nib.Nifti1Image(data, affine), os.path.join(vdir, f"{name}.nii.gz"))
        made[f"{name}.nii.gz"] = f"h0's voxels, affine rotated {deg} deg about z (about the grid centre), shifted {shift} mm in x"
    # The anatomy rotated and shifted on h0's own grid.
    src = sitk.ReadImage(h0_path, sitk.sitkFloat32)
    rigid = sitk.Euler3DTransform()
    centre = src.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2.0 for n in src.GetSize()])
    rigid.SetCenter(centre)
    rigid.SetRotation(0.0, 0.0, np.deg2rad(20.0))
    rigid.SetTranslation((30.0, 0.0, 0.0))
    pad = [int(round(40.0 / s)) for s in src.GetSpacing()]
    wide = sitk.Image([n + 2 * p for n, p in zip(src.GetSize(), pad)], sitk.sitkFloat32)
    wide.SetSpacing(src.GetSpacing())
    wide.SetDirection(src.GetDirection())
    wide.SetOrigin(src.TransformContinuousIndexToPhysicalPoint([-p for p in pad]))
    sitk.WriteImage(sitk_resample(src, wide, rigid.GetInverse()), os.path.join(vdir, "h0_moved.nii.gz"))
    made["h0_moved.nii.gz"] = "h0's anatomy rotated 20 deg about z and shifted 30 mm in x (SimpleITK), on h0's grid extended by 40 mm"
    return made


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--healthy", type=int, default=5)
    ap.add_argument("--query", type=int, default=3)
    ap.add_argument("--spacing", type=float, default=3.0)
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()
    tpl_affine, maps = template()
    out_affine, shape = output_grid(tpl_affine, maps["brain"], a.spacing, 15.0)
    rng = np.random.default_rng(a.seed)
    for sub in ("healthy", "query", "labels", "raw/healthy", "raw/query", "raw/masks"):
        os.makedirs(os.path.join(a.out, sub), exist_ok=True)
    truth = {"spacing_mm": a.spacing, "shape": list(shape), "subjects": {}}
    save = lambda data, path: nib.save(nib.Nifti1Image(data, out_affine), path)
    jobs = [("healthy", f"h{i}") for i in range(a.healthy)] + [("query", f"q{i}") for i in range(a.query)]
    for group, name in jobs:
        lesion = None
        if group == "query":
            lesion = {"centre": [float(rng.uniform(-25, 25)), float(rng.uniform(-40, 10)), float(rng.uniform(0, 25))],
                      "radii": rng.uniform(10, 16, 3).tolist()}
        img, label, params = subject(rng, tpl_affine, maps, out_affine, shape, lesion)
        save(img, os.path.join(a.out, group, f"{name}.nii.gz"))
        if group == "query":
            save(label, os.path.join(a.out, "labels", f"{name}.nii.gz"))
        raw, mask = as_scanned(img, out_affine, rng)
        save(raw, os.path.join(a.out, "raw", group, f"{name}.nii.gz"))
        save(mask, os.path.join(a.out, "raw", "masks", f"{name}_mask.nii.gz"))
        truth["subjects"][name] = dict(params, group=group, lesion=lesion, lesion_voxels=int(label.sum()))
    truth["variants"] = variants(a.out, os.path.join(a.out, "healthy", "h0.nii.gz"))
    with open(os.path.join(a.out, "truth.json"), "w") as f:
        json.dump(truth, f, indent=1)
    print(f"wrote {len(jobs)} subjects of shape {shape} at {a.spacing} mm and {len(truth['variants'])} variants to {a.out}")


if __name__ == "__main__":
    main()
