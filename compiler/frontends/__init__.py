"""effc frontends: FX graphs from torch.compile (and ONNX, later) into effc IR."""
