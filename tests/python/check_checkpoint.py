"""Loads an alexnet-cpp checkpoint with stock PyTorch, as plain data (weights_only=True).

Usage: check_checkpoint.py CHECKPOINT.pt OUT.json

Writes OUT.json with the checkpoint's format, version and step, its class names, the keys of
its model and optimizer dicts, the first value of model["conv1.weight"] (as a float64 repr,
exact) and the PyTorch version. Used by tests/test_checkpoint.cpp.
"""
import json
import sys

import torch


def main(argv):
    if len(argv) != 3:
        sys.exit(__doc__)
    checkpoint = torch.load(argv[1], map_location="cpu", weights_only=True)
    weight = checkpoint["model"]["conv1.weight"]
    summary = {
        "format": checkpoint["format"],
        "version": checkpoint["version"],
        "step": checkpoint["step"],
        "class_names": checkpoint["class_names"],
        "model_keys": list(checkpoint["model"]),
        "optimizer_keys": list(checkpoint["optimizer"]),
        "conv1_weight_shape": list(weight.shape),
        "conv1_weight_first": repr(weight.flatten()[0].item()),
        "config": json.loads(checkpoint["config"]),
        "torch_version": torch.__version__,
    }
    with open(argv[2], "w") as f:
        json.dump(summary, f)


if __name__ == "__main__":
    main(sys.argv)
