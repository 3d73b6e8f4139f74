"""Importing TensorFlow quietly and lazily: only the passes that need it call `import_tf()`.

TensorFlow's C++ log level is read from the environment at import time, so it must be set first.
"""
from __future__ import annotations

import contextlib
import logging
import os
import warnings

_verbose = False


def set_verbose(verbose: bool) -> None:
    global _verbose
    _verbose = verbose
    if not verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
        os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "3")
        os.environ.setdefault("GLOG_minloglevel", "3")


def import_tf():
    """Import TensorFlow with its Python and C++ logging silenced unless --verbose."""
    set_verbose(_verbose)
    import sys

    if "tensorflow" in sys.modules or _verbose:
        import tensorflow as tf  # noqa: PLC0415 - deliberately lazy
    else:
        # absl writes "could not find cuda drivers" and friends straight to fd 2 before any
        # log level applies; hide fd 2 for the import only.
        with _stderr_fd_silenced():
            import keras  # noqa: F401, PLC0415 - its import logs too
            import tensorflow as tf  # noqa: PLC0415

    if not _verbose:
        tf.get_logger().setLevel(logging.ERROR)
        tf.autograph.set_verbosity(0)
        logging.getLogger("tf2onnx").setLevel(logging.CRITICAL)  # it logs unsupported ops; we raise them named
        logging.getLogger("absl").setLevel(logging.ERROR)
        warnings.filterwarnings("ignore", module="tensorflow")
        warnings.filterwarnings("ignore", module="keras")
        warnings.filterwarnings("ignore", module="tf2onnx")
    return tf


@contextlib.contextmanager
def _stderr_fd_silenced():
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        sys_stderr_flush()
        os.dup2(devnull, 2)
        yield
    finally:
        sys_stderr_flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def quiet_native_stderr():
    """Silence native libraries' writes to fd 2 unless --verbose."""
    return contextlib.nullcontext() if _verbose else _stderr_fd_silenced()


def sys_stderr_flush() -> None:
    import sys

    try:
        sys.stderr.flush()
    except (AttributeError, ValueError):
        pass


def import_keras():
    import_tf()
    import keras  # noqa: PLC0415

    return keras
