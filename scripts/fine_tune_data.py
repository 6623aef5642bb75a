#!/usr/bin/env python3
"""Writes the two tasks of the fine-tuning experiment as image folders (PNG, 28x28 grey).

source/{train,val}/<class>/: Fashion-MNIST classes 0-4 (t-shirt, trouser, pullover, dress,
coat), TRAIN_PER_CLASS training images of each and the 1,000 test images of each.
target/{train,val}/<class>/: classes 5-9 (sandal, shirt, sneaker, bag, ankle boot), only
TARGET_PER_CLASS training images of each (drawn with a fixed seed) and the 1,000 test images
of each. The tasks share no class.

Usage: fine_tune_data.py OUT [TRAIN_PER_CLASS] [TARGET_PER_CLASS]  (defaults 2000, 200)
Standard library only; reads Debian's dataset-fashion-mnist.
"""
import gzip
import os
import random
import struct
import sys
import zlib

SOURCE_DIR = "/usr/share/datasets/fashion-mnist"
NAMES = ["t-shirt", "trouser", "pullover", "dress", "coat",
         "sandal", "shirt", "sneaker", "bag", "ankle-boot"]


def read_idx(name):
    for candidate in (name + ".gz", name):
        path = os.path.join(SOURCE_DIR, candidate)
        if os.path.exists(path):
            opener = gzip.open if path.endswith(".gz") else open
            with opener(path, "rb") as f:
                return f.read()
    sys.exit("fine_tune_data.py: no %s in %s (apt-get install dataset-fashion-mnist)"
             % (name, SOURCE_DIR))


def load(split):
    images = read_idx("%s-images-idx3-ubyte" % split)
    labels = read_idx("%s-labels-idx1-ubyte" % split)
    count, rows, cols = struct.unpack(">III", images[4:16])
    size = rows * cols
    pixels = [images[16 + i * size:16 + (i + 1) * size] for i in range(count)]
    return pixels, list(labels[8:8 + count]), rows, cols


def png(pixels, rows, cols):
    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))
    raw = b"".join(b"\x00" + pixels[r * cols:(r + 1) * cols] for r in range(rows))
    header = struct.pack(">IIBBBBB", cols, rows, 8, 0, 0, 0, 0)  # 8-bit grey
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
            + chunk(b"IEND", b""))


def write(folder, pixels, labels, indices, classes, rows, cols):
    for label in classes:
        os.makedirs(os.path.join(folder, NAMES[label]), exist_ok=True)
    for i in indices:
        path = os.path.join(folder, NAMES[labels[i]], "%05d.png" % i)
        with open(path, "wb") as f:
            f.write(png(pixels[i], rows, cols))


def per_class(labels, classes, n, rng):
    chosen = []
    for label in classes:
        members = [i for i, l in enumerate(labels) if l == label]
        chosen += sorted(rng.sample(members, n)) if n < len(members) else members
    return chosen


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    train_per_class = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    target_per_class = int(sys.argv[3]) if len(sys.argv) > 3 else 200
    train, train_labels, rows, cols = load("train")
    test, test_labels, _, _ = load("t10k")
    rng = random.Random(0)
    for task, classes, n in (("source", range(0, 5), train_per_class),
                             ("target", range(5, 10), target_per_class)):
        write(os.path.join(out, task, "train"), train, train_labels,
              per_class(train_labels, classes, n, rng), classes, rows, cols)
        write(os.path.join(out, task, "val"), test, test_labels,
              [i for i, l in enumerate(test_labels) if l in classes], classes, rows, cols)
        print("%s: classes %s, %d training images per class, %d test images"
              % (task, ", ".join(NAMES[c] for c in classes), n,
                 sum(1 for l in test_labels if l in classes)))


if __name__ == "__main__":
    main()
