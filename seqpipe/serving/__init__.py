"""Serving from exported ONNX files alone: onnxruntime sessions and streams, decoding, predictors.

Nothing here imports torch."""
