#!/usr/bin/env python3
"""numpy/scipy reference for the 2D LNAMD (ALGORITHM.md §4.1) and the bilinear align-corners upsampling (§7.1).

Usage: ref_lnamd.py IN.npz OUT.npz

Input keys, per case name k:
  tokens_k [M, C] float32, grid_k [2] int (H, W), r_k [1] int      -> LNAMD case
  map_k [gh, gw] float32, size_k [2] int (SH, SW)                   -> bilinear case
Output keys:
  box_k   [M, C]  zero-padded r×r box mean with divisor r² of the layer-normed map (no L2)
  lnamd_k [M, C]  the LNAMD output (L2 per token, zero tokens stay zero)
  boxcount_k, lnamdedge_k   wrong variants (divisor = in-grid cell count; edge-replicated padding), used by
                            the test to show that its tolerance would catch those mistakes
  up_k [SH, SW]   the upsampled map
Everything is computed in float64: layer norm with np.mean/np.var over the whole map, the box sum with a
summed-area table (np.pad + cumsum), bilinear with scipy.ndimage.map_coordinates(order=1).
"""
import sys

import numpy as np
from scipy.ndimage import map_coordinates


def box_sum(x, r, mode):
    """Sum over the r×r neighbourhood of every cell of x [H, W, C] (padding: 'constant' zeros or 'edge')."""
    p = r // 2
    padded = np.pad(x, ((p, p), (p, p), (0, 0)), mode=mode)
    sat = np.pad(padded.cumsum(0).cumsum(1), ((1, 0), (1, 0), (0, 0)))
    return sat[r:, r:] - sat[:-r, r:] - sat[r:, :-r] + sat[:-r, :-r]


def l2(a):
    n = np.linalg.norm(a, axis=1, keepdims=True)
    return np.divide(a, n, out=np.zeros_like(a), where=n > 0)


def lnamd(tokens, h, w, r):
    x = tokens.astype(np.float64)
    xn = (x - x.mean()) / np.sqrt(x.var() + 1e-5)
    grid = xn.reshape(h, w, -1)
    c = grid.shape[2]
    box = box_sum(grid, r, "constant") / (r * r)
    count = box_sum(np.ones((h, w, 1)), r, "constant")
    boxcount = box_sum(grid, r, "constant") / count
    edge = box_sum(grid, r, "edge") / (r * r)
    flat = lambda a: a.reshape(h * w, c)
    return {
        "box": flat(box),
        "lnamd": l2(flat(box)),
        "boxcount": flat(boxcount),
        "lnamdedge": l2(flat(edge)),
    }


def bilinear(m, sh, sw):
    gh, gw = m.shape
    cy = np.arange(sh) * (gh - 1) / (sh - 1) if sh > 1 and gh > 1 else np.zeros(sh)
    cx = np.arange(sw) * (gw - 1) / (sw - 1) if sw > 1 and gw > 1 else np.zeros(sw)
    yy, xx = np.meshgrid(cy, cx, indexing="ij")
    return map_coordinates(m.astype(np.float64), [yy, xx], order=1, mode="nearest")


def main():
    d = np.load(sys.argv[1])
    out = {}
    for key in d.files:
        if key.startswith("tokens_"):
            k = key[len("tokens_"):]
            h, w = (int(v) for v in d["grid_" + k])
            r = int(d["r_" + k][0])
            for name, arr in lnamd(d[key], h, w, r).items():
                out[f"{name}_{k}"] = arr
        elif key.startswith("map_"):
            k = key[len("map_"):]
            sh, sw = (int(v) for v in d["size_" + k])
            out["up_" + k] = bilinear(d[key], sh, sw)
    np.savez(sys.argv[2], **out)


if __name__ == "__main__":
    main()
