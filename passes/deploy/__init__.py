"""Serving bundles: what `mdeploy bundle` writes for TF Serving, Triton, Kubernetes and KServe, each file checked
offline against its real schema before it is written (validate.py)."""
