#!/usr/bin/env python3
"""Where the first CoDeGraph links of a 2D image set come from (a diagnostic for docs/score2d.md).

Recomputes, independently of mri-ad (onnxruntime + numpy), the graph-stage links of `score2d`'s defaults
on a folder of images and says which tokens create them:
* tokens: DINOv2 blocks 3, 6, 9, 12 at S = 518, the r = 1 LNAMD view (whole-map layer norm, L2 per token);
* void tokens (only with --void): more than half of the 14×14 patch of the resized image is exact 0;
  link sources are the non-void tokens at least --margin grid steps from a void one (as mri-ad);
* layer-averaged sorted nearest-image distances (void tokens left out of the search), r_ref = floor(0.3 N),
  weighted endurance ratio ζ·m^-0.2, Algorithm 1 (coverage 0.9, batches of 100).
Each source token of the selected links is classed by its patch of the resized image: `background` (all
exact 0), `edge` (partly 0), `next to edge` (non-zero, with a partly-zero neighbour), `interior`.

Usage: link_sources2d.py IMAGES MODEL [--truth truth.json] [--void] [--margin 1]
Prints the number of links selected, how many of their sources lie in each class, and how many lie in the
images listed under "recurring" in truth.json (scripts/data/make_recurring2d.py writes it).
"""
import argparse
import glob
import json
import os
import sys
from collections import Counter

import numpy as np
import onnxruntime as ort
from scipy.ndimage import binary_erosion

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "oracles"))
from ref_score2d import MEAN, STD, decode, resize  # noqa: E402

S, P, BLOCKS = 518, 14, (3, 6, 9, 12)


def features(files, model):
    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    feats, zero = [], []
    for f in files:
        px = np.stack([resize(c, S) for c in decode(f)])
        g = S // P
        zero.append((px == 0).all(axis=0).reshape(g, P, g, P).mean(axis=(1, 3)).ravel())
        if px.shape[0] == 1:
            px = np.repeat(px, 3, axis=0)
        px = (px - MEAN[:, None, None]) / STD[:, None, None]
        out = sess.run([f"layer_{b}" for b in BLOCKS], {"pixel_values": px[None].astype(np.float32)})
        feats.append(np.stack([o[0] for o in out]))
    return np.stack(feats), np.stack(zero)


def ln_l2(x):
    x = x.astype(np.float64)
    x = (x - x.mean()) / np.sqrt(x.var() + 1e-5)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("images")
    ap.add_argument("model")
    ap.add_argument("--truth")
    ap.add_argument("--void", action="store_true")
    ap.add_argument("--margin", type=int, default=1)
    args = ap.parse_args()
    files = sorted(glob.glob(os.path.join(args.images, "*.png")))
    names = [os.path.basename(f)[:-4] for f in files]
    feats, zero = features(files, args.model)
    n, nl, m, _ = feats.shape
    g = S // P
    valid = zero <= 0.5 if args.void else np.ones((n, m), bool)
    source = valid.copy()
    if args.void and args.margin > 0:
        for a in range(n):
            source[a] = binary_erosion(valid[a].reshape(g, g), iterations=args.margin, border_value=1).ravel()
    tok = [[ln_l2(feats[a, l]) for l in range(nl)] for a in range(n)]
    r_ref = max(2, min(int(0.3 * n), n - 1))
    msv = np.zeros((nl, n, m, n - 1))
    nearest = np.zeros((nl, n, m, n - 1), int)
    for l in range(nl):
        for a in range(n):
            others = [b for b in range(n) if b != a]
            sims = [np.where(valid[b][None, :], tok[a][l] @ tok[b][l].T, -np.inf).max(1) for b in others]
            d = np.sqrt(np.maximum(2 - 2 * np.stack(sims, 1).astype(np.float64), 0))
            order = np.argsort(d, 1, kind="stable")
            msv[l, a] = np.take_along_axis(d, order, 1)
            nearest[l, a] = np.array(others)[order]
    mbar = msv.mean(0)
    keys = []
    for a in range(n):
        for p in np.nonzero(source[a])[0]:
            ref = mbar[a, p, r_ref - 1]
            if ref == 0:
                continue
            for i in range(r_ref - 1):
                d = mbar[a, p, i]
                keys.append((0.0 if d == 0 else d / ref * (d + 1e-12) ** -0.2, a, p, i))
    keys.sort()
    covered, pos = set(), 0
    while len(covered) < 0.9 * n and pos < len(keys):
        for _, a, p, i in keys[pos:pos + 100]:
            covered.add(a)
            covered.update(int(nearest[l, a, p, i]) for l in range(nl))
        pos += 100

    def kind(a, p):
        z = zero[a].reshape(g, g)
        r, c = divmod(p, g)
        if z[r, c] == 1:
            return "background"
        if z[r, c] > 0:
            return "edge"
        return "next to edge" if z[max(r - 1, 0):r + 2, max(c - 1, 0):c + 2].max() > 0 else "interior"

    selected = keys[:pos]
    report = {"links": pos, "candidates": len(keys),
              "sources": dict(Counter(kind(a, p) for _, a, p, _ in selected))}
    if args.truth:
        recurring = set(json.load(open(args.truth))["recurring"])
        report["sources_in_recurring_images"] = sum(names[a] in recurring for _, a, _, _ in selected)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
