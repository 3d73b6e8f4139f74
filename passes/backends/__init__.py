"""Runtimes and model readers, one per format (TensorFlow, ONNX Runtime, LiteRT), behind one table."""
