"""Importing TensorFlow lazily and quietly: only the backends and passes that need it call `import_tf()`.

How quiet is decided once, by `configure_logging` (passes/core/logs.py) at the CLI edge.
"""
from __future__ import annotations

import logging
import sys

from mdeploy.passes.core.logs import is_quiet, quiet_native_stderr, stderr_fd_silenced

__all__ = ["import_keras", "import_tf", "quiet_native_stderr"]


def import_tf():
    """Import TensorFlow; when quiet, absl's import-time chatter on fd 2 is hidden and TF's loggers show errors only."""
    if "tensorflow" in sys.modules or not is_quiet():
        import tensorflow as tf  # noqa: PLC0415 - deliberately lazy
    else:
        # absl writes "could not find cuda drivers" and friends straight to fd 2 before any log level applies.
        with stderr_fd_silenced():
            import keras  # noqa: F401, PLC0415 - its import logs too
            import tensorflow as tf  # noqa: PLC0415
    if is_quiet():
        tf.get_logger().setLevel(logging.ERROR)
        tf.autograph.set_verbosity(0)
    return tf


def import_keras():
    import_tf()
    import keras  # noqa: PLC0415

    return keras
