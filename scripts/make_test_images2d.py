#!/usr/bin/env python3
"""Tiny 2D image sets for tests/score2d.rs, written with Pillow (an encoder independent of mri-ad's).

Usage:
  make_test_images2d.py plain OUT     OUT/images/*.png (mixed sizes, textured grey), two with a bright blob;
                                      OUT/masks/ d0.png and d1_mask.png (255 = defect), same sizes
  make_test_images2d.py formats OUT   OUT/*: 8-bit grey PNG, 16-bit grey PNG, grey+alpha PNG, palette PNG,
                                      RGB PNG, RGBA PNG, RGB JPEG, 8-bit RGB TIFF, 16-bit grey TIFF
  make_test_images2d.py mvtec OUT     OUT/<class>/test/{good,crack}/NNN.png + ground_truth/crack/NNN_mask.png
                                      for two classes, `bottle` (grey) and `tile` (RGB)
  make_test_images2d.py background OUT  OUT/*.png: 6 textured ellipses (mixed sizes and positions, one RGB)
                                      on an exact-zero background, as a skull-stripped MRI slice

Every image is a smooth texture with mild noise (seeded), values well inside (0, 1); in `background` the
texture fills an ellipse and everything outside it is exactly 0.
"""
import os
import sys

import numpy as np
from PIL import Image


def texture(h, w, seed):
    r = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    t = 0.45 + 0.12 * np.sin(x * 0.45 + seed * 0.3) * np.cos(y * 0.35 - seed * 0.2) + 0.04 * r.standard_normal((h, w))
    return np.clip(t, 0.05, 0.95)


def blob(h, w, cy, cx, rad):
    y, x = np.mgrid[0:h, 0:w]
    return (y - cy) ** 2 + (x - cx) ** 2 <= rad ** 2


def u8(a):
    return np.round(np.clip(a, 0, 1) * 255).astype(np.uint8)


def plain(out):
    img_dir, mask_dir = os.path.join(out, "images"), os.path.join(out, "masks")
    os.makedirs(img_dir, exist_ok=True)
    os.makedirs(mask_dir, exist_ok=True)
    sizes = [(84, 84), (70, 98), (90, 76), (84, 84), (64, 100), (84, 84), (77, 91), (84, 84)]
    for i, (h, w) in enumerate(sizes):
        t = texture(h, w, i)
        name = f"n{i}"
        if i < 2:
            m = blob(h, w, h // 3 + 5 * i, w // 2, 11)
            t = np.where(m, 0.98, t)
            name = f"d{i}"
            mask_name = "d0.png" if i == 0 else "d1_mask.png"
            Image.fromarray(m.astype(np.uint8) * 255).save(os.path.join(mask_dir, mask_name))
        Image.fromarray(u8(t)).save(os.path.join(img_dir, f"{name}.png"))


def formats(out):
    os.makedirs(out, exist_ok=True)
    h, w = 60, 74
    g = texture(h, w, 1)
    rgb = np.stack([texture(h, w, 2), texture(h, w, 3) * 0.8, texture(h, w, 4)], axis=-1)
    Image.fromarray(u8(g)).save(os.path.join(out, "grey8.png"))
    Image.fromarray(np.round(texture(h, w, 5) * 65535).astype(np.uint16)).save(os.path.join(out, "grey16.png"))
    Image.fromarray(np.stack([u8(texture(h, w, 6)), np.full((h, w), 90, np.uint8)], -1), "LA").save(
        os.path.join(out, "greyalpha.png"))
    Image.fromarray(u8(rgb)).convert("P", palette=Image.Palette.ADAPTIVE, colors=64).save(
        os.path.join(out, "palette.png"))
    Image.fromarray(u8(rgb)).save(os.path.join(out, "rgb.png"))
    Image.fromarray(np.concatenate([u8(rgb[..., ::-1]), np.full((h, w, 1), 200, np.uint8)], -1), "RGBA").save(
        os.path.join(out, "rgba.png"))
    Image.fromarray(u8(rgb[:, ::-1])).save(os.path.join(out, "rgbj.jpg"), quality=92)
    Image.fromarray(u8(rgb[::-1])).save(os.path.join(out, "rgb8.tif"))
    Image.fromarray(np.round(texture(h, w, 7) * 65535).astype(np.uint16)).save(os.path.join(out, "grey16t.tif"))


def mvtec(out):
    for ci, cls in enumerate(["bottle", "tile"]):
        for defect, n in [("good", 4), ("crack", 2)]:
            d = os.path.join(out, cls, "test", defect)
            os.makedirs(d, exist_ok=True)
            for k in range(n):
                seed = 100 * ci + 10 * (defect == "crack") + k
                h, w = 70, 70
                t = texture(h, w, seed)
                if defect == "crack":
                    m = blob(h, w, 20 + 8 * k, 35, 9)
                    t = np.where(m, 0.97, t)
                    gt = os.path.join(out, cls, "ground_truth", defect)
                    os.makedirs(gt, exist_ok=True)
                    Image.fromarray(m.astype(np.uint8) * 255).save(os.path.join(gt, f"{k:03d}_mask.png"))
                img = u8(t) if cls == "bottle" else np.stack([u8(t), u8(t * 0.9), u8(1 - t)], -1)
                Image.fromarray(img).save(os.path.join(d, f"{k:03d}.png"))
        os.makedirs(os.path.join(out, cls, "train", "good"), exist_ok=True)


def background(out):
    os.makedirs(out, exist_ok=True)
    sizes = [(84, 84), (70, 98), (90, 76), (84, 84), (64, 100), (84, 84)]
    for i, (h, w) in enumerate(sizes):
        y, x = np.mgrid[0:h, 0:w]
        cy, cx = h / 2 + (i % 3) - 1, w / 2 + (i % 2) * 3
        inside = ((y - cy) / (0.36 * h)) ** 2 + ((x - cx) / (0.33 * w)) ** 2 <= 1
        t = np.where(inside, texture(h, w, 20 + i), 0.0)
        img = u8(t) if i != 4 else np.stack([u8(t), u8(t * 0.8), np.zeros((h, w), np.uint8)], -1)
        Image.fromarray(img).save(os.path.join(out, f"b{i}.png"))


if __name__ == "__main__":
    kinds = {"plain": plain, "formats": formats, "mvtec": mvtec, "background": background}
    kinds[sys.argv[1]](sys.argv[2])
