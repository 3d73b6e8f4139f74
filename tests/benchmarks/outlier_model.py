"""A small digits classifier whose plain int8 misses a 1-point budget: one hidden layer has a few huge outlier channels.

The model is trained on the digits sample (scikit-learn's bundled 8x8 digits, nothing downloaded), then made
outlier-heavy without changing what it computes: ReLU is positively homogeneous, so scaling a few units of hidden
layer `dense5` by OUTLIER and the matching input rows of the next layer by 1/OUTLIER gives the same float outputs,
while that activation tensor now spans OUTLIER times its usual range. One per-tensor int8 scale for it rounds every
ordinary channel to zero and the quantized model collapses; keeping its consumer in float recovers it. Real models
(LLMs, magika) show the same few-channel outliers.

Run: python tests/benchmarks/outlier_model.py OUTDIR [FILTERS UNITS]  (writes outlier.keras, outlier_calibration.npz, outlier_validation.npz)
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

OUTLIER = 2000.0
CONVS, DENSES = 6, 9  # ~20 quantized nodes, so that 2 in float is 10%
OUTLIER_UNITS = (3, 17, 41)
OUTLIER_LAYER = 5  # dense5 gets the outlier channels; dense6 compensates
SEED = 7


def build(out_dir: Path, epochs: int = 12, batch_size: int = 32, lr: float = 2e-3, filters: int = 16,
          units: int = 64) -> dict[str, float]:
    """Train, add the outliers, save. `filters`/`units` widen the convs/denses (64/256: a model where int8 is
    faster than float on a CPU, for the latency comparison)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import numpy as np

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "sample_models"))
    try:
        from build_digits import INPUT_NAME, load_splits
    finally:
        sys.path.pop(0)
    keras.utils.set_random_seed(SEED)
    (xt, yt), (xc, yc), (xv, yv) = load_splits()
    inp = keras.Input((8, 8, 1), name=INPUT_NAME)
    x = inp
    for i in range(CONVS):  # a pool halfway and at the end: 8x8 -> 4x4 -> 2x2
        x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"conv{i + 1}")(x)
        if i + 1 in (CONVS // 2, CONVS):
            x = keras.layers.MaxPooling2D(name=f"pool{i + 1}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    for i in range(DENSES):
        x = keras.layers.Dense(units, activation="relu", name=f"dense{i + 1}")(x)
    out = keras.layers.Dense(10, activation="softmax", name="probs")(x)
    model = keras.Model(inp, out, name="digits_outlier")
    model.compile(optimizer=keras.optimizers.Adam(lr), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(xt, yt, epochs=epochs, batch_size=batch_size, verbose=0, shuffle=True)
    before = float(np.mean(np.argmax(model.predict(xv, verbose=0), -1) == yv))

    picked = list(OUTLIER_UNITS)
    k2, b2 = model.get_layer(f"dense{OUTLIER_LAYER}").get_weights()
    k2[:, picked] *= OUTLIER
    b2[picked] *= OUTLIER
    model.get_layer(f"dense{OUTLIER_LAYER}").set_weights([k2, b2])
    k3, b3 = model.get_layer(f"dense{OUTLIER_LAYER + 1}").get_weights()
    k3[picked, :] /= OUTLIER
    model.get_layer(f"dense{OUTLIER_LAYER + 1}").set_weights([k3, b3])
    after = float(np.mean(np.argmax(model.predict(xv, verbose=0), -1) == yv))

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save(out_dir / "outlier.keras")
    np.savez(out_dir / "outlier_calibration.npz", **{INPUT_NAME: xc, "labels": yc})
    np.savez(out_dir / "outlier_validation.npz", **{INPUT_NAME: xv, "labels": yv})
    return {"accuracy": before, "accuracy_with_outliers": after}


if __name__ == "__main__":  # OUTDIR [FILTERS UNITS]
    # wide (e.g. 128 512) needs a smaller learning rate: at 2e-3 the 15-layer ReLU stack does not train
    wide = {"filters": int(sys.argv[2]), "units": int(sys.argv[3]), "lr": 5e-4} if len(sys.argv) > 3 else {}
    print(build(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("outlier-model"), **wide))
