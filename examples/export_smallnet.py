"""Writes examples/smallnet.onnx: the quick start's SmallNet (trained batch-norm statistics,
fixed seed), exported with a symbolic batch axis. The ONNX file is committed; this script is how
it was made.

    python examples/export_smallnet.py
"""

from __future__ import annotations

import os
import warnings

import torch

from quickstart import SmallNet


def main() -> None:
    torch.manual_seed(0)
    model = SmallNet()
    model.train()
    with torch.no_grad():
        for _ in range(5):
            model(torch.randn(8, 3, 32, 32))
    model.eval()
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "smallnet.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(1, 3, 32, 32),), path, dynamo=False, opset_version=17,
                          input_names=["image"], output_names=["probs"],
                          dynamic_axes={"image": {0: "batch"}, "probs": {0: "batch"}})
    print(f"wrote {path} ({os.path.getsize(path)} bytes)")


if __name__ == "__main__":
    main()
