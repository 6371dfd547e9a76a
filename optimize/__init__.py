"""Stage 2: prune, quantize and convert a trained run into deployable TFLite and ONNX artifacts,
each checked against its float32 parent in its own runtime."""
