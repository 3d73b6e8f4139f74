"""The one serving function every TensorFlow-side conversion starts from: its input names are the model's input
names and its outputs a dict keyed by the model's output names, so every artifact (SavedModel signature, ONNX graph,
TFLite signature) exposes the same names."""
from __future__ import annotations

from mdeploy.passes.backends.tensorflow import load_keras_model, load_savedmodel, savedmodel_signature
from mdeploy.passes.backends.tf_env import import_tf
from mdeploy.passes.core.artifact import Artifact


def serving_function(artifact: Artifact):
    """(tf.function with a named input signature returning {output name: tensor}, object keeping it alive)."""

    tf = import_tf()
    specs = [tf.TensorSpec(t.shape, tf.as_dtype(t.dtype), name=t.name) for t in artifact.inputs]
    out_names = [o.name for o in artifact.outputs]
    if artifact.format == "keras":
        model = load_keras_model(artifact.path, trusted=artifact.trusted)
        module = tf.Module()
        # Track the backing tf.Variables, not the Keras model, as keras' own ExportArchive does:
        # tracking the model makes the TFLite converter emit a weightless graph, and tracking
        # both stores every weight twice.
        module.tf_variables = [getattr(v, "value", v) for v in model.variables]

        def call(*args):
            result = model(list(args) if len(args) > 1 else args[0], training=False)
            if not isinstance(result, (list, tuple)):
                result = [result]
            return {n: tf.identity(r, name=n) for n, r in zip(out_names, result)}
    else:
        module = load_savedmodel(artifact.path)
        fn, _, _ = savedmodel_signature(module)

        def call(*args):
            result = fn(**{t.name: a for t, a in zip(artifact.inputs, args)})
            return {n: tf.identity(result[n], name=n) for n in out_names}

    # tf.function needs a signature with named positional parameters.
    params = ", ".join(f"a{i}" for i in range(len(specs)))
    namespace = {"call": call}
    exec(f"def serve({params}):\n    return call({params})\n", namespace)  # noqa: S102 - fixed template, no user text
    serve = tf.function(namespace["serve"], input_signature=specs)
    module.serve = serve
    return serve, module
