#!/usr/bin/env python3
"""Independent check of a `mri-ad score2d` run's image path: decoding, resizing, normalisation, the model's
`cls` output and RsCIN, recomputed with Pillow, onnxruntime and numpy.

For every input listed in <run>/summary.json: decode with Pillow (8-bit / 255, 16-bit / 65535, alpha
dropped, palette expanded), resize every channel as a float ("F") image to S×S with Image.BILINEAR,
replicate grey into 3 channels, ImageNet-normalise, run the model and take `cls`; then RsCIN
(scripts/oracles/ref_rscin.py) on the run's raw scores (scores.csv column raw_score) with the run's windows.

When the run made the background void (summary.json `void_background.active`), also the void tokens: the resized channels
(Pillow "F" resize) exactly 0 in every channel over more than the run's threshold of a 14×14 patch.

Usage: ref_score2d.py RUN MODEL
Prints JSON: {"score_max_abs_diff": ..., "cases": N, "void_tokens": {case: n}, "void_scored": n}, where
void_scored counts the void tokens whose score in token_scores/<case>.npy is not 0 (it must be 0).
"""
import csv
import json
import os
import sys

import numpy as np
import onnxruntime as ort
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ref_rscin import rscin  # noqa: E402

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def decode(path):
    im = Image.open(path)
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    a = np.asarray(im)
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        return (a.astype(np.float64) / 65535.0)[None]
    a = a.astype(np.float64) / 255.0
    if a.ndim == 2:
        return a[None]
    if a.shape[-1] == 2:  # LA
        return a[..., 0][None]
    return np.moveaxis(a[..., :3], -1, 0)


def resize(ch, s):
    return np.asarray(Image.fromarray(ch.astype(np.float32), "F").resize((s, s), Image.BILINEAR))


def main():
    run, model = sys.argv[1], sys.argv[2]
    summary = json.load(open(os.path.join(run, "summary.json")))
    s = summary["backbone"]["size"]
    windows = summary["rscin_windows"]
    rows = {r["case"]: r for r in csv.DictReader(open(os.path.join(run, "scores.csv")))}
    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    void = summary.get("void_background")
    void = void if void and void.get("active") else None
    cls, raw, score, names = [], [], [], []
    void_tokens, void_scored = {}, 0
    for inp in summary["inputs"]:
        chans = decode(inp["image"])
        px = np.stack([resize(c, s) for c in chans])
        if void:
            g = s // 14
            zero = (px == 0).all(axis=0).reshape(g, 14, g, 14).mean(axis=(1, 3)).ravel()
            is_void = zero > void["threshold"]
            void_tokens[inp["case"]] = int(is_void.sum())
            tok = np.load(os.path.join(run, "token_scores", inp["case"] + ".npy"))
            void_scored += int((tok[is_void] != 0).sum())
        if px.shape[0] == 1:
            px = np.repeat(px, 3, axis=0)
        px = (px - MEAN[:, None, None]) / STD[:, None, None]
        out = sess.run(["cls"], {"pixel_values": px[None].astype(np.float32)})[0]
        cls.append(out[0])
        raw.append(float(rows[inp["case"]]["raw_score"]))
        score.append(float(rows[inp["case"]]["score"]))
        names.append(inp["case"])
    ref = rscin(np.array(raw), np.array(cls, np.float32), windows)
    print(json.dumps({"score_max_abs_diff": float(np.abs(ref - np.array(score)).max()), "cases": len(names),
                      "void_tokens": void_tokens, "void_scored": void_scored}))


if __name__ == "__main__":
    main()
