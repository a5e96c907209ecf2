#!/usr/bin/env python3
"""Compares two mri-ad run folders output by output and says what differs.

  compare_runs.py A B [--reorient]

Compared, where either folder has them:
  scores.csv            byte for byte (the rows, the ranking, the communities);
  token_scores/*.npy    bit for bit;
  graph.json            equal as JSON;
  maps/*, masks/*       NIfTI (nibabel): the same voxels (bit for bit) and the same affine; with --reorient
                        both are first brought to the closest canonical (RAS) orientation, so that a map
                        written on a copy stored in another orientation compares with the original's;
                        .npy maps (2D runs) bit for bit;
  summary.json          the "metrics" object (every run kind writes one; null without labels), equal as
                        JSON.
Prints one line per output kind ("same" or what differs) and a SUMMARY line with differing=N; exits 1 when
anything differs or one side lacks an output the other has.
"""
import argparse
import glob
import json
import os
import sys

import numpy as np


def listing(run, pattern):
    return {os.path.relpath(p, run) for p in glob.glob(os.path.join(run, pattern))}


def same_bytes(a, b):
    with open(a, "rb") as fa, open(b, "rb") as fb:
        return fa.read() == fb.read()


def same_nifti(a, b, reorient):
    import nibabel as nib

    ia, ib = nib.load(a), nib.load(b)
    if reorient:
        ia, ib = nib.as_closest_canonical(ia), nib.as_closest_canonical(ib)
    da, db = np.asarray(ia.dataobj), np.asarray(ib.dataobj)
    if da.shape != db.shape or not np.array_equal(da, db):
        return "voxels differ" if da.shape == db.shape else f"shapes {da.shape} vs {db.shape}"
    if not np.allclose(ia.affine, ib.affine, atol=1e-4):
        return "affines differ"
    return None


def metric_part(summary):
    return summary.get("metrics")


def compare(a, b, kind, names, check):
    only_a = sorted(names[0] - names[1])
    only_b = sorted(names[1] - names[0])
    diffs = [n for n in sorted(names[0] & names[1]) if check(os.path.join(a, n), os.path.join(b, n))]
    if not (names[0] | names[1]):
        return None
    problems = []
    if only_a:
        problems.append(f"only in A: {', '.join(only_a[:5])}")
    if only_b:
        problems.append(f"only in B: {', '.join(only_b[:5])}")
    if diffs:
        problems.append(f"differ: {', '.join(diffs[:5])}{' ...' if len(diffs) > 5 else ''}")
    n = len(names[0] & names[1])
    print(f"{kind}: {'same' if not problems else '; '.join(problems)} ({n} compared)")
    return bool(problems)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--reorient", action="store_true")
    a = ap.parse_args()
    results = []
    both = lambda pattern: (listing(a.a, pattern), listing(a.b, pattern))
    results.append(compare(a.a, a.b, "scores.csv", both("scores.csv"), lambda x, y: not same_bytes(x, y)))
    results.append(compare(a.a, a.b, "token_scores", both("token_scores/*.npy"), lambda x, y: not same_bytes(x, y)))
    results.append(compare(a.a, a.b, "graph.json", both("graph.json"),
                           lambda x, y: json.load(open(x)) != json.load(open(y))))
    for sub in ("maps", "masks"):
        results.append(compare(a.a, a.b, f"{sub} (NIfTI)", both(f"{sub}/*.nii.gz"),
                               lambda x, y: same_nifti(x, y, a.reorient) is not None))
        results.append(compare(a.a, a.b, f"{sub} (npy)", both(f"{sub}/*.npy"), lambda x, y: not same_bytes(x, y)))
    results.append(compare(a.a, a.b, "summary.json metrics", both("summary.json"),
                           lambda x, y: metric_part(json.load(open(x))) != metric_part(json.load(open(y)))))
    differing = sum(1 for r in results if r)
    print(f"SUMMARY differing={differing}")
    sys.exit(1 if differing else 0)


if __name__ == "__main__":
    main()
