"""Defaults the command line shows in --help, in a module that imports nothing, so that `mdeploy COMMAND --help`
need not import the passes that use them (they import these from here)."""

DEFAULT_OPSET = 17  # ONNX opset of tf2onnx conversions
DEFAULT_SAMPLES = 200  # calibration samples for int8 when a command is given none
DEFAULT_MARGIN = 0.10  # TFLite Micro: headroom added to the measured tensor arena
