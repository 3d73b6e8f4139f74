"""Keras or SavedModel -> a SavedModel in TF Serving layout."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from mdeploy.passes.backends.tf_env import import_tf
from mdeploy.passes.convert.serving import serving_function
from mdeploy.passes.core.artifact import Artifact
from mdeploy.passes.core.fsio import atomic_output
from mdeploy.passes.core.pipeline import Context, pass_params


@dataclass(frozen=True)
class ToSavedModel:
    """Keras or SavedModel -> SavedModel in TF Serving layout, OUTDIR/savedmodel/NAME/VERSION/."""

    name: ClassVar[str] = "convert.savedmodel"
    accepts: ClassVar[tuple[str, ...]] = ("keras", "savedmodel")
    produces: ClassVar[str] = "savedmodel"
    model_name: str = "model"
    version: int = 1

    def output_path(self, ctx: Context) -> Path:
        return Path(ctx.out_dir) / "savedmodel" / self.model_name / str(self.version)

    def run(self, artifact: Artifact, ctx: Context) -> Artifact:
        tf = import_tf()
        serve, module = serving_function(artifact)
        final = self.output_path(ctx)
        with atomic_output(final, ctx.force) as tmp:
            tf.saved_model.save(module, str(tmp), signatures={"serving_default": serve.get_concrete_function()})
        return artifact.derive(format="savedmodel", path=final, name="savedmodel", precision="float32",
                               produced_by={"pass": self.name, "params": pass_params(self)})
