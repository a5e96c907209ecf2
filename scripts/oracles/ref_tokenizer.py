#!/usr/bin/env python3
"""Independent numpy + onnxruntime implementation of the 3D tokenizer (ALGORITHM.md §3.2, steps 3-12).

Written from the spec, not from the Rust code, for the parity test (tests/extract_parity.rs). It holds whole
arrays in memory (no streaming, no background reuse), so it is only meant for small volumes.

  3  slices: axial V[t,:,:] (rows y, cols x), coronal V[:,t,:] (rows z, cols x), sagittal V[:,:,t] (rows z, cols y)
  4  grey -> 3 channels, ImageNet mean/std, model outputs layer_<k> [B, G*G, C] (final LN applied, CLS dropped)
  5  mean over groups of 14 consecutive slices
  6  L2 per token (a zero vector stays zero)
  7  to canonical (z, y, x): axial (k,i,j)->(k,i,j), coronal (k,i,j)->(i,k,j), sagittal (k,i,j)->(i,j,k)
  8  u = R T with the projection matrix R [d', D] read from --projection (mri-ad writes it with
     `extract --save-projection`; its generator is Rust's ChaCha20 + rand_distr, not re-implemented here)
  9  concatenation [axial; coronal; sagittal]
  10 raster order p = (z*G + y)*G + x
  11 per layer: layer norm over all M*3d' numbers (no affine, eps 1e-5), then L2 per token
  12 valid = void fraction of the 14^3 cube (1 - mean(V > 0)) <= --void-threshold

Usage: ref_tokenizer.py --model M.onnx --input case.npy --layers 2,4 --projection R.npy --out ref.npz
Writes tokens f32 [L, M, 3d'], valid bool [M], grid i64 [3].
"""
import argparse

import numpy as np
import onnxruntime as ort

P = 14
MEAN = np.array([0.485, 0.456, 0.406], np.float32).reshape(1, 3, 1, 1)
STD = np.array([0.229, 0.224, 0.225], np.float32).reshape(1, 3, 1, 1)


def slice_features(session, images, layers, batch=32):
    """images [T, H, W] grey -> list over layers of [T, H/14, W/14, C]."""
    t, h, w = images.shape
    outs = [[] for _ in layers]
    for s in range(0, t, batch):
        grey = images[s:s + batch, None].astype(np.float32)
        x = ((np.repeat(grey, 3, axis=1) - MEAN) / STD).astype(np.float32)
        res = session.run([f"layer_{k}" for k in layers], {"pixel_values": x})
        for acc, r in zip(outs, res):
            acc.append(r.reshape(r.shape[0], h // P, w // P, r.shape[-1]))
    return [np.concatenate(a) for a in outs]


def l2(x):
    n = np.sqrt((x.astype(np.float64) ** 2).sum(-1, keepdims=True))
    return np.where(n > 0, x / np.where(n > 0, n, 1), 0).astype(np.float32)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--input", required=True)
    ap.add_argument("--layers", required=True)
    ap.add_argument("--projection", required=True)
    ap.add_argument("--void-threshold", type=float, default=0.5)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    layers = [int(k) for k in a.layers.split(",")]
    vol = np.load(a.input).astype(np.float32)
    s = vol.shape[0]
    assert vol.shape == (s, s, s) and s % P == 0, vol.shape
    g = s // P
    rp = np.load(a.projection).astype(np.float32)  # [d', D]
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(a.model, opts, providers=["CPUExecutionProvider"])

    # images of each axis, stacked along the slicing index t, and how to bring [k, i, j] to [z, y, x]
    axes = [
        (vol, (0, 1, 2)),                      # axial: V[t, y, x]; T[k, i, j] is already [z, y, x]
        (vol.transpose(1, 0, 2), (1, 0, 2)),   # coronal: V[z, t, x] as [t, z, x]; canonical[z, y, x] = T[y, z, x]
        (vol.transpose(2, 0, 1), (1, 2, 0)),   # sagittal: V[z, y, t] as [t, z, y]; canonical[z, y, x] = T[x, z, y]
    ]
    per_layer = [[] for _ in layers]
    for images, perm in axes:
        feats = slice_features(session, images, layers)
        for li, f in enumerate(feats):
            c = f.shape[-1]
            pooled = f.astype(np.float64).reshape(g, P, g, g, c).mean(axis=1)   # [k, i, j, C]
            pooled = l2(pooled.astype(np.float32))
            canon = pooled.transpose(perm + (3,))                                # [z, y, x, C]
            u = canon.reshape(g ** 3, c) @ rp.T                                  # [M, d']
            per_layer[li].append(u)
    tokens = []
    for parts in per_layer:
        x = np.concatenate(parts, axis=1).astype(np.float64)                   # [M, 3d']
        x = (x - x.mean()) / np.sqrt(x.var() + 1e-5)
        tokens.append(l2(x.astype(np.float32)))
    tokens = np.stack(tokens).astype(np.float32)
    brain = (vol > 0).reshape(g, P, g, P, g, P).mean(axis=(1, 3, 5))
    valid = ((1.0 - brain) <= a.void_threshold).reshape(-1)
    np.savez(a.out, tokens=tokens, valid=valid, grid=np.array([g, g, g], np.int64))
    print(f"{a.out}: tokens {tokens.shape}, {int(valid.sum())} valid of {valid.size}")


if __name__ == "__main__":
    main()
