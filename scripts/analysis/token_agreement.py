#!/usr/bin/env python3
"""How well two cases' token files agree, position by position (e.g. a volume and its resampled copy in one
run): the cosine similarity of the tokens at each grid position valid (brain) in both, per layer and over
all, as mean and minimum. With --centre CASE..., also after subtracting those cases' mean token at each
position (the part every brain shares), which tells subjects apart where raw cosines are all high.
A negative control is the same command with another subject as B.

  token_agreement.py TOKENS_DIR A B [--centre C1 C2 ...] [--json]
"""
import argparse
import json
import os

import numpy as np


def load(folder, case):
    z = np.load(os.path.join(folder, case + ".tokens.npz"))
    return z["tokens"].astype(np.float64), z["valid"]


def cosines(a, b):
    num = (a * b).sum(-1)
    den = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    return num / np.maximum(den, 1e-300)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("tokens")
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--centre", nargs="*", default=[])
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    ta, va = load(a.tokens, a.a)
    tb, vb = load(a.tokens, a.b)
    both = va & vb
    out = {"a": a.a, "b": a.b, "positions_valid_in_both": int(both.sum()), "layers": []}
    raw = cosines(ta[:, both], tb[:, both])
    centre = None
    if a.centre:
        centre = np.mean([load(a.tokens, c)[0] for c in a.centre], axis=0)[:, both]
        cen = cosines(ta[:, both] - centre, tb[:, both] - centre)
    for layer in range(ta.shape[0]):
        row = {"layer": layer, "cos_mean": float(raw[layer].mean()), "cos_min": float(raw[layer].min())}
        if centre is not None:
            row["centred_cos_mean"] = float(cen[layer].mean())
        out["layers"].append(row)
    out["cos_mean"], out["cos_min"] = float(raw.mean()), float(raw.min())
    if centre is not None:
        out["centred_cos_mean"] = float(cen.mean())
    if a.json:
        print(json.dumps(out))
        return
    print(f"{a.a} vs {a.b}: {out['positions_valid_in_both']} positions valid in both")
    for row in out["layers"]:
        extra = f", centred mean {row['centred_cos_mean']:.3f}" if centre is not None else ""
        print(f"  layer {row['layer']}: cosine mean {row['cos_mean']:.4f}, min {row['cos_min']:.4f}{extra}")
    extra = f", centred mean {out['centred_cos_mean']:.3f}" if centre is not None else ""
    print(f"  all: cosine mean {out['cos_mean']:.4f}, min {out['cos_min']:.4f}{extra}")


if __name__ == "__main__":
    main()
