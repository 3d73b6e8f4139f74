"""Rebuild the digits sample deterministically: a small CNN on scikit-learn's bundled 8x8 digits.

Writes digits.keras, digits_calibration.npz and digits_validation.npz beside this script.
The data ships inside scikit-learn, so nothing is downloaded. Run: python sample_models/build_digits.py
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEED = 1234
INPUT_NAME = "image"


def load_splits():
    """Return (x_train, y_train), (x_cal, y_cal), (x_val, y_val) with x in [0, 1], NHWC float32."""
    import numpy as np
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images.astype(np.float32) / 16.0)[..., None]
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(SEED).permutation(len(x))
    x, y = x[order], y[order]
    # 1,797 samples: 1,497 train, whose last 300 are the calibration split, and 300 held out.
    return (x[:1497], y[:1497]), (x[1197:1497], y[1197:1497]), (x[1497:], y[1497:])


def build(out_dir: Path = HERE) -> float:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_DETERMINISTIC_OPS", "1")
    import keras
    import numpy as np

    keras.utils.set_random_seed(SEED)
    (xt, yt), (xc, yc), (xv, yv) = load_splits()
    inp = keras.Input((8, 8, 1), name=INPUT_NAME)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1")(inp)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2")(x)
    x = keras.layers.MaxPooling2D(name="pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(64, activation="relu", name="dense1")(x)
    out = keras.layers.Dense(10, activation="softmax", name="probs")(x)
    model = keras.Model(inp, out, name="digits_cnn")
    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(xt, yt, epochs=30, batch_size=32, verbose=0, shuffle=True)
    acc = float(np.mean(np.argmax(model.predict(xv, verbose=0), -1) == yv))
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save(out_dir / "digits.keras")
    np.savez(out_dir / "digits_calibration.npz", **{INPUT_NAME: xc, "labels": yc})
    np.savez(out_dir / "digits_validation.npz", **{INPUT_NAME: xv, "labels": yv})
    return acc


if __name__ == "__main__":
    accuracy = build(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
    print(f"held-out accuracy: {accuracy:.4f}")
    if accuracy < 0.95:
        sys.exit("digits model below 95% held-out accuracy")
