"""Fine-tuning after pruning: one settings value (FineTuning) that both Keras pruners hold, checked when it is made,
and the training code they share (compile with Adam and the model's own loss, then fit on labelled data).

Magnitude pruning (keras.py) fits with a callback that holds its masks; structured pruning (structured.py) fits the
smaller model as it is. TensorFlow and Keras are imported inside functions only.
"""
from __future__ import annotations

import json
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mdeploy.calibration import LABELS, collect, open_source
from mdeploy.passes.backends.tf_env import import_keras
from mdeploy.passes.core.artifact import Artifact
from mdeploy.passes.core.errors import BadInput

# the CLI flag of each option, for messages (the recipe spells them prune.<field>)
FLAGS = {"epochs": "--epochs", "batch_size": "--batch-size", "learning_rate": "--learning-rate", "loss": "--loss",
         "metric": "--metric"}


@dataclass(frozen=True)
class FineTuning:
    """Train the pruned Keras model on labelled data (Adam).

    Parameters:
      data: a labelled data spec (.npz with the inputs by name and `labels` or `y`).
      epochs, batch_size, learning_rate: the training run.
      loss, metric: default to the loss and metrics the model was compiled with (read from the file).
      seed: Keras' random seed, set before compiling (shuffling, dropout).
    """

    data: str
    epochs: int = 2
    batch_size: int = 32
    learning_rate: float = 1e-3
    loss: str | None = None
    metric: str | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        # Every way in (CLI, recipe, Python) makes this value, so the checks live here and nowhere else.
        if not isinstance(self.data, str) or not self.data:
            raise BadInput(f"fine-tuning needs a labelled data spec (--fine-tune DATA), got {self.data!r}",
                           "for example --fine-tune train.npz (inputs by name, labels under 'labels')")
        for name, minimum in (("epochs", 1), ("batch_size", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise BadInput(f"{FLAGS[name]} (recipe: prune.{name}) must be a whole number >= {minimum}, got {value!r}",
                               f"for example {FLAGS[name]} {3 if name == 'epochs' else 32}")
        lr = self.learning_rate
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
            raise BadInput(f"--learning-rate (recipe: prune.learning_rate) must be a positive number, got {lr!r}",
                           "for example --learning-rate 1e-4 (Adam)")
        for name in ("loss", "metric"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise BadInput(f"{FLAGS[name]} must name a Keras {name}, got {value!r}",
                               "for example --loss sparse_categorical_crossentropy --metric accuracy")


def fine_tuning_from(data: str | None, *, require_data: bool = False, seed: int = 0,
                     **options: Any) -> FineTuning | None:
    """FineTuning from options as written (None: FineTuning's default); None without `data`. The options are checked
    either way; with `require_data` (the CLI), options given without data are an error instead of being ignored."""
    given = {k: v for k, v in options.items() if v is not None}
    unknown = set(given) - set(FLAGS)
    if unknown:
        raise TypeError(f"unknown fine-tuning options: {', '.join(sorted(unknown))}")
    if data is not None:
        return FineTuning(data, seed=seed, **given)
    FineTuning("(no data)", seed=seed, **given)  # a bad value is refused even when it is unused
    if require_data and given:
        flags = ", ".join(FLAGS[k] for k in given)
        raise BadInput(f"{flags} tune fine-tuning, which needs --fine-tune DATA",
                       "add --fine-tune TRAIN.npz (labelled), or drop those options")
    return None


def keras_compile_config(path: Path) -> dict[str, Any]:
    """The loss and metrics the model was compiled with, read as JSON from the file (never unpickled)."""
    path = Path(path)
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                return json.loads(z.read("config.json")).get("compile_config") or {}
        import h5py

        with h5py.File(path, "r") as f:
            raw = f.attrs.get("training_config")
            if raw is None:
                return {}
            cfg = json.loads(raw if isinstance(raw, str) else raw.decode())
            metrics = cfg.get("metrics") or []
            if metrics and isinstance(metrics[0], list):  # per-output lists in Keras 2 files
                metrics = metrics[0]
            return {"loss": cfg.get("loss"), "metrics": metrics}
    except (OSError, KeyError, ValueError):
        return {}


def compile_for_fine_tuning(model, artifact: Artifact, tuning: FineTuning):
    """Read the labelled fine-tuning data and compile `model` with Adam and the loss/metrics given or saved in the
    file. Returns (x, y, loss, metrics)."""
    keras = import_keras()
    batches = collect(open_source(tuning.data, artifact.inputs, batch_size=tuning.batch_size))
    if LABELS not in batches:
        raise BadInput(f"{tuning.data}: no labels for fine-tuning",
                       "save the labels in the .npz under the key 'labels' (or 'y')")
    y = batches.pop(LABELS)
    x = [batches[t.name] for t in artifact.inputs]
    compiled = keras_compile_config(artifact.path)
    loss = tuning.loss or compiled.get("loss")
    if not loss:
        raise BadInput(f"{artifact.path} was saved without a compiled loss, so fine-tuning does not know what to minimise",
                       "pass --loss, e.g. --loss sparse_categorical_crossentropy")
    metrics = [tuning.metric] if tuning.metric else (compiled.get("metrics") or [])
    if isinstance(metrics, (str, dict)):
        metrics = [metrics]
    if isinstance(loss, dict):
        loss = keras.losses.deserialize(loss)
    keras.utils.set_random_seed(tuning.seed)
    try:
        model.compile(optimizer=keras.optimizers.Adam(tuning.learning_rate), loss=loss,
                      metrics=[m for m in metrics if m])
    except ValueError as e:
        raise BadInput(f"cannot compile the model for fine-tuning: {e}", "pass --loss and --metric explicitly") from e
    return x, y, loss, metrics


def loss_name(loss) -> str:
    return loss if isinstance(loss, str) else type(loss).__name__


def fit_model(model, artifact: Artifact, tuning: FineTuning, callbacks=()) -> dict[str, Any]:
    """Fine-tune `model` on `tuning.data`; returns what was done, for the report."""
    x, y, loss, _ = compile_for_fine_tuning(model, artifact, tuning)
    history = model.fit(x if len(x) > 1 else x[0], y, epochs=tuning.epochs, batch_size=tuning.batch_size, shuffle=True,
                        verbose=0, callbacks=list(callbacks))
    return {"epochs": tuning.epochs, "batch_size": tuning.batch_size, "learning_rate": tuning.learning_rate,
            "data": tuning.data, "loss": loss_name(loss), "samples": int(len(y)),
            "final_loss": round(float(history.history["loss"][-1]), 6)}
