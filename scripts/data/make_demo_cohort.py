#!/usr/bin/env python3
"""Writes the mri-ad demo cohort: synthetic T2-like brain volumes made from the MNI152 2009 templates that
ship inside the nilearn wheel (PyPI), with tumour-like lesions and their label maps. No download.

Layout (data-manifest/demo.toml): <out>/healthy/hNN.nii.gz, <out>/query/qNN.nii.gz, <out>/labels/qNN.nii.gz.

Every subject (seeded) gets, on the 1 mm MNI grid, skull-stripped (background 0):
  * anatomy: the GM/WM probability maps and CSF = brain - GM - WM, warped by a smooth random displacement
    field (about 2 mm) and a global scaling of +-3 % per axis (head-size variation);
  * T2-like contrast: CSF bright, GM intermediate, WM dark, each tissue's intensity varied by +-8 %;
  * a smooth multiplicative bias field (+-10 %) and Gaussian noise (2 % of the WM level).
Query subjects carry a tumour-like lesion: a necrotic core (very bright on T2) inside a larger oedema
(bright), both irregular ellipsoids; the label is the whole tumour (core + oedema). The first
--recurring query subjects share ONE lesion (same shape and place), copied with shifts of up to 2 voxels
and intensity changes of +-10 %, as the thesis's MVTec-SynCA does; the others get independent lesions.
The healthy variation is chosen to be of the order of registered real scans (residual misregistration of a
few mm, contrast and bias differences), not smaller: see data-manifest/demo.toml.
"""
import argparse
import json
import multiprocessing
import os

import nibabel as nib
import numpy as np
from scipy.ndimage import gaussian_filter, map_coordinates, zoom


def templates():
    import nilearn

    d = os.path.join(os.path.dirname(nilearn.__file__), "datasets", "data")
    load = lambda n: nib.load(os.path.join(d, f"mni_icbm152_{n}_tal_nlin_sym_09a_converted.nii.gz"))
    t1 = load("t1")
    gm = load("gm").get_fdata(dtype=np.float32) / 255.0
    wm = load("wm").get_fdata(dtype=np.float32) / 255.0
    brain = t1.get_fdata(dtype=np.float32) > 0
    csf = np.clip(brain.astype(np.float32) - gm - wm, 0, 1) * brain
    # Crop to the brain's bounding box plus 6 voxels (keeps the files and the warps small); the affine
    # follows the crop.
    nz = np.argwhere(brain)
    lo = np.maximum(nz.min(axis=0) - 6, 0)
    hi = np.minimum(nz.max(axis=0) + 7, brain.shape)
    box = tuple(slice(l, h) for l, h in zip(lo, hi))
    affine = t1.affine.copy()
    affine[:3, 3] = t1.affine[:3, :3] @ lo + t1.affine[:3, 3]
    return affine, gm[box], wm[box], csf[box], brain[box]


def smooth_field(shape, rng, amplitude, coarse=(7, 8, 7)):
    """A smooth random field: coarse Gaussian noise upsampled with cubic splines to a quarter of the
    resolution, then linearly to the full grid."""
    c = rng.standard_normal(coarse).astype(np.float32)
    quarter = [max(s // 4, k) for s, k in zip(shape, coarse)]
    f = zoom(c, [q / k for q, k in zip(quarter, coarse)], order=3)
    f = zoom(f, [s / q for s, q in zip(shape, f.shape)], order=1)
    f = np.pad(f, [(0, max(s - fs, 0)) for s, fs in zip(shape, f.shape)], mode="edge")[: shape[0], : shape[1], : shape[2]]
    return (amplitude * f / max(np.abs(f).max(), 1e-6)).astype(np.float32)


def warp(maps, rng):
    shape = maps[0].shape
    centre = np.array(shape) / 2.0
    scale = 1.0 + rng.uniform(-0.03, 0.03, 3)
    grid = np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij")
    coords = []
    for ax in range(3):
        disp = smooth_field(shape, rng, 2.0)
        coords.append(centre[ax] + (grid[ax] - centre[ax]) / scale[ax] + disp)
    return [map_coordinates(m, coords, order=1, mode="constant", output=np.float32) for m in maps]


def ellipsoid(shape, centre, radii, rng, roughness=0.15):
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    r = ((z - centre[0]) / radii[0]) ** 2 + ((y - centre[1]) / radii[1]) ** 2 + ((x - centre[2]) / radii[2]) ** 2
    # Irregular border: a smooth field perturbs the level set.
    box = tuple(slice(max(int(c - 2 * m) , 0), min(int(c + 2 * m) + 1, s))
                for c, m, s in zip(centre, radii, shape))
    out = np.zeros(shape, bool)
    sub = r[box] if r.shape == shape else np.broadcast_to(r, shape)[box]
    noise = gaussian_filter(rng.standard_normal(sub.shape), 3)
    noise = roughness * noise / max(np.abs(noise).max(), 1e-6)
    out[box] = sub < 1.0 + noise
    return out


def lesion_spec(rng, wm):
    # A centre deep in the white matter, radii of a few centimetres (oedema) with a core half as large.
    candidates = np.argwhere(gaussian_filter(wm, 4) > 0.6)
    centre = candidates[rng.integers(len(candidates))].astype(float)
    radii = rng.uniform(9, 16, 3)
    return {"centre": centre.tolist(), "radii": radii.tolist(), "core": float(rng.uniform(0.35, 0.55)),
            "seed": int(rng.integers(1 << 31))}


def render_lesion(shape, spec, shift=(0, 0, 0)):
    rng = np.random.default_rng(spec["seed"])
    centre = np.array(spec["centre"]) + np.array(shift)
    radii = np.array(spec["radii"])
    oedema = ellipsoid(shape, centre, radii, rng)
    core = ellipsoid(shape, centre, radii * spec["core"], rng)
    return oedema, core & oedema


def subject(rng, tissues, lesion=None, gain=1.0):
    gm, wm, csf, brain = warp(list(tissues), rng)
    brain = brain > 0.5
    levels = {"csf": 1000.0, "gm": 620.0, "wm": 450.0}
    img = sum(m * levels[k] * rng.uniform(0.92, 1.08) for k, m in zip(["gm", "wm", "csf"], [gm, wm, csf]))
    label = np.zeros(brain.shape, np.uint8)
    if lesion is not None:
        oedema, core = lesion
        oedema &= brain
        core &= brain
        img = np.where(oedema, 820.0 * gain, img)
        img = np.where(core, 1250.0 * gain, img)
        label[oedema] = 1
    img = img * np.exp(smooth_field(img.shape, rng, 0.10))
    img = img + rng.normal(0, 0.02 * levels["wm"], img.shape)
    img = np.where(brain, np.maximum(img, 1.0), 0.0).astype(np.float32)
    return img, label


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--healthy", type=int, default=20)
    ap.add_argument("--lesion", type=int, default=10)
    ap.add_argument("--recurring", type=int, default=4)
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--processes", type=int, default=2)
    a = ap.parse_args()
    affine, gm, wm, csf, brain = templates()
    tissues = (gm, wm, csf, brain.astype(np.float32))
    rng = np.random.default_rng(a.seed)
    for sub in ("healthy", "query", "labels"):
        os.makedirs(os.path.join(a.out, sub), exist_ok=True)
    truth = {"recurring": [], "independent": [], "healthy": [], "shared_lesion": None}
    jobs = [("healthy", f"h{i:02d}", int(rng.integers(1 << 31)), None) for i in range(a.healthy)]
    shared = lesion_spec(rng, wm)
    truth["shared_lesion"] = shared
    for i in range(a.lesion):
        kind = "recurring" if i < a.recurring else "independent"
        jobs.append((kind, f"q{i:02d}", int(rng.integers(1 << 31)), shared if kind == "recurring" else None))
        truth[kind].append(f"q{i:02d}")
    truth["healthy"] = [j[1] for j in jobs if j[0] == "healthy"]
    global _CONTEXT
    _CONTEXT = (a.out, affine, tissues, wm)
    # Each subject depends only on its own seed, so the cohort is the same whatever the process count.
    with multiprocessing.get_context("fork").Pool(a.processes) as pool:
        for line in pool.imap(make_one, jobs):
            print(line, flush=True)
    with open(os.path.join(a.out, "truth.json"), "w") as f:
        json.dump(truth, f, indent=1)


_CONTEXT = None


def make_one(job):
    kind, name, seed, shared = job
    out, affine, tissues, wm = _CONTEXT
    srng = np.random.default_rng(seed)
    save = lambda data, path: nib.save(nib.Nifti1Image(data, affine), path)
    if kind == "healthy":
        img, _ = subject(srng, tissues)
        save(img, os.path.join(out, "healthy", f"{name}.nii.gz"))
        return f"healthy {name}"
    if kind == "recurring":
        shift = tuple(int(v) for v in srng.integers(-2, 3, 3))
        lesion = render_lesion(wm.shape, shared, shift)
        gain = float(srng.uniform(0.9, 1.1))
    else:
        lesion = render_lesion(wm.shape, lesion_spec(srng, wm))
        gain = 1.0
    img, label = subject(srng, tissues, lesion, gain)
    save(img, os.path.join(out, "query", f"{name}.nii.gz"))
    save(label, os.path.join(out, "labels", f"{name}.nii.gz"))
    return f"lesion {name} ({kind}): {int(label.sum())} voxels"


if __name__ == "__main__":
    main()
