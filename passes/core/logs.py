"""Log noise from TensorFlow, absl, tf2onnx, ONNX Runtime and the TFLite converter: configured once per process.

The CLI calls `configure_logging(verbose)` at its edge, and a spawned branch process calls it again from its
Context. TensorFlow reads its C++ log level from the environment when it is imported, so the environment is
set here, before anything imports it. Python's logging module and the environment are process-wide by nature;
this module is their one writer.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings

QUIET_ENV = {"TF_CPP_MIN_LOG_LEVEL": "3", "TF_ENABLE_ONEDNN_OPTS": "0", "ABSL_MIN_LOG_LEVEL": "3", "GLOG_minloglevel": "3"}
NOISY_LOGGERS = ("tensorflow", "tf2onnx", "absl", "onnxruntime", "onnxruntime.quantization", "keras")


def configure_logging(verbose: bool) -> None:
    """Quiet by default: third-party loggers show errors only, and native libraries' fd-2 chatter is hidden."""
    if verbose:
        os.environ.pop("MDEPLOY_QUIET", None)
        return
    os.environ["MDEPLOY_QUIET"] = "1"  # read by quiet_native_stderr, and inherited by spawned processes
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    logging.getLogger().setLevel(logging.ERROR)  # onnxruntime.quantization gives its advice on the root logger
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL if name == "tf2onnx" else logging.ERROR)
    for module in ("tensorflow", "keras", "tf2onnx", "onnxruntime"):
        warnings.filterwarnings("ignore", module=module)


def is_quiet() -> bool:
    return os.environ.get("MDEPLOY_QUIET") == "1"


@contextlib.contextmanager
def stderr_fd_silenced():
    """Point fd 2 at /dev/null for the duration: native libraries write there directly, below Python's logging."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        _flush_stderr()
        os.dup2(devnull, 2)
        yield
    finally:
        _flush_stderr()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def quiet_native_stderr():
    """Silence native libraries' writes to fd 2 unless logging was configured verbose."""
    return stderr_fd_silenced() if is_quiet() else contextlib.nullcontext()


def _flush_stderr() -> None:
    try:
        sys.stderr.flush()
    except (AttributeError, ValueError):
        pass
