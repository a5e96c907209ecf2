#!/usr/bin/env python3
"""Reference NIfTI reader checks (nibabel) for mri-ad's own NIfTI reader.

  ref_nifti.py nibabel-data          print the folder of test images shipped inside the nibabel wheel
  ref_nifti.py make DIR              write edge-case files with nibabel headers: every datatype, both byte
                                     orders, scl_slope/scl_inter, qform-only, sform-only, both, neither,
                                     qfac -1, NIfTI-2, .hdr/.img pairs, gzip, a 4th dimension of 1, and
                                     files that must be refused (complex, RGB, 4D, 2D, NaN)
  ref_nifti.py compare MANIFEST      compare what mri-ad read (MANIFEST: JSON list of {file, status,
                                     message, npy, affine}) with nibabel; prints counts read / refused /
                                     wrong and exits 1 when anything is wrong

"Wrong" means: values or affine differ from nibabel's beyond relative 1e-5, or a file was refused that is
a readable 3D real-valued finite volume for nibabel, or a refusal message does not say why.
"""
import gzip
import json
import os
import sys

import numpy as np
import nibabel as nib


def nibabel_data():
    return os.path.join(os.path.dirname(nib.__file__), "tests", "data")


def rot(ax, deg):
    a = np.deg2rad(deg)
    c, s = np.cos(a), np.sin(a)
    m = np.eye(3)
    i, j = [(1, 2), (0, 2), (0, 1)][ax]
    m[i, i], m[i, j], m[j, i], m[j, j] = c, -s, s, c
    return m


def affine(r, zooms, offset):
    a = np.eye(4)
    a[:3, :3] = r @ np.diag(zooms)
    a[:3, 3] = offset
    return a


def write_raw(path, hdr, data):
    """Writes header + voxels exactly as given (no nibabel rescaling), single file or pair."""
    hdr = hdr.copy()
    hdr.set_data_shape(data.shape)
    single = hdr["magic"].item() in (b"n+1", b"n+2")
    raw = np.asarray(data, dtype=hdr.get_data_dtype()).tobytes(order="F")
    opener = gzip.open if path.endswith(".gz") else open
    if single:
        off = 544 if isinstance(hdr, nib.Nifti2Header) else 352
        hdr["vox_offset"] = off
        blob = hdr.binaryblock + b"\0" * (off - len(hdr.binaryblock)) + raw
        with opener(path, "wb") as f:
            f.write(blob)
    else:
        hdr["vox_offset"] = 0
        img_path = path.replace(".hdr", ".img")
        with opener(path, "wb") as f:
            f.write(hdr.binaryblock)
        with opener(img_path, "wb") as f:
            f.write(raw)


def make(out):
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(7)
    shape = (5, 6, 7)
    obl = affine(rot(2, 20) @ rot(0, 12), [1.1, 0.9, 2.5], [-30.0, 12.5, 4.0])
    obl2 = affine(rot(1, -35), [0.8, 1.7, 1.3], [5.0, -7.0, 40.0])
    n = 0

    def hdr_of(kind, endian="<", dtype=np.int16):
        h = {"n1": nib.Nifti1Header, "n2": nib.Nifti2Header,
             "p1": nib.nifti1.Nifti1PairHeader, "p2": nib.nifti2.Nifti2PairHeader}[kind](endianness=endian)
        h.set_data_dtype(dtype)
        h.set_xyzt_units("mm", "sec")
        return h

    def save(name, h, data):
        nonlocal n
        write_raw(os.path.join(out, name), h, data)
        n += 1

    ints = [np.uint8, np.int8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64]
    for dt in ints + [np.float32, np.float64]:
        for endian in "<>":
            if np.issubdtype(dt, np.integer):
                info = np.iinfo(dt)
                lo, hi = max(info.min, -(2**40)), min(info.max, 2**40)
                data = rng.integers(lo, hi, size=shape, dtype=np.int64, endpoint=True).astype(dt)
            else:
                data = (rng.standard_normal(shape) * 1e3).astype(dt)
            h = hdr_of("n1", endian, dt)
            h.set_sform(obl, code=2)
            h.set_qform(obl, code=1)
            tag = np.dtype(dt).name + ("_be" if endian == ">" else "_le")
            save(f"dtype_{tag}.nii", h, data)
    data16 = rng.integers(-3000, 3000, size=shape).astype(np.int16)
    for slope, inter, tag in [(0.5, -3.0, "half"), (2.0, 1.0, "two"), (0.0, 5.0, "zero_slope"),
                              (np.nan, 2.0, "nan_slope"), (-1.5, 100.0, "negative"), (1e-3, 0.0, "small")]:
        h = hdr_of("n1")
        h.set_sform(obl, code=1)
        h["scl_slope"], h["scl_inter"] = slope, inter
        save(f"scale_{tag}.nii.gz", h, data16)
    for codes, tag in [((1, 0), "qform_only"), ((0, 2), "sform_only"), ((1, 4), "both_differ"),
                       ((0, 0), "neither"), ((2, 3), "codes_2_3")]:
        for kind in ("n1", "n2"):
            h = hdr_of(kind)
            h.set_qform(obl, code=codes[0])
            h.set_sform(obl2, code=codes[1])
            save(f"affine_{tag}_{kind}.nii", h, data16)
    # qfac = -1: a left-handed qform (first column flipped).
    lh = obl.copy()
    lh[:3, 2] *= -1
    h = hdr_of("n1")
    h.set_qform(lh, code=1)
    save("qfac_negative.nii", h, data16)
    # Orientation classes as scanners write them.
    for tag, perm, signs in [("LPS", (0, 1, 2), (-1, -1, 1)), ("LIA", (0, 2, 1), (-1, -1, 1)),
                             ("PSR", (1, 2, 0), (-1, 1, 1))]:
        r = np.zeros((3, 3))
        for vox, (world, sg) in enumerate(zip(perm, signs)):
            r[world, vox] = sg
        a = affine(r, [1.0, 1.5, 2.0], [10.0, -20.0, 30.0])
        h = hdr_of("n1", ">")
        h.set_qform(a, code=1)
        h.set_sform(a, code=1)
        save(f"orient_{tag}.nii.gz", h, data16)
    for kind, ext in [("p1", ".hdr"), ("p2", ".hdr"), ("p1", ".hdr.gz")]:
        h = hdr_of(kind, ">", np.float32)
        h.set_sform(obl, code=2)
        save(f"pair_{kind}{ext}", h, rng.standard_normal(shape).astype(np.float32))
    for kind, ext in [("n1", ".nii.gz"), ("n2", ".nii.gz")]:
        h = hdr_of(kind, "<", np.float32)
        h.set_sform(obl, code=2)
        save(f"dim4_of_1_{kind}{ext}", h, rng.standard_normal(shape + (1,)).astype(np.float32))
        save(f"dim5_of_1_{kind}{ext}", h, rng.standard_normal(shape + (1, 1)).astype(np.float32))
    # Files that must be refused.
    h = hdr_of("n1", "<", np.complex64)
    save("refuse_complex64.nii", h, (rng.standard_normal(shape) + 1j).astype(np.complex64))
    h = hdr_of("n2", "<", np.complex128)
    save("refuse_complex128.nii", h, (rng.standard_normal(shape) + 1j).astype(np.complex128))
    rgb = np.zeros(shape, dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    h = hdr_of("n1", "<", rgb.dtype)
    save("refuse_rgb24.nii", h, rgb)
    h = hdr_of("n1", "<", np.int16)
    save("refuse_4d.nii.gz", h, rng.integers(0, 100, size=shape + (3,)).astype(np.int16))
    save("refuse_2d.nii", h, rng.integers(0, 100, size=(5, 6)).astype(np.int16))
    save("refuse_flat3d.nii", h, rng.integers(0, 100, size=(5, 6, 1)).astype(np.int16))
    h = hdr_of("n1", "<", np.float32)
    nan = rng.standard_normal(shape).astype(np.float32)
    nan[1, 2, 3] = np.nan
    save("refuse_nan.nii", h, nan)
    print(f"wrote {n} files to {out}")


def nib_verdict(path):
    """(ok, data, affine, reason): whether nibabel sees a 3D real finite volume."""
    try:
        img = nib.load(path)
    except Exception as e:  # noqa: BLE001 - any failure means nibabel cannot read it either
        return False, None, None, f"nibabel cannot load it ({e})"
    dt = img.get_data_dtype()
    if dt.kind == "c" or dt.names is not None or dt.kind == "b":
        return False, None, None, f"nibabel dtype {dt}"
    shape = img.shape
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) != 3:
        return False, None, None, f"nibabel shape {img.shape}"
    if min(shape) < 2:
        return False, None, None, f"nibabel shape {img.shape} (2D)"
    try:
        data = np.asarray(img.get_fdata(), dtype=np.float64).reshape(shape)
    except Exception as e:  # noqa: BLE001
        return False, None, None, f"nibabel cannot read the voxels ({e})"
    if not np.all(np.isfinite(data)):
        return False, None, None, "non-finite voxels"
    return True, data, np.asarray(img.affine, dtype=np.float64), ""


def compare(manifest_path):
    entries = json.load(open(manifest_path))
    read = refused = wrong = 0
    worst_val = worst_aff = 0.0
    for e in entries:
        path = e["file"]
        name = os.path.basename(path)
        ok, ref, ref_aff, why = nib_verdict(path)
        if e["status"] == "refused":
            refused += 1
            msg = e["message"]
            if ok:
                wrong += 1
                print(f"WRONG  {name}: refused ({msg}) but nibabel reads a valid 3D volume")
            elif name not in msg:
                wrong += 1
                print(f"WRONG  {name}: the refusal message does not name the file: {msg}")
            else:
                print(f"refused {name}: {msg.split(': ', 1)[-1][:110]}  [nibabel: {why}]")
            continue
        read += 1
        if not ok:
            wrong += 1
            print(f"WRONG  {name}: read, but nibabel says {why}")
            continue
        ours = np.load(e["npy"]).astype(np.float64).transpose(2, 1, 0)  # [k][j][i] -> [i, j, k]
        aff = np.asarray(e["affine"], dtype=np.float64)
        if ours.shape != ref.shape:
            wrong += 1
            print(f"WRONG  {name}: shape {ours.shape} vs nibabel {ref.shape}")
            continue
        scale = max(1.0, float(np.max(np.abs(ref))))
        err_v = float(np.max(np.abs(ours - ref)) / scale) if ref.size else 0.0
        err_a = float(np.max(np.abs(aff - ref_aff)) / max(1.0, float(np.max(np.abs(ref_aff)))))
        worst_val, worst_aff = max(worst_val, err_v), max(worst_aff, err_a)
        if err_v > 1e-5 or err_a > 1e-5:
            wrong += 1
            print(f"WRONG  {name}: relative error values {err_v:.2e}, affine {err_a:.2e}")
        else:
            print(f"read    {name}: shape {ref.shape}, rel. error values {err_v:.1e}, affine {err_a:.1e}")
    print(f"SUMMARY read={read} refused={refused} wrong={wrong} "
          f"max_rel_err_values={worst_val:.2e} max_rel_err_affine={worst_aff:.2e}")
    return 1 if wrong else 0


def main():
    if len(sys.argv) >= 2 and sys.argv[1] == "nibabel-data":
        print(nibabel_data())
        return 0
    if len(sys.argv) == 3 and sys.argv[1] == "make":
        make(sys.argv[2])
        return 0
    if len(sys.argv) == 3 and sys.argv[1] == "compare":
        return compare(sys.argv[2])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
