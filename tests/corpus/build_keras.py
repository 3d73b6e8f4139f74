"""Trained Keras 3 models of the common kinds for the real-model corpus, built once into a cache.

    python tests/corpus/build_keras.py [--dir DIR] [--force]

Each model trains for a few seconds on scikit-learn's bundled data (digits, diabetes) or generated
sequences, and is saved as DIR/<name>.keras with DIR/<name>.npz holding 32 realistic input samples keyed by
input name (for --data / --calibration). DIR defaults to $MDEPLOY_CORPUS_DIR/keras or
sample_models/.cache/corpus/keras. The custom layer and the subclassed model are registered under the
package "mdeploy_corpus": importing this module registers them, as a user's own code would.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402  (after the log level, which TensorFlow reads at import)


def keras_dir() -> Path:
    base = os.environ.get("MDEPLOY_CORPUS_DIR")
    return (Path(base) if base else REPO / "sample_models" / ".cache" / "corpus") / "keras"


@keras.saving.register_keras_serializable(package="mdeploy_corpus")
class ScaledDense(keras.layers.Layer):
    """A Dense layer with a learned output scale: a custom layer a user would write."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(input_shape[-1], self.units), initializer="glorot_uniform", name="kernel")
        self.scale = self.add_weight(shape=(self.units,), initializer="ones", name="scale")

    def call(self, x):
        return keras.ops.relu(keras.ops.matmul(x, self.kernel)) * self.scale

    def get_config(self):
        return {**super().get_config(), "units": self.units}


@keras.saving.register_keras_serializable(package="mdeploy_corpus")
class DigitsMLP(keras.Model):
    """A subclassed model (no functional graph): call() defines it."""

    def __init__(self, hidden=32, classes=10, **kwargs):
        super().__init__(**kwargs)
        self.hidden, self.classes = hidden, classes
        self.d1 = keras.layers.Dense(hidden, activation="relu")
        self.d2 = keras.layers.Dense(classes, activation="softmax")

    def call(self, x):
        return self.d2(self.d1(x))

    def get_config(self):
        return {"hidden": self.hidden, "classes": self.classes}


def _digits():
    from sklearn.datasets import load_digits
    d = load_digits()
    return (d.data / 16.0).astype("float32"), d.target.astype("int32")


def _sequences(n=512, length=20, vocab=100, seed=0):
    # label: whether token 7 appears in the sequence, so the recurrent layer has something to learn
    rng = np.random.default_rng(seed)
    x = rng.integers(1, vocab, size=(n, length)).astype("int32")
    y = (x == 7).any(axis=1).astype("int32")
    return x, y


def build_normalization():
    x, y = _digits()
    x = x * 16.0  # raw 0..16 pixels: the model normalizes them itself
    norm = keras.layers.Normalization(name="norm")
    norm.adapt(x)
    inp = keras.Input((64,), name="pixels")
    out = keras.layers.Dense(10, activation="softmax")(keras.layers.Dense(32, activation="relu")(norm(inp)))
    model = keras.Model(inp, out, name="normalization_mlp")
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=3, verbose=0)
    return model, {"pixels": x[-32:]}


def _recurrent(cell):
    x, y = _sequences()
    inp = keras.Input((20,), dtype="int32", name="tokens")
    h = keras.layers.Embedding(100, 16)(inp)
    h = cell(16)(h)
    out = keras.layers.Dense(1, activation="sigmoid")(h)
    model = keras.Model(inp, out)
    model.compile("adam", "binary_crossentropy")
    model.fit(x, y, epochs=2, verbose=0)
    return model, {"tokens": x[-32:]}


def build_lstm():
    return _recurrent(keras.layers.LSTM)


def build_gru():
    return _recurrent(keras.layers.GRU)


def build_multi_io():
    x, y = _digits()
    img = x.reshape(-1, 8, 8, 1)
    meta = np.stack([x.mean(1), x.std(1), x[:, :32].mean(1), x[:, 32:].mean(1)], axis=1).astype("float32")
    i1 = keras.Input((8, 8, 1), name="image")
    i2 = keras.Input((4,), name="meta")
    h = keras.layers.Flatten()(keras.layers.Conv2D(8, 3, activation="relu")(i1))
    h = keras.layers.Concatenate()([h, i2])
    h = keras.layers.Dense(32, activation="relu")(h)
    cls = keras.layers.Dense(10, activation="softmax", name="digit")(h)
    reg = keras.layers.Dense(1, name="ink")(h)
    model = keras.Model([i1, i2], [cls, reg])
    model.compile("adam", {"digit": "sparse_categorical_crossentropy", "ink": "mse"})
    model.fit({"image": img, "meta": meta}, {"digit": y, "ink": x.mean(1)}, epochs=2, verbose=0)
    return model, {"image": img[-32:], "meta": meta[-32:]}


def build_regressor():
    from sklearn.datasets import load_diabetes
    d = load_diabetes()
    x = d.data.astype("float32")
    y = ((d.target - d.target.mean()) / d.target.std()).astype("float32")
    inp = keras.Input((10,), name="features")
    out = keras.layers.Dense(1, name="progression")(keras.layers.Dense(32, activation="relu")(inp))
    model = keras.Model(inp, out)
    model.compile("adam", "mse")
    model.fit(x, y, epochs=5, verbose=0)
    return model, {"features": x[-32:]}


def build_custom_layer():
    x, y = _digits()
    inp = keras.Input((64,), name="pixels")
    out = keras.layers.Dense(10, activation="softmax")(ScaledDense(32)(inp))
    model = keras.Model(inp, out)
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=3, verbose=0)
    return model, {"pixels": x[-32:]}


def build_subclassed():
    x, y = _digits()
    model = DigitsMLP()
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=3, verbose=0)
    return model, {"input": x[-32:]}


def build_dynamic_cnn():
    x, y = _digits()
    img = np.repeat(x.reshape(-1, 8, 8, 1), 3, axis=-1)
    inp = keras.Input((None, None, 3), name="image")
    # a valid convolution, as most CNNs have: it needs at least 3x3 inputs, so 1x1 generated inputs fail
    h = keras.layers.Conv2D(8, 3, padding="valid", activation="relu")(inp)
    h = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(h)
    out = keras.layers.Dense(10, activation="softmax")(keras.layers.GlobalAveragePooling2D()(h))
    model = keras.Model(inp, out)
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(img, y, epochs=2, verbose=0)
    # realistic inputs at a size other than the training one: the model is meant for any size
    big = np.repeat(np.repeat(img[-32:], 4, axis=1), 4, axis=2)
    return model, {"image": big}


BUILDERS = {
    "keras-normalization": build_normalization,
    "keras-lstm": build_lstm,
    "keras-gru": build_gru,
    "keras-multi-io": build_multi_io,
    "keras-regressor": build_regressor,
    "keras-custom-layer": build_custom_layer,
    "keras-subclassed": build_subclassed,
    "keras-dynamic-cnn": build_dynamic_cnn,
}


def build_all(directory: Path | None = None, force: bool = False, only: set[str] | None = None) -> dict[str, Path]:
    """Build (or reuse) every Keras corpus model; returns name -> .keras path (the .npz sits beside it)."""
    directory = directory or keras_dir()
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, builder in BUILDERS.items():
        if only and name not in only:
            continue
        path = directory / f"{name}.keras"
        if force or not path.exists() or not path.with_suffix(".npz").exists():
            keras.utils.set_random_seed(0)
            model, samples = builder()
            np.savez(path.with_suffix(".npz"), **samples)
            model.save(path)
        paths[name] = path
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path)
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args()
    for name, path in build_all(args.dir, args.force).items():
        print(f"{name}: {path} ({path.stat().st_size / 1e3:.0f} KB)")


if __name__ == "__main__":
    main()
