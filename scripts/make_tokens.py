#!/usr/bin/env python3
"""Writes synthetic token batches (<case>.tokens.npz, the DESIGN.md token-file contract) for tests,
benchmarks and the demo.

Kinds:
  random   i.i.d. Gaussian tokens (then L2-normalised), a fraction of void positions.
  planted  "registered" cohort: every position p has its own normal mean per layer; each case's token is
           that mean plus case noise (L2-normalised). A fraction of the cases share ONE anomaly pattern
           at the same positions (copied with small noise: a recurring anomaly); a few other cases carry
           random one-off anomalies. truth.json records which cases/positions are which.
  clean    like planted with nothing planted.
Deterministic for a given --seed.
"""
import argparse
import json
import os

import numpy as np


def normalise(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def save(out, name, tokens, valid, grid):
    np.savez(os.path.join(out, f"{name}.tokens.npz"), tokens=tokens.astype(np.float32),
             valid=valid.astype(bool), grid=np.asarray(grid, dtype=np.int64))


def void_mask(grid, frac, rng):
    """Void = positions far from the grid centre (a ball-shaped 'brain'), about `frac` of them."""
    gz, gy, gx = grid
    z, y, x = np.meshgrid(np.arange(gz), np.arange(gy), np.arange(gx), indexing="ij")
    c = [(g - 1) / 2 for g in grid]
    r = np.sqrt(((z - c[0]) / max(gz, 1)) ** 2 + ((y - c[1]) / gy) ** 2 + ((x - c[2]) / gx) ** 2).ravel()
    r = r + rng.uniform(0, 1e-6, r.shape)  # break ties deterministically
    n_void = int(round(frac * r.size))
    valid = np.ones(r.size, bool)
    if n_void:
        valid[np.argsort(-r)[:n_void]] = False
    return valid


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--kind", choices=["random", "planted", "clean"], default="planted")
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--grid", type=int, nargs=3, default=[6, 6, 6])
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--void-frac", type=float, default=0.2)
    ap.add_argument("--planted-frac", type=float, default=0.15)
    ap.add_argument("--random-anomalies", type=int, default=3)
    ap.add_argument("--noise", type=float, default=0.5, help="case noise of normal tokens (planted/clean)")
    ap.add_argument("--anomaly-shift", type=float, default=0.9, help="distance of the anomaly pattern from the normal mean")
    ap.add_argument("--copy-noise", type=float, default=0.05, help="noise of each copy of the recurring anomaly")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    rng = np.random.default_rng(a.seed)
    grid = a.grid
    m = int(np.prod(grid))
    names = [f"case{i:03d}" for i in range(a.n)]
    truth = {"kind": a.kind, "cases": names, "planted_cases": [], "planted_positions": [],
             "random_anomalies": {}}
    if a.kind == "random":
        for name in names:
            tokens = normalise(rng.standard_normal((a.layers, m, a.dim)))
            valid = rng.random(m) >= a.void_frac
            valid[0] = True
            save(a.out, name, tokens, valid, grid)
    else:
        valid = void_mask(grid, a.void_frac, rng)
        mean = normalise(rng.standard_normal((a.layers, m, a.dim)))
        valid_pos = np.flatnonzero(valid)
        n_planted = int(round(a.planted_frac * a.n)) if a.kind == "planted" else 0
        order = rng.permutation(a.n)
        planted = sorted(order[:n_planted].tolist())
        random_cases = sorted(order[n_planted:n_planted + a.random_anomalies].tolist()) if a.kind == "planted" else []
        # the recurring anomaly: a 2x2x2 block of valid positions near the centre
        centre = np.array([(g - 1) // 2 for g in grid])
        block = [((centre[0] + dz) * grid[1] + centre[1] + dy) * grid[2] + centre[2] + dx
                 for dz in range(2) for dy in range(2) for dx in range(2)
                 if centre[0] + dz < grid[0] and centre[1] + dy < grid[1] and centre[2] + dx < grid[2]]
        block = [p for p in block if valid[p]]
        direction = normalise(rng.standard_normal((a.layers, len(block), a.dim)))
        pattern = mean[:, block, :] + a.anomaly_shift * direction
        truth["planted_cases"] = [names[i] for i in planted]
        truth["planted_positions"] = [int(p) for p in block]
        for i, name in enumerate(names):
            tokens = mean + a.noise / np.sqrt(a.dim) * rng.standard_normal((a.layers, m, a.dim))
            if i in planted:
                tokens[:, block, :] = pattern + a.copy_noise / np.sqrt(a.dim) * rng.standard_normal(pattern.shape)
            if i in random_cases:
                k = 3
                pos = rng.choice(valid_pos, size=k, replace=False)
                tokens[:, pos, :] = mean[:, pos, :] + 1.5 * normalise(rng.standard_normal((a.layers, k, a.dim)))
                truth["random_anomalies"][name] = sorted(int(p) for p in pos)
            save(a.out, name, normalise(tokens), valid, grid)
    with open(os.path.join(a.out, "truth.json"), "w") as f:
        json.dump(truth, f, indent=1)


if __name__ == "__main__":
    main()
