"""Build the MobileNetV2 sample on demand: keras.applications architecture, weights=None, fixed seed, 224x224x3.

It is for performance work, so it is built and cached (sample_models/mobilenet_v2.keras, git-ignored),
never committed and never downloaded. Run: python sample_models/build_mobilenet.py [OUT.keras]
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_PATH = HERE / "mobilenet_v2.keras"
SEED = 1234


def build(path: Path = DEFAULT_PATH, force: bool = False) -> Path:
    """Return the path of the cached model, building it first if it is missing."""
    path = Path(path)
    if path.exists() and not force:
        return path
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    keras.utils.set_random_seed(SEED)
    inp = keras.Input((224, 224, 3), name="image")
    model = keras.applications.MobileNetV2(input_tensor=inp, weights=None, classes=1000)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial.keras")
    model.save(tmp)
    os.replace(tmp, path)
    return path


if __name__ == "__main__":
    print(build(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_PATH))
