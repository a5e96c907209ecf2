#!/usr/bin/env python3
"""Compares two folders of mri-ad token files (`<case>.tokens.npz` + `.tokens.json`) case by case.

For every case in both folders it prints the provider and inference seconds of each side, whether the void flags
agree, max and mean |difference| of the fused tokens (float64), the largest |token| value for scale, and the
smallest cosine between corresponding tokens (1 where both tokens are zero). Exit 1 when a case is missing on one
side, the token shapes, grids or void flags differ, a token is not finite, max |difference| exceeds --max-abs
(--max-abs 0: bit-identical), or the smallest cosine falls below --min-cos; else 0.

Usage: compare_tokens.py A B [--max-abs 1e-3] [--min-cos 0.9999] [--expect-provider-a NAME] [--expect-provider-b NAME]
"""
import argparse
import glob
import json
import os
import sys

import numpy as np


def load(folder, case):
    z = np.load(os.path.join(folder, case + ".tokens.npz"))
    side_path = os.path.join(folder, case + ".tokens.json")
    side = {}
    if os.path.exists(side_path):
        with open(side_path) as f:
            side = json.load(f)
    return z["tokens"].astype(np.float64), z["valid"], z["grid"], side


def provider(side):
    return side.get("provider", "unrecorded")


def seconds(side):
    s = side.get("stats", {}).get("seconds")
    return "?" if s is None else f"{s:.2f}"


def cases(folder):
    return {os.path.basename(p)[: -len(".tokens.npz")] for p in glob.glob(os.path.join(folder, "*.tokens.npz"))}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--max-abs", type=float, default=1e-3)
    ap.add_argument("--min-cos", type=float, default=0.9999)
    ap.add_argument("--expect-provider-a", default=None)
    ap.add_argument("--expect-provider-b", default=None)
    args = ap.parse_args()
    ca, cb = cases(args.a), cases(args.b)
    bad = []
    if not ca:
        bad.append(f"no token files in {args.a}")
    if ca != cb:
        bad.append(f"cases differ: only in {args.a}: {sorted(ca - cb)}, only in {args.b}: {sorted(cb - ca)}")
    for case in sorted(ca & cb):
        ta, va, ga, ja = load(args.a, case)
        tb, vb, gb, jb = load(args.b, case)
        if ta.shape != tb.shape or list(ga) != list(gb) or va.shape != vb.shape:
            bad.append(f"{case}: token shapes {ta.shape} vs {tb.shape}, grids {list(ga)} vs {list(gb)}")
            continue
        if not (np.isfinite(ta).all() and np.isfinite(tb).all()):
            bad.append(f"{case}: tokens that are not finite")
            continue
        diff = np.abs(ta - tb)
        na, nb = np.linalg.norm(ta, axis=-1), np.linalg.norm(tb, axis=-1)
        both_zero = (na == 0) & (nb == 0)
        cos = np.where(both_zero, 1.0, (ta * tb).sum(-1) / np.maximum(na * nb, 1e-300))
        same_valid = bool((va == vb).all())
        print(
            f"{case}: provider {provider(ja)} / {provider(jb)}; inference {seconds(ja)} s / {seconds(jb)} s; "
            f"void flags equal {same_valid} ({int(va.sum())} non-void); max |diff| {diff.max():.3e}, "
            f"mean |diff| {diff.mean():.3e} (max |token| {np.abs(ta).max():.3e}); min cosine {cos.min():.9f}"
        )
        if not same_valid:
            bad.append(f"{case}: void flags differ")
        if not diff.max() <= args.max_abs:
            bad.append(f"{case}: max |diff| {diff.max():.3e} > --max-abs {args.max_abs:g}")
        if not cos.min() >= args.min_cos:
            bad.append(f"{case}: min cosine {cos.min():.9f} < --min-cos {args.min_cos}")
        if args.expect_provider_a and provider(ja) != args.expect_provider_a:
            bad.append(f"{case}: {args.a} ran on {provider(ja)}, expected {args.expect_provider_a}")
        if args.expect_provider_b and provider(jb) != args.expect_provider_b:
            bad.append(f"{case}: {args.b} ran on {provider(jb)}, expected {args.expect_provider_b}")
    for b in bad:
        print("FAIL:", b, file=sys.stderr)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
