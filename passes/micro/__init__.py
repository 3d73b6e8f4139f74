"""Microcontroller builds: the C array, the op resolver, the measured tensor arena and the TFLM crosscheck."""
