#!/usr/bin/env python3
"""Exports a genuine DINOv2 backbone (ViT-S/14, B/14, L/14 or g/14) to the mri-ad model contract (onnx/README.md).

FOR USERS WITH INTERNET ACCESS AND PyTorch. It was written without being able to run it (the machines this
project is developed on have no internet access and no torch); the offline default model comes from
scripts/setup/build_default_model.py instead. Check its output with `--check` (compares the ONNX outputs against
PyTorch on random inputs at two sizes).

Needs: torch (and, for --source hf, transformers); onnx and onnxruntime for --check.

  --source hf   transformers.Dinov2Model.from_pretrained('facebook/dinov2-{small,base,large,giant}') (default;
                recent transformers resize the position grid by size, which traces into the graph)
  --source hub  torch.hub.load('facebookresearch/dinov2', 'dinov2_vit{s,b,l,g}14') (the original code; its
                "+0.1" interpolation offset is switched off so the graph stays size-independent)

Contract: input `pixel_values` f32 [B, 3, H, W] (ImageNet mean/std normalised by the caller; H, W multiples
of 14); outputs `layer_<k>` f32 [B, (H/14)(W/14), C] for each block k of --blocks (1-based): the hidden state
after block k passed through the model's final LayerNorm (learned affine), CLS (and register tokens) dropped;
and `cls` f32 [B, C], the final LayerNorm of the last block's CLS token. The position embeddings are
interpolated inside the graph, so the exported file works at any multiple of 14.

Default blocks: ViT-S/B 3,6,9,12; ViT-L 6,12,18,24; ViT-g 10,20,30,40.

Usage: export_dinov2.py --arch vits14 [--source hub|hf] [--blocks 3,6,9,12] [--out onnx/dinov2_vits14.onnx]
                        [--opset 17] [--check]
"""
import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEPTH = {"vits14": 12, "vitb14": 12, "vitl14": 24, "vitg14": 40}
HF_NAME = {"vits14": "facebook/dinov2-small", "vitb14": "facebook/dinov2-base",
           "vitl14": "facebook/dinov2-large", "vitg14": "facebook/dinov2-giant"}
DEFAULT_BLOCKS = {"vits14": [3, 6, 9, 12], "vitb14": [3, 6, 9, 12], "vitl14": [6, 12, 18, 24],
                  "vitg14": [10, 20, 30, 40]}


def build_wrapper(arch, source, blocks):
    import torch

    class HubWrapper(torch.nn.Module):
        """facebookresearch/dinov2: get_intermediate_layers(n=[0-based indices], norm=True) applies the
        final LayerNorm and drops CLS and register tokens."""

        def __init__(self):
            super().__init__()
            self.model = torch.hub.load("facebookresearch/dinov2", f"dinov2_{arch}")
            self.model.eval()
            # DINOv2's "+0.1" trick resizes the position grid with a scale factor computed in Python floats,
            # which tracing freezes to the export size. Without the offset the grid is resized to (H/14, W/14)
            # by size, which traces into the graph (as in Hugging Face's current Dinov2Model and the default
            # model), so the file works at every multiple of 14; the sampling differs by a sub-pixel shift.
            if hasattr(self.model, "interpolate_offset"):
                self.model.interpolate_offset = 0.0
            self.idx = [k - 1 for k in blocks]

        def forward(self, pixel_values):
            outs = self.model.get_intermediate_layers(pixel_values, n=self.idx, reshape=False,
                                                      return_class_token=True, norm=True)
            patches = [p for p, _ in outs]
            # CLS of the last block, final LayerNorm applied (forward_features' x_norm_clstoken)
            cls = self.model.forward_features(pixel_values)["x_norm_clstoken"]
            return (*patches, cls)

    class HfWrapper(torch.nn.Module):
        """Hugging Face Dinov2Model: hidden_states[k] is the output of block k (hidden_states[0] = embeddings);
        model.layernorm is the final LayerNorm. The position embeddings are interpolated bicubically in
        Dinov2Embeddings.interpolate_pos_encoding, traced into the graph."""

        def __init__(self):
            super().__init__()
            from transformers import Dinov2Model
            self.model = Dinov2Model.from_pretrained(HF_NAME[arch])
            self.model.eval()

        def forward(self, pixel_values):
            out = self.model(pixel_values=pixel_values, output_hidden_states=True)
            hs = out.hidden_states
            norm = self.model.layernorm
            patches = [norm(hs[k])[:, 1:, :] for k in blocks]
            cls = norm(hs[-1])[:, 0, :]
            return (*patches, cls)

    return HubWrapper() if source == "hub" else HfWrapper()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", choices=sorted(DEPTH), default="vits14")
    ap.add_argument("--source", choices=["hub", "hf"], default="hf")
    ap.add_argument("--blocks", help="1-based blocks to export (default depends on --arch)")
    ap.add_argument("--out")
    ap.add_argument("--opset", type=int, default=17)
    ap.add_argument("--check", action="store_true", help="compare ONNX Runtime against PyTorch at 224 and 168 px")
    a = ap.parse_args()
    blocks = [int(b) for b in a.blocks.split(",")] if a.blocks else DEFAULT_BLOCKS[a.arch]
    if min(blocks) < 1 or max(blocks) > DEPTH[a.arch]:
        sys.exit(f"--blocks must lie in 1..{DEPTH[a.arch]} for {a.arch}")
    out = a.out or os.path.join(ROOT, "onnx", f"dinov2_{a.arch}.onnx")
    try:
        import torch
    except ImportError:
        sys.exit("this script needs PyTorch (pip install torch) and internet access to fetch the weights")
    wrapper = build_wrapper(a.arch, a.source, blocks)
    names = [f"layer_{k}" for k in blocks] + ["cls"]
    x = torch.randn(2, 3, 224, 224)
    dyn = {"pixel_values": {0: "batch", 2: "height", 3: "width"}}
    dyn.update({n: {0: "batch", 1: "patches"} for n in names[:-1]})
    dyn["cls"] = {0: "batch"}
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    tmp = out + ".tmp"
    kwargs = dict(input_names=["pixel_values"], output_names=names, dynamic_axes=dyn, opset_version=a.opset,
                  do_constant_folding=True)
    with torch.no_grad():
        try:
            torch.onnx.export(wrapper, (x,), tmp, dynamo=False, **kwargs)  # torch >= 2.5: choose the tracer
        except TypeError:
            torch.onnx.export(wrapper, (x,), tmp, **kwargs)
    import onnx
    m = onnx.load(tmp, load_external_data=False)
    for key, value in [("mri_ad.source", f"dinov2_{a.arch} via {a.source}"), ("mri_ad.blocks", ",".join(map(str, blocks))),
                       ("mri_ad.normalisation", "ImageNet mean (0.485,0.456,0.406) std (0.229,0.224,0.225)")]:
        p = m.metadata_props.add()
        p.key, p.value = key, value
    external = a.arch == "vitg14"  # ViT-g (1.1 B parameters) exceeds protobuf's 2 GB limit
    m = onnx.load(tmp) if external else m
    onnx.save(m, tmp, save_as_external_data=external, location=os.path.basename(out) + ".data" if external else None)
    os.replace(tmp, out)
    print(f"wrote {out}{' (+ ' + out + '.data)' if external else ''}", file=sys.stderr)
    if a.check:
        import numpy as np
        import onnxruntime as ort
        sess = ort.InferenceSession(out, providers=["CPUExecutionProvider"])
        worst = 0.0
        for size in (224, 168):
            xi = torch.randn(2, 3, size, size)
            with torch.no_grad():
                ref = [t.numpy() for t in wrapper(xi)]
            got = sess.run(names, {"pixel_values": xi.numpy()})
            for n, r, g in zip(names, ref, got):
                d = float(np.abs(r - g).max())
                worst = max(worst, d)
                print(f"size {size}: {n} {list(g.shape)} max abs diff vs PyTorch {d:.2e}")
        print("PASS" if worst <= 1e-3 else "FAIL", f"(worst {worst:.2e}, tolerance 1e-3)")
        sys.exit(0 if worst <= 1e-3 else 1)
    print(out)


if __name__ == "__main__":
    main()
