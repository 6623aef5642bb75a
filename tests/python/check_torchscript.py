"""Loads an exported AlexNet TorchScript file with stock PyTorch and runs it.

Usage: check_torchscript.py MODEL.pt INPUT.bin N C H W OUT_DIR

INPUT.bin holds N*C*H*W little-endian float32 values. Writes to OUT_DIR:
logits.bin and features.bin (row-major, float64, computed in the weights' floating type), and attributes.json with the model's
attributes, its state_dict keys and the PyTorch version. Used by tests/test_export.cpp.
"""
import json
import os
import sys

import torch


def main(argv):
    if len(argv) != 8:
        sys.exit(__doc__)
    model_path, input_path = argv[1], argv[2]
    shape = [int(v) for v in argv[3:7]]
    out_dir = argv[7]

    model = torch.jit.load(model_path, map_location="cpu")
    model.eval()
    with open(input_path, "rb") as f:
        data = bytearray(f.read())
    dtype = next(model.parameters()).dtype
    x = torch.frombuffer(data, dtype=torch.float32).reshape(shape).clone().to(dtype)
    with torch.no_grad():
        logits = model(x)
        features = model.features(x)
    for name, tensor in (("logits", logits), ("features", features)):
        with open(os.path.join(out_dir, name + ".bin"), "wb") as f:
            f.write(tensor.contiguous().to(torch.float64).numpy().tobytes())
    attributes = {
        "torch_version": torch.__version__,
        "training": [bool(m.training) for m in model.modules()],
        "class_names": list(model.class_names),
        "image_size": int(model.image_size),
        "resize_size": int(model.resize_size),
        "in_channels": int(model.in_channels),
        "num_classes": int(model.num_classes),
        "mean": [float(v) for v in model.mean],
        "std": [float(v) for v in model.std],
        "model_options": json.loads(model.model_options),
        "state_dict_keys": list(model.state_dict().keys()),
        "logits_shape": list(logits.shape),
        "features_shape": list(features.shape),
    }
    with open(os.path.join(out_dir, "attributes.json"), "w") as f:
        json.dump(attributes, f)


if __name__ == "__main__":
    main(sys.argv)
