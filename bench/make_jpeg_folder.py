#!/usr/bin/python3
"""Writes a folder of synthetic JPEGs of ImageNet-like sizes for the input-pipeline benchmark:
OUT/class_XX/img_YYYY.jpg, smooth colour gradients with shapes and noise (so that they
compress like photographs rather than flat colour), quality 90. With --large F, a fraction F of
the images are large photos, 1,500 to 4,000 pixels on a side, as in ImageNet's long tail.

Usage: make_jpeg_folder.py OUT [--classes 10] [--per-class 32] [--large 0.0] [--seed 0]
"""
import argparse
import os

import numpy as np
from PIL import Image, ImageDraw

# Common ImageNet sizes (width, height).
SIZES = [(500, 375), (375, 500), (500, 333), (500, 400), (640, 480), (500, 500)]


def large_size(rng):
    """(width, height) of a large photo: the longer side 2,000..4,000, the shorter at least
    1,500, landscape or portrait in the common aspect ratios."""
    longer = int(rng.integers(2000, 4001))
    shorter = max(1500, int(longer / [1.0, 4 / 3, 3 / 2][rng.integers(3)]))
    return (longer, shorter) if rng.random() < 0.7 else (shorter, longer)


def make_image(rng, width, height):
    # Features scale with the image, so a large photo is a sharper view of a similar scene.
    scale = max(width, height) / 500
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    phase = rng.uniform(0, 6.28, size=3)
    freq = rng.uniform(0.005, 0.03, size=3) / scale
    channels = [127 + 100 * np.sin(freq[c] * (x * np.cos(phase[c]) + y * np.sin(phase[c])) +
                                   phase[c]) for c in range(3)]
    noise = rng.standard_normal(size=(height, width, 3), dtype=np.float32) * 12
    pixels = np.stack(channels, axis=-1) + noise
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(8):
        x0, y0 = rng.integers(0, width), rng.integers(0, height)
        x1 = x0 + int(rng.integers(20, 200) * scale)
        y1 = y0 + int(rng.integers(20, 200) * scale)
        fill = tuple(int(v) for v in rng.integers(0, 256, size=3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x0, y0, x1, y1], fill=fill)
    return image


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--per-class", type=int, default=32)
    parser.add_argument("--large", type=float, default=0.0,
                        help="fraction of large photos (1,500-4,000 pixels on a side)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not 0 <= args.large <= 1:
        parser.error(f"--large must be a fraction in 0..1, got {args.large}")
    rng = np.random.default_rng(args.seed)
    large = 0
    for c in range(args.classes):
        folder = os.path.join(args.out, f"class_{c:02d}")
        os.makedirs(folder, exist_ok=True)
        for i in range(args.per_class):
            if rng.random() < args.large:
                width, height = large_size(rng)
                large += 1
            else:
                width, height = SIZES[rng.integers(len(SIZES))]
            make_image(rng, width, height).save(os.path.join(folder, f"img_{i:04d}.jpg"),
                                                quality=90)
    print(f"{args.classes * args.per_class} JPEGs in {args.out} ({large} large)")


if __name__ == "__main__":
    main()
