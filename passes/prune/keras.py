"""Magnitude pruning of Keras 3 models: one-shot, or gradual during fine-tuning with masks held fixed between updates.

Dense, Conv (1D/2D/3D, transposed, depthwise, separable) and Embedding kernels are pruned; biases and
normalization layers never are. TensorFlow and Keras are imported inside functions only.
"""
from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from mdeploy.passes.backends.tensorflow import KerasWeight, load_keras_model, prunable_weights
from mdeploy.passes.backends.tf_env import import_keras
from mdeploy.passes.core.artifact import Artifact
from mdeploy.passes.core.errors import BadInput
from mdeploy.passes.core.fsio import atomic_output, ensure_writable
from mdeploy.passes.core.pipeline import Context, pass_params
from mdeploy.passes.prune.fine_tuning import FineTuning, compile_for_fine_tuning, loss_name
from mdeploy.passes.prune.masks import check_sparsity, choose_weights, masks_for, polynomial_sparsity, schedule_updates
from mdeploy.passes.prune.summary import compressed_size, pruning_summary, sparse_kernel_candidates


def _apply(weights: list[KerasWeight], masks: dict[str, np.ndarray]) -> None:
    for w in weights:
        value = np.asarray(w.variable.numpy())
        w.variable.assign((value * masks[w.name]).astype(value.dtype))


def _values(weights: list[KerasWeight]) -> dict[str, np.ndarray]:
    return {w.name: np.asarray(w.variable.numpy()) for w in weights}


@dataclass(frozen=True)
class PruneKeras:
    """Zero the smallest-magnitude kernel weights of a Keras model -> OUTDIR/keras/model.pruned.keras.

    Parameters:
      sparsity: fraction of the selected kernels' weights to zero, in [0, 1) (ignored with `pattern`).
      scope: "layer" (each kernel to `sparsity`) or "global" (one magnitude threshold across kernels).
      exclude: fnmatch patterns of layer names to keep dense.
      prune_first_last: also prune the first and last prunable layer (kept dense by default).
      pattern: "N:M" structured sparsity along the input dimension, e.g. "2:4".
      fine_tuning: train on labelled data (FineTuning, fine_tuning.py) while pruning gradually (Zhu & Gupta schedule).
      initial_sparsity, begin_step, end_step, frequency: the schedule, in optimizer steps (end_step default:
        75% of the steps, frequency default: a tenth of the pruning window).
    """

    name: ClassVar[str] = "prune.keras"
    accepts: ClassVar[tuple[str, ...]] = ("keras",)
    produces: ClassVar[str] = "keras"
    sparsity: float = 0.5
    scope: str = "layer"
    exclude: tuple[str, ...] = ()
    prune_first_last: bool = False
    pattern: str | None = None
    fine_tuning: FineTuning | None = None
    initial_sparsity: float = 0.0
    begin_step: int = 0
    end_step: int | None = None
    frequency: int | None = None
    file_name: str = "model.pruned.keras"

    def output_path(self, ctx: Context) -> Path:
        return Path(ctx.out_dir) / "keras" / self.file_name

    def run(self, artifact: Artifact, ctx: Context) -> Artifact:
        check_sparsity(self.initial_sparsity, "--initial-sparsity")
        final = self.output_path(ctx)
        ensure_writable(final, ctx.force)
        model = load_keras_model(artifact.path, trusted=artifact.trusted)
        all_weights = prunable_weights(model)
        if not all_weights:
            raise BadInput(f"{artifact.path}: no prunable layers (Dense, Conv, DepthwiseConv, SeparableConv, Embedding)",
                           "mdeploy prunes the kernels of those layers; this model has none")
        target, pattern, selected, skipped = choose_weights(
            all_weights, sparsity=self.sparsity, pattern=self.pattern, scope=self.scope, exclude=self.exclude,
            prune_first_last=self.prune_first_last, warn=ctx.warn, unit="layer")

        workdir = Path(tempfile.mkdtemp(prefix="mdeploy-prune-"))
        try:
            # The dense baseline is written by the same writer as the output, so sizes compare like with like
            # (the source file may also carry optimizer state).
            baseline = workdir / "dense.keras"
            model.save(baseline)
            size_before, gzip_before = baseline.stat().st_size, compressed_size(baseline)
            schedule = None
            if self.fine_tuning is not None:
                ctx.stage("fine-tuning with gradual pruning")
                schedule = self._fine_tune(model, artifact, selected, target, pattern, ctx)
            else:
                ctx.stage("pruning")
                _apply(selected, masks_for(selected, _values(selected), target, self.scope, pattern))
            if self.fine_tuning is not None:
                # Deploy without optimizer state: copy the trained weights into a fresh, uncompiled copy.
                deploy = load_keras_model(artifact.path, trusted=artifact.trusted)
                deploy.set_weights(model.get_weights())
                model = deploy
            with atomic_output(final, ctx.force) as tmp:
                model.save(tmp)
            summary = pruning_summary(
                [(w.layer, w.name, w.kind, np.asarray(w.variable.numpy())) for w in prunable_weights(model)],
                selected={w.name for w in selected}, skipped=skipped, target=target,
                scope="pattern" if pattern else self.scope, pattern=self.pattern,
                total_params=int(sum(int(np.prod(v.shape)) for v in model.weights)),
                total_zeros=int(sum(int(np.count_nonzero(np.asarray(v.numpy()) == 0)) for v in model.weights)))
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        summary.update(size_bytes_before=size_before, gzip_bytes_before=gzip_before,
                       size_bytes_after=final.stat().st_size, gzip_bytes_after=compressed_size(final),
                       source_size_bytes=artifact.size_bytes())
        if schedule:
            summary["schedule"] = schedule
        summary["sparse_kernels"] = sparse_kernel_candidates(summary["layers"])
        return artifact.derive(format="keras", path=final, name="pruned-keras", precision=artifact.precision,
                               sparsity=summary["achieved_sparsity"], pruning=summary,
                               produced_by={"pass": self.name, "params": pass_params(self)})

    # ------------------------------------------------------------------ fine-tuning

    def _fine_tune(self, model, artifact: Artifact, selected: list[KerasWeight], target: float,
                   pattern: tuple[int, int] | None, ctx: Context) -> dict[str, Any]:

        keras = import_keras()
        tuning = self.fine_tuning
        x, y, loss, metrics = compile_for_fine_tuning(model, artifact, tuning)
        n = len(y)
        steps_per_epoch = -(-n // tuning.batch_size)
        total = steps_per_epoch * tuning.epochs
        end = min(self.end_step if self.end_step is not None else max(1, int(0.75 * total)), total)
        begin = min(self.begin_step, end)
        frequency = self.frequency or max(1, (end - begin) // 10)
        updates = set(schedule_updates(total, begin, end, frequency))
        scope, initial = self.scope, float(self.initial_sparsity)

        class HoldMasks(keras.callbacks.Callback):
            """Recompute masks on the schedule's update steps and re-apply them after every batch."""

            def __init__(self):
                super().__init__()
                self.step = 0
                self.masks: dict[str, np.ndarray] = {}
                self.history: list[tuple[int, float]] = []

            def update(self):
                s = target if pattern else polynomial_sparsity(self.step, initial=initial, final=target, begin_step=begin, end_step=end)
                self.masks = masks_for(selected, _values(selected), s, scope, pattern)
                self.history.append((self.step, round(s, 4)))

            def on_train_begin(self, logs=None):
                self.update()
                _apply(selected, self.masks)

            def on_train_batch_end(self, batch, logs=None):
                self.step += 1
                if self.step in updates and not pattern:
                    self.update()
                _apply(selected, self.masks)

        hold = HoldMasks()
        model.fit(x if len(x) > 1 else x[0], y, epochs=tuning.epochs, batch_size=tuning.batch_size, shuffle=True,
                  verbose=0, callbacks=[hold])
        # The last update is at end_step <= total, so the masks now hold the final sparsity.
        if not hold.masks or hold.history[-1][1] != round(target, 4):
            hold.step = max(hold.step, end)
            hold.update()
        _apply(selected, hold.masks)
        return {"initial_sparsity": self.initial_sparsity, "final_sparsity": target, "begin_step": begin,
                "end_step": end, "frequency": frequency, "total_steps": total, "epochs": tuning.epochs,
                "steps_per_epoch": steps_per_epoch, "learning_rate": tuning.learning_rate, "loss": loss_name(loss),
                "metrics": [m if isinstance(m, str) else str(m) for m in metrics], "data": tuning.data,
                "mask_updates": [list(h) for h in hold.history]}
