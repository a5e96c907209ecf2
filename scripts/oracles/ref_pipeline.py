#!/usr/bin/env python3
"""A plain Python implementation of the 3D method (ALGORITHM.md §3, §5 or §6, §7.2, §8.3) on NIfTI folders: the
calibration baseline of issue 5's acceptance 2. Written from the spec with numpy, scipy, nibabel,
onnxruntime and scikit-learn, sharing no code with mri-ad (only the ONNX model file).

Steps, all in one process, everything in memory:
  * nibabel `as_closest_canonical` (RAS+), array transposed to [z][y][x]; brain mask = voxel > 0 on the native
    grid, resized by nearest voxel (ALGORITHM.md §3.2 step 0 takes V > 0 on the resized cube, as mri-ad does:
    trilinear resizing widens that mask by up to one voxel, so this baseline has 2-4 % fewer valid surface
    tokens; docs/experiments/2026-11-30-demo-cohort.md measures the effect);
  * crop: the union of the brain boxes of all volumes + 2 voxels (ALGORITHM.md Q11; every volume must be on
    one 1 mm isotropic grid, as the demo cohort is), padded to a cube (centred), resized to S³ with
    scipy.ndimage.zoom order 1 (labels order 0);
  * intensity: *simple percentile scaling*: divide by the 99th percentile of the brain voxels, clip to
    [0, 1], background 0 (no Nyúl standardisation, on purpose: that is the baseline's definition);
  * tokenizer §3.2 steps 3-12 (slices on three axes, ImageNet normalisation, `layer_<k>` outputs, mean over
    14-slice groups, L2, a numpy Gaussian projection N(0, 1/d') with its own seed, concatenation, per-layer
    map layer norm + L2, void = more than half background);
  * MuSc §5 (Euclidean, k = max(1, floor(alpha (N-1))), per layer, then the mean over layers); void tokens
    take no part in the search (score 0), like mri-ad's default;
  * or, with `--method codegraph`, CoDeGraph §6 on the same tokens: the layer-averaged sorted MSVs (one view
    per layer), weighted endurance ratios, Algorithm 1 (coverage-driven link prefix), the case graph, gamma
    (25th percentile of the weights), Leiden with the CPM (leidenalg, best of --leiden-restarts seeds),
    densities and the Tukey rule, Algorithm 2 (exact, densest outlier community first, against the current
    base) and the final MSM at alpha 0.1 on the refined base. Its defaults are ALGORITHM.md's; mri-ad's four
    deviations are flags (`--link-margin 1 --tukey-k 3 --tukey-fence others --tukey-iqr-floor 0.5`). With
    `--write-tokens`, `scripts/analysis/compare_codegraph_run.py` checks an `mri-ad score --tokens` run of the same
    tokens against it (graph, communities, excluded tokens, token scores);
  * maps: trilinear upsampling (scipy zoom order 1) of the 16³ scores to S³: `--upsample corners` (default,
    the spec's §7.2: align-corners, grid_mode=False) or `centres` (each token's score at the centre of its
    14³ block, grid_mode=True with the edge values repeated: mri-ad's default);
  * metrics §8.3 in the cube space: patient AUROC and F1-max (scikit-learn), voxel AUROC (a 2^22-bin histogram
    of every voxel of every cube; scikit-learn on 30·224³ voxels needs > 10 GB), token-grid F1-max threshold t*, Dice at t* on the upsampled maps (empty-label
    convention), the fraction of lesion cases whose hottest voxel (np.argmax: the first of tied voxels) is inside
    the lesion and its distance to the lesion in cube voxels (scipy distance_transform_edt), and per lesion case the
    average precision of its map over every voxel of its cube (scikit-learn); outside §8.3, the voxel-level
    F1-max threshold from the same histogram (the lower edge of the best bin) and the Dice at it, and the
    token-level Dice per case (tokens ≥ t* against the token labels).

Usage:
  ref_pipeline.py --healthy DIR --query DIR --labels DIR --model onnx/dinov2_vits14.onnx --size 224 \
                 --layers 6,9,12 --out result.json [--alpha 0.3] [--save-scores DIR]
                 [--seed 7,8,9 --features-cache DIR] [--write-tokens DIR] [--proj-dim 0]
                 [--method codegraph [--link-margin 1 --tukey-k 3 --tukey-fence others --tukey-iqr-floor 0.5]]
  Several projection seeds share one model pass; the JSON then has per-seed results, their mean and sd.
"""
import argparse
import glob
import hashlib
import json
import os
import time

import nibabel as nib
import numpy as np
import onnxruntime as ort
from scipy.ndimage import distance_transform_edt, zoom
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from ref_codegraph import link_sources  # mri-ad's --link-margin rule (ALGORITHM.md §6.2 with a margin)

P = 14
MEAN = np.array([0.485, 0.456, 0.406], np.float32).reshape(1, 3, 1, 1)
STD = np.array([0.229, 0.224, 0.225], np.float32).reshape(1, 3, 1, 1)


def case_id(path):
    name = os.path.basename(path)
    for ext in (".nii.gz", ".nii"):
        if name.endswith(ext):
            return name[: -len(ext)]
    return name


def canonical(path):
    img = nib.as_closest_canonical(nib.load(path))
    zooms = img.header.get_zooms()[:3]
    if max(zooms) - min(zooms) > 1e-3:
        raise SystemExit(f"{path}: this baseline expects isotropic voxels, got {zooms}")
    return np.ascontiguousarray(np.asarray(img.dataobj, dtype=np.float32).transpose(2, 1, 0)), img.affine


def to_cube(arr, box, size, order):
    sub = arr[tuple(slice(lo, hi) for lo, hi in box)]
    edge = max(sub.shape)
    pad = [((edge - s) // 2, edge - s - (edge - s) // 2) for s in sub.shape]
    cube = np.pad(sub, pad)
    out = zoom(cube, size / edge, order=order, prefilter=False, grid_mode=False)
    assert out.shape == (size,) * 3, out.shape
    return out


def slice_features(session, images, layers, zero_feats, batch=28):
    """images [T, S, S] -> per layer [T, G, G, C]; all-zero slices take the features of a zero image."""
    t, s, _ = images.shape
    g = s // P
    out = [np.empty((t, g, g, zero_feats[i].shape[-1]), np.float32) for i in range(len(layers))]
    todo = [i for i in range(t) if images[i].any()]
    for i in range(t):
        if not images[i].any():
            for l in range(len(layers)):
                out[l][i] = zero_feats[l]
    for b in range(0, len(todo), batch):
        idx = todo[b:b + batch]
        x = ((np.repeat(images[idx][:, None], 3, axis=1) - MEAN) / STD).astype(np.float32)
        res = session.run([f"layer_{k}" for k in layers], {"pixel_values": x})
        for l, r in enumerate(res):
            out[l][idx] = r.reshape(len(idx), g, g, -1)
    return out


def l2(x):
    n = np.linalg.norm(x.astype(np.float64), axis=-1, keepdims=True)
    return (x / np.maximum(n, 1e-30)).astype(np.float32)


def pooled_features(session, cube, layers, zero_feats):
    """Steps 3-6 and 7: per axis and layer the 14-slice means, L2-normalised, in (z, y, x) raster order:
    float32 [3, len(layers), g³, C]. Everything before the random projection, so several projection
    draws can share one pass of the model."""
    g = cube.shape[0] // P
    per_axis = []
    for axis in range(3):
        imgs = np.moveaxis(cube, axis, 0)  # axial [z], coronal [y] -> rows z, cols x, sagittal [x] -> rows z, cols y
        feats = slice_features(session, np.ascontiguousarray(imgs), layers, zero_feats)
        pooled = [l2(f.reshape(g, P, g, g, -1).mean(axis=1)) for f in feats]  # [k, i, j, C]
        if axis == 1:
            pooled = [p.transpose(1, 0, 2, 3) for p in pooled]  # (k=y, i=z, j=x) -> (z, y, x)
        elif axis == 2:
            pooled = [p.transpose(1, 2, 0, 3) for p in pooled]  # (k=x, i=z, j=y) -> (z, y, x)
        per_axis.append(np.stack([p.reshape(g ** 3, -1) for p in pooled]))
    return np.stack(per_axis)


def project_and_fuse(pooled, proj):
    """Steps 8-11: one shared projection for the three axes, concatenation, per-layer map layer norm, L2."""
    tokens = []
    for l in range(pooled.shape[1]):
        f = np.concatenate([pooled[a, l] @ proj.T for a in range(3)], axis=1).astype(np.float64)
        f = (f - f.mean()) / np.sqrt(f.var() + 1e-5)
        tokens.append(l2(f))
    return np.stack(tokens)


def void_free(cube):
    """Step 12: a token is valid (not void) when at most half of its 14³ cube is background."""
    g = cube.shape[0] // P
    brain = (cube > 0).reshape(g, P, g, P, g, P).mean(axis=(1, 3, 5)).reshape(-1)
    return (1 - brain) <= 0.5


def musc(tokens, valid, alpha):
    n = len(tokens)
    k = max(1, int(np.floor(alpha * (n - 1))))
    n_layers = tokens[0].shape[0]
    scores = [np.zeros(t.shape[1], np.float64) for t in tokens]
    for l in range(n_layers):
        xs = [tokens[a][l][valid[a]].astype(np.float32) for a in range(n)]
        sq = [(x.astype(np.float64) ** 2).sum(1) for x in xs]
        mins = [np.empty((len(xs[a]), n)) for a in range(n)]
        for a in range(n):
            mins[a][:, a] = np.inf
            for b in range(a + 1, n):
                d2 = sq[a][:, None] + sq[b][None, :] - 2.0 * (xs[a] @ xs[b].T).astype(np.float64)
                d = np.sqrt(np.maximum(d2, 0))
                mins[a][:, b] = d.min(1)
                mins[b][:, a] = d.min(0)
        for a in range(n):
            part = np.sort(mins[a], axis=1)[:, :k].mean(1)
            scores[a][valid[a]] += part / n_layers
    return scores, k


def nearest_tables(tokens, valid, excluded):
    """Per layer l and collection a: float64 [n_valid(a), N], the distance from each valid token of a to the
    nearest base token of b (valid and not excluded); +inf for b = a and for a collection with no base left.
    One float32 matrix product per pair of collections serves both directions."""
    n, n_layers = len(tokens), tokens[0].shape[0]
    base = [~excluded[a][valid[a]] for a in range(n)]  # over the valid tokens of a
    out = []
    for l in range(n_layers):
        xs = [tokens[a][l][valid[a]].astype(np.float32) for a in range(n)]
        sq = [(x.astype(np.float64) ** 2).sum(1) for x in xs]
        t = [np.full((len(xs[a]), n), np.inf) for a in range(n)]
        for a in range(n):
            for b in range(a + 1, n):
                d2 = sq[a][:, None] + sq[b][None, :] - 2.0 * (xs[a] @ xs[b].T).astype(np.float64)
                d = np.sqrt(np.maximum(d2, 0))
                if base[b].any():
                    t[a][:, b] = d[:, base[b]].min(1)
                if base[a].any():
                    t[b][:, a] = d[base[a], :].min(0)
        out.append(t)
    return out


def smallest_mean(rows, k, skip=None):
    """Per token: the layer-average of the k smallest entries of each layer's row, columns in `skip`
    removed (Eq. 3.8's S(x; E); top-k mean of the layer-averaged sorted MSV = layer-average of top-k means)."""
    per_layer = []
    for r in rows:
        if skip is not None and skip.any():
            r = r.copy()
            r[:, skip] = np.inf
        v = np.sort(r, axis=1)[:, :k]
        if not np.isfinite(v).all():
            raise SystemExit(f"fewer than k = {k} collections left in a token's MSV")
        per_layer.append(v.mean(1))
    return np.mean(per_layer, axis=0)


def leiden_cpm(n, w, gamma, restarts):
    """leidenalg's CPMVertexPartition (unit node sizes: H = sum_c W_c - gamma·n_c(n_c-1)/2), iterated to
    convergence, best quality over `restarts` seeds."""
    import igraph as ig
    import leidenalg as la
    edges = [(i, j) for i in range(n) for j in range(i + 1, n) if w[i, j] > 0]
    graph = ig.Graph(n=n, edges=edges)
    graph.es["weight"] = [float(w[i, j]) for i, j in edges]
    best, best_q = None, -np.inf
    for seed in range(restarts):
        part = la.CPMVertexPartition(graph, weights="weight", resolution_parameter=gamma)
        opt = la.Optimiser()
        opt.set_rng_seed(seed)
        opt.optimise_partition(part, n_iterations=-1)
        if part.quality() > best_q + 1e-9:
            best, best_q = list(part.membership), part.quality()
    comms = {}
    for v, c in enumerate(best):
        comms.setdefault(c, []).append(v)
    return sorted(comms.values())


def tukey_outliers(dens, k_t, fence, iqr_floor, min_communities):
    """Eq. 3.7 on the non-singleton densities: density > Q3 + k_T·IQR. fence "all" (the spec) takes the
    quartiles of every density, "others" those of the other communities (mri-ad's default); the IQR is
    floored at iqr_floor·Q3 (0 = the plain rule)."""
    if len(dens) < min_communities:
        return set()
    out = set()
    for ci, d in dens.items():
        pool = [x for cj, x in dens.items() if cj != ci] if fence == "others" else list(dens.values())
        q1, q3 = np.percentile(pool, [25, 75])
        if d > q3 + k_t * max(q3 - q1, iqr_floor * q3):
            out.add(ci)
    return out


def codegraph(tokens, valid, a, g):
    """ALGORITHM.md §6 on one batch: graph-stage MSVs (r = 1, one view per layer), endurance ratios and
    Algorithm 1, the case graph, gamma, Leiden + CPM, densities and the Tukey rule, Algorithm 2 (exact,
    against the current base), final MSM with alpha 0.1 on the refined base. Void tokens take no part and
    score 0. Returns the token scores, k and a description of the graph."""
    n, n_layers = len(tokens), tokens[0].shape[0]
    m = tokens[0].shape[1]
    none = [np.zeros(m, bool) for _ in range(n)]
    dist = nearest_tables(tokens, valid, none)

    # Stage 1: layer-averaged sorted MSVs up to r_ref, weighted endurance ratios of the link sources.
    r_ref = min(max(int(np.floor(a.rho_ref * n)), 2), n - 1)
    keys, src_case, src_pos, src_rank, neigh = [], [], [], [], []
    for ca in range(n):
        rows = [dist[l][ca] for l in range(n_layers)]
        orders = [np.argsort(r, axis=1, kind="stable")[:, :r_ref] for r in rows]  # ties: lower case index
        mbar = np.mean([np.take_along_axis(r, o, 1) for r, o in zip(rows, orders)], axis=0)
        neigh.append(np.stack(orders, axis=1))  # [n_valid, layers, r_ref]
        pos = np.flatnonzero(valid[ca])
        ok = link_sources(valid[ca], (g, g, g), a.link_margin)[pos] & np.isfinite(mbar[:, -1]) & (mbar[:, -1] > 0)
        mi = mbar[ok, :-1]
        key = np.where(mi == 0, 0.0, (mi / mbar[ok, -1:]) * (mi + 1e-12) ** -a.beta)
        rows_ok = np.flatnonzero(ok)
        keys.append(key.ravel())
        src_case.append(np.full(key.size, ca))
        src_pos.append(np.repeat(rows_ok, r_ref - 1))  # index among the valid tokens of ca
        src_rank.append(np.tile(np.arange(r_ref - 1), len(rows_ok)))
    keys, src_case, src_pos, src_rank = map(np.concatenate, (keys, src_case, src_pos, src_rank))
    # ties: (case, position, rank); the index among a case's valid tokens orders like the position
    order = np.lexsort((src_rank, src_pos, src_case, keys))

    # Stage 2: Algorithm 1, coverage-driven prefix of the sorted links.
    w = np.zeros((n, n), np.int64)
    covered = np.zeros(n, bool)
    sel = 0
    while covered.sum() < a.coverage * n and sel < order.size:
        for j in order[sel:sel + a.link_batch]:
            ca, rank = src_case[j], src_rank[j]
            for l in range(n_layers):
                cb = neigh[ca][src_pos[j], l, rank]
                w[ca, cb] += 1
                w[cb, ca] += 1
                covered[[ca, cb]] = True
        sel = min(sel + a.link_batch, order.size)
    weights = [w[i, j] for i in range(n) for j in range(i + 1, n) if w[i, j] > 0]
    gamma = float(np.percentile(weights, 25)) if weights else None

    # Stage 3: communities, densities, outliers.
    comms = leiden_cpm(n, w, gamma, a.leiden_restarts) if weights else [[v] for v in range(n)]
    dens = {}
    for ci, c in enumerate(comms):
        if len(c) >= 2:
            wc = sum(w[u, v] for x, u in enumerate(c) for v in c[x + 1:])
            dens[ci] = wc / (len(c) * (len(c) - 1) / 2)
    outliers = tukey_outliers(dens, a.tukey_k, a.tukey_fence, a.tukey_iqr_floor, a.min_communities)

    # Algorithm 2: targeted patch filtering, densest outlier community first, against the current base.
    k = max(1, int(np.floor(a.cg_alpha * (n - 1))))
    excluded = [np.zeros(m, bool) for _ in range(n)]
    for ci in sorted(outliers, key=lambda c: (-dens[c], comms[c][0])):
        in_c = np.zeros(n, bool)
        in_c[comms[ci]] = True
        cur = nearest_tables(tokens, valid, excluded) if any(e.any() for e in excluded) else dist
        ratios = []
        for ca in range(n):
            live = ~excluded[ca][valid[ca]]
            rows = [cur[l][ca][live] for l in range(n_layers)]
            ratios.append((ca, np.flatnonzero(valid[ca])[live],
                           smallest_mean(rows, k, in_c) / np.maximum(smallest_mean(rows, k), 1e-12)))
        tau = np.percentile(np.concatenate([r for ca, _, r in ratios if not in_c[ca]]), a.dep_percentile)
        for ca, pos, r in ratios:
            if in_c[ca]:
                excluded[ca][pos[r > tau]] = True

    # Final MSM on the refined base: every valid token is scored, excluded ones too.
    final = nearest_tables(tokens, valid, excluded) if any(e.any() for e in excluded) else dist
    scores = []
    for ca in range(n):
        s = np.zeros(m)
        s[valid[ca]] = smallest_mean([final[l][ca] for l in range(n_layers)], k)
        scores.append(s)
    graph = {
        "r_ref": r_ref, "candidate_links": int(keys.size), "links_selected": int(sel),
        "edges": [[i, j, int(w[i, j])] for i in range(n) for j in range(i + 1, n) if w[i, j] > 0],
        "resolution": gamma,
        "communities": [{"members": c, "density": dens.get(ci), "outlier": ci in outliers}
                        for ci, c in enumerate(comms)],
        "excluded": [np.flatnonzero(e).tolist() for e in excluded],
    }
    return scores, k, graph


def f1_max(y, s):
    p, r, t = precision_recall_curve(y, s)
    f = np.where(p + r > 0, 2 * p * r / np.maximum(p + r, 1e-300), 0)[:-1]
    i = int(np.argmax(f))
    return float(f[i]), float(t[i])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--healthy", required=True)
    ap.add_argument("--query", required=True)
    ap.add_argument("--labels", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--layers", default="6,9,12")
    ap.add_argument("--proj-dim", type=int, default=128, help="d'; 0 = no projection (experiment)")
    ap.add_argument("--method", choices=["musc", "codegraph"], default="musc",
                    help="musc (§5, the calibration baseline) or codegraph (§6; its own settings below)")
    ap.add_argument("--alpha", type=float, default=0.3, help="MuSc's alpha (--method musc)")
    cg = ap.add_argument_group("codegraph (defaults = ALGORITHM.md; mri-ad's defaults differ in the last four: "
                               "--link-margin 1 --tukey-k 3 --tukey-fence others --tukey-iqr-floor 0.5)")
    cg.add_argument("--cg-alpha", type=float, default=0.1, help="alpha of Algorithm 2 and the final MSM")
    cg.add_argument("--rho-ref", type=float, default=0.3, help="reference rank r_ref = floor(rho_ref·N)")
    cg.add_argument("--beta", type=float, default=0.2, help="inverse-distance exponent of Eq. 3.4")
    cg.add_argument("--coverage", type=float, default=0.9)
    cg.add_argument("--link-batch", type=int, default=100)
    cg.add_argument("--leiden-restarts", type=int, default=64)
    cg.add_argument("--min-communities", type=int, default=4)
    cg.add_argument("--dep-percentile", type=float, default=95)
    cg.add_argument("--link-margin", type=int, default=0)
    cg.add_argument("--tukey-k", type=float, default=5)
    cg.add_argument("--tukey-fence", choices=["all", "others"], default="all")
    cg.add_argument("--tukey-iqr-floor", type=float, default=0)
    ap.add_argument("--upsample", choices=["corners", "centres"], default="corners",
                    help="token grid to voxels: align-corners (the spec) or token-block centres (mri-ad's default)")
    ap.add_argument("--seed", default="7", help="projection seed(s), comma-separated: one model pass serves them all")
    ap.add_argument("--features-cache", help="folder for the per-volume model features (pre-projection), reused when present")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", required=True)
    ap.add_argument("--save-scores")
    ap.add_argument("--write-tokens", help="also write each seed's fused tokens as mri-ad token files "
                    "(DIR/seed<k>/<case>.tokens.npz) for `mri-ad score --tokens`")
    a = ap.parse_args()
    t0 = time.time()
    layers = [int(v) for v in a.layers.split(",")]
    seeds = [int(v) for v in a.seed.split(",")]
    files = [(case_id(f), "healthy", f, None) for f in sorted(glob.glob(os.path.join(a.healthy, "*.nii*")))]
    for f in sorted(glob.glob(os.path.join(a.query, "*.nii*"))):
        c = case_id(f)
        lab = [p for p in glob.glob(os.path.join(a.labels, c + ".nii*"))]
        files.append((c, "query", f, lab[0] if lab else None))
    vols = [canonical(f[2]) for f in files]
    shapes = {v[0].shape for v in vols}
    if len(shapes) != 1 or any(not np.allclose(v[1], vols[0][1], atol=1e-3) for v in vols):
        raise SystemExit("every volume must lie on one grid (size and affine) for the batch crop box")
    lo = np.min([np.argwhere(v[0] > 0).min(0) for v in vols], axis=0)
    hi = np.max([np.argwhere(v[0] > 0).max(0) + 1 for v in vols], axis=0)
    shape = vols[0][0].shape
    box = [(max(int(l) - 2, 0), min(int(h) + 2, s)) for l, h, s in zip(lo, hi, shape)]
    a.box_key = "_".join(f"{l}-{h}" for l, h in box)

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = a.threads
    session = ort.InferenceSession(a.model, opts, providers=["CPUExecutionProvider"])
    g = a.size // P
    zero = np.zeros((1, 3, a.size, a.size), np.float32)
    zero = ((zero[:, :1].repeat(3, 1) - MEAN) / STD).astype(np.float32)
    zero_feats = [r.reshape(g, g, -1) for r in session.run([f"layer_{k}" for k in layers], {"pixel_values": zero})]
    feats, valid, cubes_labels = [], [], []
    for (c, group, f, lab), (vol, _) in zip(files, vols):
        cube = to_cube(vol, box, a.size, 1)
        mask = to_cube((vol > 0).astype(np.float32), box, a.size, 0) > 0.5
        p99 = np.percentile(cube[mask], 99)
        cube = np.where(mask, np.clip(cube / p99, 0, 1), 0).astype(np.float32)
        feats.append(cached_pooled(a, f, c, lambda: pooled_features(session, cube, layers, zero_feats)))
        valid.append(void_free(cube))
        if lab is not None:
            lv = canonical(lab)[0]
            cubes_labels.append(to_cube((lv > 0).astype(np.float32), box, a.size, 0) > 0.5)
        else:
            cubes_labels.append(None)
        print(f"{c}: features in {time.time() - t0:.0f} s", flush=True)
    t_tok = time.time() - t0
    names = [f[0] for f in files]
    per_seed = {}
    for seed in seeds:
        t1 = time.time()
        if a.proj_dim == 0:  # no projection: the pooled features themselves (an experiment, not the spec)
            proj = np.eye(feats[0].shape[-1], dtype=np.float32)
        else:
            rng = np.random.default_rng(seed)
            proj = (rng.standard_normal((a.proj_dim, feats[0].shape[-1])) / np.sqrt(a.proj_dim)).astype(np.float32)
        tokens = [project_and_fuse(p, proj) for p in feats]
        if a.write_tokens:
            d = os.path.join(a.write_tokens, f"seed{seed}")
            os.makedirs(d, exist_ok=True)
            for n, tk, vd in zip(names, tokens, valid):
                np.savez(os.path.join(d, f"{n}.tokens.npz"), tokens=tk.astype(np.float32), valid=vd,
                         grid=np.array([g] * 3, np.int64))
        graph = None
        if a.method == "codegraph":
            scores, k, graph = codegraph(tokens, valid, a, g)
        else:
            scores, k = musc(tokens, valid, a.alpha)
        t_score = time.time() - t1
        res = evaluate(names, scores, cubes_labels, a.size, a.upsample)
        res.update({"seed": seed, "k": k, "scoring_seconds": t_score})
        if graph is not None:
            graph["cases"] = names
            graph["communities"] = [dict(c, members=[names[v] for v in c["members"]]) for c in graph["communities"]]
            graph["excluded"] = {nm: e for nm, e in zip(names, graph["excluded"])}
            res["graph"] = graph
            flagged = [c["members"] for c in graph["communities"] if c["outlier"]]
            print(f"seed {seed}: {graph['links_selected']} links, gamma {graph['resolution']}, outlier communities "
                  f"{flagged}, {sum(len(e) for e in graph['excluded'].values())} tokens excluded", flush=True)
        per_seed[seed] = res
        print(f"seed {seed}: " + json.dumps({m: res[m] for m in METRICS}), flush=True)
        if a.save_scores:
            d = a.save_scores if len(seeds) == 1 else os.path.join(a.save_scores, f"seed{seed}")
            os.makedirs(d, exist_ok=True)
            for n, sc in zip(names, scores):
                np.save(os.path.join(d, f"{n}.npy"), sc.astype(np.float32))
    result = {
        "implementation": "scripts/oracles/ref_pipeline.py (numpy/scipy/nibabel/onnxruntime/scikit-learn)",
        "size": a.size, "layers": layers, "proj_dim": a.proj_dim, "method": a.method, "upsample": a.upsample,
        "settings": ({"alpha": a.alpha} if a.method == "musc" else
                     {k: getattr(a, k) for k in ("cg_alpha", "rho_ref", "beta", "coverage", "link_batch",
                                                 "leiden_restarts", "min_communities", "dep_percentile",
                                                 "link_margin", "tukey_k", "tukey_fence", "tukey_iqr_floor")}),
        "cases": len(files),
        "seconds": {"features": t_tok, "total": time.time() - t0},
    }
    if len(seeds) == 1:
        result.update(per_seed[seeds[0]])
    else:
        result["seeds"] = seeds
        result["mean"] = {m: float(np.mean([per_seed[s][m] for s in seeds])) for m in METRICS}
        result["sd"] = {m: float(np.std([per_seed[s][m] for s in seeds], ddof=1)) for m in METRICS}
        result["per_seed"] = {str(s): per_seed[s] for s in seeds}
    with open(a.out, "w") as fh:
        json.dump(result, fh, indent=1)
    print(json.dumps({k: v for k, v in result.items() if k != "per_seed"}, indent=1))


METRICS = ["patient_auroc", "patient_f1_max", "voxel_auroc", "dice_mean", "dice_mean_lesion_cases",
           "hottest_voxel_in_lesion_fraction", "voxel_ap_mean_lesion_cases", "dice_threshold"]


def cached_pooled(a, path, case, compute):
    """The model pass of one volume, read from --features-cache when present. The key holds the input file's
    SHA-256, the cube size, the layers, the model file's size and the crop box, so a changed input is
    recomputed."""
    if not a.features_cache:
        return compute()
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        h.update(fh.read())
    key = f"{h.hexdigest()[:16]}-s{a.size}-l{a.layers.replace(',', '_')}-m{os.path.getsize(a.model)}-b{a.box_key}"
    f = os.path.join(a.features_cache, f"{case}-{key}.npy")
    if os.path.exists(f):
        return np.load(f)
    out = compute()
    os.makedirs(a.features_cache, exist_ok=True)
    np.save(f + ".tmp.npy", out)
    os.replace(f + ".tmp.npy", f)
    return out


def upsample(grid, size, mode):
    """The S³ map of a G³ token grid, trilinear: align-corners ("corners") or token-block centres ("centres")."""
    if mode == "corners":  # output voxel o samples input o·(g−1)/(S−1)
        return zoom(grid, size / grid.shape[0], order=1, prefilter=False, grid_mode=False)
    # output voxel o samples input (o + ½)·g/S − ½; beyond the outer centres the edge value repeats
    return zoom(grid, size / grid.shape[0], order=1, prefilter=False, grid_mode=True, mode="nearest")


def evaluate(names, scores, cubes_labels, size, mode):
    """§7.2 maps and §8.3 metrics in the cube space."""
    g = size // P
    patient = np.array([s.max() for s in scores])
    has_lesion = np.array([lab is not None and lab.any() for lab in cubes_labels])
    tok_scores, tok_labels, maps = [], [], []
    lo_s = min(float(s.min()) for s in scores)
    hi_s = max(float(s.max()) for s in scores)
    bins = 1 << 22
    pos_hist = np.zeros(bins, np.int64)
    neg_hist = np.zeros(bins, np.int64)
    hottest = {}
    hottest_distance = {}  # per lesion case: cube voxels from the hottest voxel to the lesion (0 inside)
    case_ap = {}  # per lesion case: the AP of its own upsampled map over every voxel of its cube
    for i, s in enumerate(scores):
        grid = s.reshape(g, g, g).astype(np.float32)
        up = upsample(grid, size, mode)
        assert up.shape == (size,) * 3, up.shape
        lab = cubes_labels[i] if cubes_labels[i] is not None else np.zeros(up.shape, bool)
        b = np.clip(((up.ravel().astype(np.float64) - lo_s) / max(hi_s - lo_s, 1e-300) * bins).astype(np.int64), 0, bins - 1)
        pos_hist += np.bincount(b[lab.ravel()], minlength=bins)
        neg_hist += np.bincount(b[~lab.ravel()], minlength=bins)
        tok_scores.append(s)
        tok_labels.append(lab.reshape(g, P, g, P, g, P).any(axis=(1, 3, 5)).ravel())
        if has_lesion[i]:
            hot = int(np.argmax(up))
            hottest[names[i]] = bool(lab.ravel()[hot])
            hottest_distance[names[i]] = float(distance_transform_edt(~lab).ravel()[hot])
            case_ap[names[i]] = float(average_precision_score(lab.ravel(), up.ravel()))
        maps.append(up)
    f1_tok, t_star = f1_max(np.concatenate(tok_labels), np.concatenate(tok_scores))
    # the voxel-level F1-max threshold (pooled over every voxel of every cube, from the histogram: predict
    # positive iff a voxel's bin is >= j), outside §8.3: the threshold of voxel-level comparisons
    tp = np.cumsum(pos_hist[::-1])[::-1]
    fp = np.cumsum(neg_hist[::-1])[::-1]
    f1_vox_all = 2 * tp / np.maximum(2 * tp + fp + (pos_hist.sum() - tp), 1)
    f1_vox_all = np.where(pos_hist + neg_hist > 0, f1_vox_all, -1.0)  # thresholds at occupied bins only
    j_vox = bins - 1 - int(np.argmax(f1_vox_all[::-1]))  # ties: the highest threshold, as mri-ad
    t_vox = np.float64(lo_s + j_vox * (hi_s - lo_s) / bins)
    def dice_of(pred, lab):  # 1 when both are empty (§8.3)
        denom = pred.sum() + lab.sum()
        return 1.0 if denom == 0 else float(2 * (pred & lab).sum() / denom)

    # per case on the token grid at t* (outside §8.3)
    token_dice = {n: dice_of(ts >= t_star, tl) for n, ts, tl in zip(names, tok_scores, tok_labels)}
    dice, dice_vox = {}, {}
    for i, up in enumerate(maps):
        lab = cubes_labels[i] if cubes_labels[i] is not None else np.zeros(up.shape, bool)
        up64 = up.astype(np.float64)  # compared in float64, as the histogram's bins
        dice[names[i]] = dice_of(up64 >= t_star, lab)
        dice_vox[names[i]] = dice_of(up64 >= t_vox, lab)
    # Voxel AUROC from a 2^22-bin histogram (ALGORITHM.md §8.3: 2^20-2^24 bins give it to ~1e-6); ties
    # within a bin count 1/2. scikit-learn on 30·224³ voxels would need > 10 GB.
    neg_below = np.cumsum(neg_hist) - neg_hist
    voxel_auroc = float((pos_hist * (neg_below + 0.5 * neg_hist)).sum() / (pos_hist.sum() * neg_hist.sum()))
    return {
        "patient_auroc": float(roc_auc_score(has_lesion, patient)),
        "patient_f1_max": f1_max(has_lesion, patient)[0],
        "voxel_auroc": voxel_auroc,
        "token_f1_max": f1_tok, "dice_threshold": t_star,
        "dice_mean": float(np.mean(list(dice.values()))),
        "dice_mean_lesion_cases": float(np.mean([dice[n] for n, h in zip(names, has_lesion) if h])),
        "hottest_voxel_in_lesion_fraction": float(np.mean(list(hottest.values()))),
        "voxel_ap_mean_lesion_cases": float(np.mean(list(case_ap.values()))),
        "voxel_f1_max": float(f1_vox_all[j_vox]), "voxel_f1_threshold": float(t_vox),
        "dice_at_voxel_threshold_per_case": dice_vox, "token_dice_per_case": token_dice,
        "dice_per_case": dice, "hottest_voxel_in_lesion": hottest, "hottest_voxel_distance": hottest_distance,
        "voxel_ap_per_case": case_ap,
        "patient_scores": dict(zip(names, map(float, patient))),
    }

if __name__ == "__main__":
    main()
