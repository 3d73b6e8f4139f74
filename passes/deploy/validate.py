"""Offline validators for every generated serving file, each on the real definition its server reads:

- Triton `config.pbtxt`: tritonclient's `model_config_pb2` (the generated code of Triton's model_config.proto,
  release 2.41.0, which loads under protobuf 7) through `text_format`, plus the batching rules Triton checks
  when it loads a model (dims, data types, preferred batch sizes within max_batch_size).
- TF Serving `models.config`: tensorflow-serving-api's `ModelServerConfig`; `batching_parameters.txt` and
  `monitoring.config`: `BatchingParameters` and `MonitoringConfig` from TF Serving's own .proto files (vendored in
  protos/, compiled to a descriptor set, since the wheel ships no Python module for them).
- Kubernetes manifests: `kubernetes-validate` in strict mode (unknown fields are errors), Kubernetes pinned.
- KServe InferenceService: KServe's CRD schema (vendored in schemas/), unknown fields are errors.

Every validator raises InvalidConfig naming the file and the first problem.
"""
from __future__ import annotations

import ast
import functools
import gzip
import json
from pathlib import Path
from typing import Any

from mdeploy.passes.core.errors import PassFailed

KUBERNETES_VERSION = "1.33.0"
HERE = Path(__file__).resolve().parent
PROTO_SOURCE = HERE / "protos" / "tfserving_configs.proto"
PROTO_DESCRIPTORS = HERE / "protos" / "tfserving_configs.desc"
KSERVE_SCHEMA = HERE / "schemas" / "kserve-inferenceservice-v1beta1.json.gz"


class InvalidConfig(PassFailed):
    """A generated file failed its validator: mdeploy's own fault, so exit 3."""

    def __init__(self, path: str, problem: str):
        super().__init__(f"generated {path} is invalid: {problem}",
                         "this is a bug in mdeploy's bundle writer; run with --debug and report it")
        self.path = path
        self.problem = problem


def _missing(package: str) -> Exception:
    from mdeploy.passes.core.errors import BadInput

    return BadInput(f"{package} is not installed; `mdeploy bundle` validates every file with it",
                    "pip install 'mdeploy[deploy]' (or -e '.[deploy]' in a clone)")


# --------------------------------------------------------------------------- protobuf text formats

def _parse_text(path: str, text: str, message) -> Any:
    from google.protobuf import text_format

    try:
        return text_format.Parse(text, message)
    except text_format.ParseError as e:
        raise InvalidConfig(path, str(e)) from e


def triton_config_class():
    try:
        from tritonclient.grpc import model_config_pb2
    except ImportError as e:
        raise _missing("tritonclient[grpc]") from e
    return model_config_pb2.ModelConfig


def validate_triton_config(path: str, text: str):
    """Parse with Triton's ModelConfig proto and apply the rules Triton's loader enforces on what mdeploy writes."""
    config = _parse_text(path, text, triton_config_class()())
    if not config.name:
        raise InvalidConfig(path, "no model name")
    if config.max_batch_size < 0:
        raise InvalidConfig(path, f"max_batch_size {config.max_batch_size} < 0")
    for kind, tensors in (("input", config.input), ("output", config.output)):
        if not tensors:
            raise InvalidConfig(path, f"no {kind}")
        for t in tensors:
            if t.data_type == 0:
                raise InvalidConfig(path, f"{kind} {t.name!r} has no data_type")
            if not t.dims and config.max_batch_size == 0:
                raise InvalidConfig(path, f"{kind} {t.name!r} has no dims")
            if any(d == 0 or d < -1 for d in t.dims):
                raise InvalidConfig(path, f"{kind} {t.name!r} dims {list(t.dims)}: each must be -1 or positive")
    if config.HasField("dynamic_batching"):
        if config.max_batch_size == 0:
            raise InvalidConfig(path, "dynamic_batching with max_batch_size 0 (the model cannot batch)")
        for size in config.dynamic_batching.preferred_batch_size:
            if not 0 < size <= config.max_batch_size:
                raise InvalidConfig(path, f"preferred_batch_size {size} is not within 1..max_batch_size "
                                          f"{config.max_batch_size}")
    return config


@functools.cache
def _tfserving_pool():
    from google.protobuf import descriptor_pb2, descriptor_pool

    files = descriptor_pb2.FileDescriptorSet.FromString(PROTO_DESCRIPTORS.read_bytes())
    pool = descriptor_pool.DescriptorPool()
    for f in files.file:
        pool.Add(f)
    return pool


def tfserving_message(name: str):
    """A message class for `tensorflow.serving.NAME` from the vendored TF Serving protos."""
    from google.protobuf import message_factory

    return message_factory.GetMessageClass(_tfserving_pool().FindMessageTypeByName(f"tensorflow.serving.{name}"))


def validate_models_config(path: str, text: str):
    try:
        from tensorflow_serving.config import model_server_config_pb2
    except ImportError as e:
        raise _missing("tensorflow-serving-api") from e
    config = _parse_text(path, text, model_server_config_pb2.ModelServerConfig())
    models = config.model_config_list.config
    if not models:
        raise InvalidConfig(path, "model_config_list has no model")
    for m in models:
        if not m.name or not m.base_path.startswith("/"):
            raise InvalidConfig(path, f"model {m.name!r}: a name and an absolute base_path are required")
    return config


def validate_batching_parameters(path: str, text: str):
    params = _parse_text(path, text, tfserving_message("BatchingParameters")())
    top = params.max_batch_size.value
    if not params.HasField("max_batch_size") or top < 1:
        raise InvalidConfig(path, "max_batch_size must be set and at least 1")
    sizes = list(params.allowed_batch_sizes)
    # TF Serving's rules (session_bundle_config.proto): increasing, the last one equal to max_batch_size
    if sizes and (sizes != sorted(set(sizes)) or sizes[-1] != top):
        raise InvalidConfig(path, f"allowed_batch_sizes {sizes} must increase and end at max_batch_size {top}")
    return params


def validate_monitoring_config(path: str, text: str):
    config = _parse_text(path, text, tfserving_message("MonitoringConfig")())
    if not config.prometheus_config.enable:
        raise InvalidConfig(path, "prometheus_config is not enabled")
    return config


# --------------------------------------------------------------------------- Kubernetes and KServe

def validate_k8s(path: str, docs: list[dict[str, Any]]) -> None:
    """Each manifest against the pinned Kubernetes version's schema, strict (unknown fields are errors)."""
    try:
        import kubernetes_validate
        from kubernetes_validate.utils import ValidationError
    except ImportError as e:
        raise _missing("kubernetes-validate") from e
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except ValidationError as e:
            where = "/".join(str(p) for p in e.path) or "(top)"
            raise InvalidConfig(path, f"{doc.get('kind', '?')} at {where}: {e.message}") from e
        except Exception as e:  # noqa: BLE001 - kubernetes-validate raises its own for an unknown kind/version
            raise InvalidConfig(path, f"{doc.get('kind', '?')}: {type(e).__name__}: {e}") from e


def _strict(schema: Any) -> Any:
    """Close every object that declares its properties and does not preserve unknown fields, as strict field
    validation on the API server does."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if "properties" in out and not out.get("x-kubernetes-preserve-unknown-fields") and "additionalProperties" not in out:
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


@functools.cache
def _kserve_validator():
    import jsonschema

    schema = _strict(json.loads(gzip.decompress(KSERVE_SCHEMA.read_bytes())))
    return jsonschema.Draft7Validator(schema)


def validate_kserve(path: str, docs: list[dict[str, Any]]) -> None:
    """An InferenceService against KServe's CRD schema (v1beta1), strict. Its metadata is checked as Kubernetes
    object metadata by shape only (the CRD declares it an object); the containers inside follow the PodSpec
    schema the CRD embeds."""
    try:
        import jsonschema  # noqa: F401
    except ImportError as e:
        raise _missing("jsonschema") from e
    for doc in docs:
        if doc.get("apiVersion") != "serving.kserve.io/v1beta1" or doc.get("kind") != "InferenceService":
            raise InvalidConfig(path, f"expected serving.kserve.io/v1beta1 InferenceService, got "
                                      f"{doc.get('apiVersion')} {doc.get('kind')}")
        name = (doc.get("metadata") or {}).get("name")
        if not isinstance(name, str) or not name:
            raise InvalidConfig(path, "metadata.name is required")
        error = next(iter(sorted(_kserve_validator().iter_errors(doc), key=lambda e: list(e.path))), None)
        if error is not None:
            where = "/".join(str(p) for p in error.path) or "(top)"
            raise InvalidConfig(path, f"InferenceService at {where}: {error.message}")


def load_yaml_docs(path: str, text: str) -> list[dict[str, Any]]:
    import yaml

    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as e:
        raise InvalidConfig(path, f"not YAML: {e}") from e
    if not docs or not all(isinstance(d, dict) for d in docs):
        raise InvalidConfig(path, "expected one or more YAML mappings")
    return docs


# --------------------------------------------------------------------------- the rest

def validate_python(path: str, text: str) -> None:
    try:
        ast.parse(text, filename=path)
    except SyntaxError as e:
        raise InvalidConfig(path, f"line {e.lineno}: {e.msg}") from e


def validate_dockerfile(path: str, text: str) -> None:
    """The base image is pinned to a release (no `latest`, no untagged image)."""
    froms = [ln.split()[1] for ln in text.splitlines() if ln.strip().upper().startswith("FROM ")]
    if not froms:
        raise InvalidConfig(path, "no FROM line")
    for image in froms:
        tag = image.rsplit("/", 1)[-1].partition(":")[2]
        if not tag or tag == "latest":
            raise InvalidConfig(path, f"base image {image} is not pinned to a release")


VALIDATORS = {
    "triton-config": validate_triton_config,
    "tfserving-models": validate_models_config,
    "tfserving-batching": validate_batching_parameters,
    "tfserving-monitoring": validate_monitoring_config,
    "k8s": lambda path, text: validate_k8s(path, load_yaml_docs(path, text)),
    "kserve": lambda path, text: validate_kserve(path, load_yaml_docs(path, text)),
    "python": validate_python,
    "dockerfile": validate_dockerfile,
}


def validate_text(kind: str, path: str, text: str) -> None:
    """Run the validator for `kind` on a generated file; `none` is for prose (README) only."""
    if kind == "none":
        return
    VALIDATORS[kind](path, text)


def compile_tfserving_protos(proto: Path = PROTO_SOURCE) -> bytes:
    """The vendored .proto compiled with protoc (grpcio-tools) into a FileDescriptorSet, imports included.
    Used to regenerate PROTO_DESCRIPTORS (`python -m mdeploy.passes.deploy.validate`) and by the test that checks
    the shipped one matches its source."""
    import subprocess
    import sys
    import tempfile

    import grpc_tools

    include = Path(grpc_tools.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "set.desc"
        # in its own process: protoc's C++ protobuf crashes beside TensorFlow's in one process
        run = subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"-I{proto.parent}", f"-I{include}",
                              "--include_imports", f"--descriptor_set_out={out}", proto.name],
                             capture_output=True, text=True)
        if run.returncode != 0:
            raise RuntimeError(f"protoc failed on {proto} ({run.returncode}): {run.stderr.strip()}")
        return out.read_bytes()


if __name__ == "__main__":
    PROTO_DESCRIPTORS.write_bytes(compile_tfserving_protos())
    print(f"wrote {PROTO_DESCRIPTORS}")
