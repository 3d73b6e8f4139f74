"""Signed over-the-air releases: the OTA manifest and model-signing signatures."""
