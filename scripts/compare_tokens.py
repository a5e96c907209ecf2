#!/usr/bin/env python3
"""Compares two folders of mri-ad token files (`<case>.tokens.npz` + `.tokens.json`) case by case.

For every case in both folders it prints the provider and inference seconds of each side, whether the void flags
agree, max and mean |difference| of the fused tokens (float64), the largest |token| value for scale, and the
smallest cosine between corresponding tokens. Exit 1 when a case is missing on one side, the grids or void flags
differ, max |difference| exceeds --max-abs, or the smallest cosine falls below --min-cos; else 0.

Usage: compare_tokens.py A B [--max-abs 1e-3] [--min-cos 0.9999] [--expect-provider-a NAME]
"""
import argparse
import glob
import json
import os
import sys

import numpy as np


def load(folder, case):
    z = np.load(os.path.join(folder, case + ".tokens.npz"))
    with open(os.path.join(folder, case + ".tokens.json")) as f:
        side = json.load(f)
    return z["tokens"].astype(np.float64), z["valid"], side


def cases(folder):
    return {os.path.basename(p)[: -len(".tokens.npz")] for p in glob.glob(os.path.join(folder, "*.tokens.npz"))}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--max-abs", type=float, default=1e-3)
    ap.add_argument("--min-cos", type=float, default=0.9999)
    ap.add_argument("--expect-provider-a", default=None)
    args = ap.parse_args()
    ca, cb = cases(args.a), cases(args.b)
    bad = []
    if not ca:
        bad.append(f"no token files in {args.a}")
    if ca != cb:
        bad.append(f"cases differ: only in {args.a}: {sorted(ca - cb)}, only in {args.b}: {sorted(cb - ca)}")
    for case in sorted(ca & cb):
        ta, va, ja = load(args.a, case)
        tb, vb, jb = load(args.b, case)
        if ta.shape != tb.shape:
            bad.append(f"{case}: token shapes {ta.shape} vs {tb.shape}")
            continue
        diff = np.abs(ta - tb)
        norms = np.linalg.norm(ta, axis=-1) * np.linalg.norm(tb, axis=-1)
        cos = (ta * tb).sum(-1) / np.maximum(norms, 1e-30)
        same_valid = bool((va == vb).all())
        print(
            f"{case}: provider {ja['provider']} / {jb['provider']}; inference {ja['stats']['seconds']:.2f} s / "
            f"{jb['stats']['seconds']:.2f} s; void flags equal {same_valid} ({int(va.sum())} non-void); "
            f"max |diff| {diff.max():.3e}, mean |diff| {diff.mean():.3e} (max |token| {np.abs(ta).max():.3e}); "
            f"min cosine {cos.min():.9f}"
        )
        if not same_valid:
            bad.append(f"{case}: void flags differ")
        if diff.max() > args.max_abs:
            bad.append(f"{case}: max |diff| {diff.max():.3e} > --max-abs {args.max_abs:g}")
        if cos.min() < args.min_cos:
            bad.append(f"{case}: min cosine {cos.min():.9f} < --min-cos {args.min_cos}")
        if args.expect_provider_a and ja["provider"] != args.expect_provider_a:
            bad.append(f"{case}: {args.a} ran on {ja['provider']}, expected {args.expect_provider_a}")
    for b in bad:
        print("FAIL:", b, file=sys.stderr)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
