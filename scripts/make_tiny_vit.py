#!/usr/bin/env python3
"""Writes a tiny random-weight ViT/14 in ONNX that follows the mri-ad model contract (onnx/README.md).

For tests only: it runs in milliseconds, needs no download, and is fully determined by --seed.

Architecture (the layout of DINOv2 / Hugging Face Dinov2Model, scaled down): 14x14 patch embedding (Conv,
stride 14), a CLS token, a learned position embedding on a native 4x4 grid that the graph resizes
bicubically (align_corners=False, a=-0.75) to the input's (H/14, W/14) grid, so any multiple of 14 works;
--depth pre-norm transformer blocks (LayerNorm, multi-head self-attention, layer scale, MLP with exact
GELU, layer scale); the final LayerNorm (eps 1e-6) applied to the exported block outputs.

Contract: input `pixel_values` f32 [B, 3, H, W]; outputs `layer_<k>` f32 [B, (H/14)(W/14), C] for every
block k = 1..depth (final LayerNorm applied, CLS dropped), and `cls` f32 [B, C] (final LayerNorm of the
last block's CLS token).

Usage: make_tiny_vit.py --out tiny.onnx [--depth 4] [--width 32] [--heads 2] [--seed 0]
"""
import argparse
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

PATCH = 14
NATIVE_GRID = 4
OPSET = 17


class Graph:
    """Small helper that names nodes and initializers uniquely."""

    def __init__(self):
        self.nodes = []
        self.inits = []
        self.count = 0

    def const(self, name, array):
        self.inits.append(numpy_helper.from_array(np.asarray(array), name=name))
        return name

    def op(self, op_type, inputs, name, **attrs):
        self.count += 1
        out = f"{name}_out"
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=name, **attrs))
        return out


def layer_norm(g, x, prefix, width, rng, eps):
    w = g.const(f"{prefix}.weight", (1.0 + 0.1 * rng.standard_normal(width)).astype(np.float32))
    b = g.const(f"{prefix}.bias", (0.1 * rng.standard_normal(width)).astype(np.float32))
    return g.op("LayerNormalization", [x, w, b], f"/{prefix}/LayerNorm", axis=-1, epsilon=eps)


def linear(g, x, prefix, n_in, n_out, rng):
    w = g.const(f"{prefix}.weight", (rng.standard_normal((n_in, n_out)) / np.sqrt(n_in)).astype(np.float32))
    b = g.const(f"{prefix}.bias", (0.1 * rng.standard_normal(n_out)).astype(np.float32))
    y = g.op("MatMul", [x, w], f"/{prefix}/MatMul")
    return g.op("Add", [y, b], f"/{prefix}/Add")


def block(g, x, k, width, heads, rng):
    p = f"encoder.layer.{k}"
    hd = width // heads
    h = layer_norm(g, x, f"{p}.norm1", width, rng, 1e-6)
    qkv = []
    for name in ("query", "key", "value"):
        t = linear(g, h, f"{p}.attention.{name}", width, width, rng)
        t = g.op("Reshape", [t, g.const(f"{p}.{name}.split", np.array([0, 0, heads, hd], np.int64))],
                 f"/{p}/attention/{name}/Reshape")
        qkv.append(t)
    q = g.op("Transpose", [qkv[0]], f"/{p}/attention/q/Transpose", perm=[0, 2, 1, 3])
    kt = g.op("Transpose", [qkv[1]], f"/{p}/attention/k/Transpose", perm=[0, 2, 3, 1])
    v = g.op("Transpose", [qkv[2]], f"/{p}/attention/v/Transpose", perm=[0, 2, 1, 3])
    s = g.op("MatMul", [q, kt], f"/{p}/attention/scores")
    s = g.op("Mul", [s, g.const(f"{p}.scale", np.array(1.0 / np.sqrt(hd), np.float32))], f"/{p}/attention/scale")
    a = g.op("Softmax", [s], f"/{p}/attention/Softmax", axis=-1)
    o = g.op("MatMul", [a, v], f"/{p}/attention/context")
    o = g.op("Transpose", [o], f"/{p}/attention/merge/Transpose", perm=[0, 2, 1, 3])
    o = g.op("Reshape", [o, g.const(f"{p}.merge", np.array([0, 0, width], np.int64))], f"/{p}/attention/merge/Reshape")
    o = linear(g, o, f"{p}.attention.output", width, width, rng)
    ls1 = g.const(f"{p}.layer_scale1", (0.5 + 0.5 * rng.random(width)).astype(np.float32))
    x = g.op("Add", [g.op("Mul", [o, ls1], f"/{p}/layer_scale1/Mul"), x], f"/{p}/Add")
    h = layer_norm(g, x, f"{p}.norm2", width, rng, 1e-6)
    h = linear(g, h, f"{p}.mlp.fc1", width, 4 * width, rng)
    # exact GELU: 0.5 x (1 + erf(x / sqrt 2))
    e = g.op("Erf", [g.op("Div", [h, g.const(f"{p}.sqrt2", np.array(np.sqrt(2.0), np.float32))], f"/{p}/mlp/gelu/Div")],
             f"/{p}/mlp/gelu/Erf")
    e = g.op("Add", [e, g.const(f"{p}.one", np.array(1.0, np.float32))], f"/{p}/mlp/gelu/Add")
    h = g.op("Mul", [g.op("Mul", [h, e], f"/{p}/mlp/gelu/Mul"), g.const(f"{p}.half", np.array(0.5, np.float32))],
             f"/{p}/mlp/gelu/Mul_1")
    h = linear(g, h, f"{p}.mlp.fc2", 4 * width, width, rng)
    ls2 = g.const(f"{p}.layer_scale2", (0.5 + 0.5 * rng.random(width)).astype(np.float32))
    return g.op("Add", [g.op("Mul", [h, ls2], f"/{p}/layer_scale2/Mul"), x], f"/{p}/Add_1")


def build(depth, width, heads, seed):
    if width % heads:
        sys.exit(f"--width {width} is not a multiple of --heads {heads}")
    rng = np.random.default_rng(seed)
    g = Graph()
    x = "pixel_values"
    # patch embedding
    pw = g.const("embeddings.patch.weight",
                 (rng.standard_normal((width, 3, PATCH, PATCH)) / np.sqrt(3 * PATCH * PATCH)).astype(np.float32))
    pb = g.const("embeddings.patch.bias", (0.1 * rng.standard_normal(width)).astype(np.float32))
    conv = g.op("Conv", [x, pw, pb], "/embeddings/patch/Conv", kernel_shape=[PATCH, PATCH], strides=[PATCH, PATCH])
    tokens = g.op("Reshape", [conv, g.const("embeddings.flat", np.array([0, width, -1], np.int64))],
                  "/embeddings/patch/Reshape")
    tokens = g.op("Transpose", [tokens], "/embeddings/patch/Transpose", perm=[0, 2, 1])
    # CLS token, expanded to the batch
    batch = g.op("Slice", [g.op("Shape", [x], "/embeddings/Shape"), g.const("zero1", np.array([0], np.int64)),
                           g.const("one1", np.array([1], np.int64))], "/embeddings/batch")
    cls_shape = g.op("Concat", [batch, g.const("cls_tail", np.array([1, width], np.int64))], "/embeddings/cls_shape",
                     axis=0)
    cls = g.const("embeddings.cls_token", rng.standard_normal((1, 1, width)).astype(np.float32))
    cls = g.op("Expand", [cls, cls_shape], "/embeddings/cls/Expand")
    seq = g.op("Concat", [cls, tokens], "/embeddings/Concat", axis=1)
    # position embedding: native 4x4 grid resized bicubically to the input's grid
    pos_grid = g.const("embeddings.position_grid",
                       (0.5 * rng.standard_normal((1, width, NATIVE_GRID, NATIVE_GRID))).astype(np.float32))
    pos_cls = g.const("embeddings.position_cls", (0.5 * rng.standard_normal((1, 1, width))).astype(np.float32))
    hw = g.op("Slice", [g.op("Shape", [conv], "/embeddings/grid/Shape"), g.const("two1", np.array([2], np.int64)),
                        g.const("four1", np.array([4], np.int64))], "/embeddings/grid/hw")
    sizes = g.op("Concat", [g.const("pos_head", np.array([1, width], np.int64)), hw], "/embeddings/grid/sizes", axis=0)
    pos = g.op("Resize", [pos_grid, "", "", sizes], "/embeddings/position/Resize", mode="cubic",
               cubic_coeff_a=-0.75, coordinate_transformation_mode="half_pixel")
    pos = g.op("Reshape", [pos, g.const("pos_flat", np.array([1, width, -1], np.int64))], "/embeddings/position/Reshape")
    pos = g.op("Transpose", [pos], "/embeddings/position/Transpose", perm=[0, 2, 1])
    pos = g.op("Concat", [pos_cls, pos], "/embeddings/position/Concat", axis=1)
    x = g.op("Add", [seq, pos], "/embeddings/Add")
    # blocks
    hidden = []
    for k in range(depth):
        x = block(g, x, k, width, heads, rng)
        hidden.append(x)
    # final LayerNorm (shared weights) applied to every exported block; CLS dropped
    fw = g.const("layernorm.weight", (1.0 + 0.1 * rng.standard_normal(width)).astype(np.float32))
    fb = g.const("layernorm.bias", (0.1 * rng.standard_normal(width)).astype(np.float32))
    outputs = []
    big = np.array([np.iinfo(np.int64).max], np.int64)
    for k, h in enumerate(hidden, start=1):
        n = g.op("LayerNormalization", [h, fw, fb], f"/layernorm/block{k}", axis=-1, epsilon=1e-6)
        name = f"layer_{k}"
        g.nodes.append(helper.make_node("Slice", [n, g.const("one_s", np.array([1], np.int64)),
                                                  g.const("end_s", big), g.const("axis1", np.array([1], np.int64))],
                                        [name], name=f"/output/{name}"))
        outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", "patches", width]))
        if k == depth:
            g.nodes.append(helper.make_node("Gather", [n, g.const("zero", np.array(0, np.int64))], ["cls"],
                                            name="/output/cls", axis=1))
    outputs.append(helper.make_tensor_value_info("cls", TensorProto.FLOAT, ["batch", width]))
    inp = helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["batch", 3, "height", "width"])
    # deduplicate initializers that were declared twice under the same name (shared constants)
    seen, inits = set(), []
    for t in g.inits:
        if t.name not in seen:
            seen.add(t.name)
            inits.append(t)
    graph = helper.make_graph(g.nodes, "tiny_vit14", [inp], outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="mri-ad scripts/make_tiny_vit.py")
    model.ir_version = 8
    model.doc_string = (f"tiny random ViT/14 for tests: depth {depth}, width {width}, heads {heads}, seed {seed}; "
                        "mri-ad model contract")
    onnx.checker.check_model(model, full_check=True)
    return model


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--heads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    model = build(a.depth, a.width, a.heads, a.seed)
    tmp = a.out + ".tmp"
    onnx.save(model, tmp)
    os.replace(tmp, a.out)
    print(a.out)


if __name__ == "__main__":
    main()
