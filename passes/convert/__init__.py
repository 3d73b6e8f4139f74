"""Conversion passes: Keras/SavedModel to a TF Serving SavedModel (savedmodel.py), to ONNX with tf2onnx (onnx.py) and
to TFLite (tflite.py); TFLite to ONNX. Every TensorFlow-side conversion starts from one serving function (serving.py),
so every artifact exposes the model's own input and output names.
"""
from mdeploy.passes.convert.onnx import ToOnnx
from mdeploy.passes.convert.savedmodel import ToSavedModel
from mdeploy.passes.convert.serving import serving_function
from mdeploy.passes.convert.tflite import ToTflite, tflite_converter, write_tflite

__all__ = ["ToOnnx", "ToSavedModel", "ToTflite", "serving_function", "tflite_converter", "write_tflite"]
