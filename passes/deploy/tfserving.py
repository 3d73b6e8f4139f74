"""The TF Serving target: the SavedModel in `models/NAME/VERSION/`, `models.config`, `batching_parameters.txt`, a
Prometheus `monitoring.config` and a Dockerfile on the official image, pinned."""
from __future__ import annotations

from mdeploy.passes.deploy.facts import TFSERVING_IMAGE, TFSERVING_VERSION, BatchPlan, BundleFile, ModelFacts

ROOT = "tfserving"
GRPC_PORT = 8500
REST_PORT = 8501
METRICS_PATH = "/monitoring/prometheus/metrics"  # served on the REST port
CONFIG_DIR = "/config"


def model_status_path(facts: ModelFacts) -> str:
    return f"/v1/models/{facts.name}"


def ready_path(facts: ModelFacts) -> str:
    """200 only once this version is loaded and serving: model metadata is read through the server core's servable
    handle, which exists only for an AVAILABLE version (get_model_metadata_impl.cc: GetServableHandle), whereas
    `/v1/models/NAME` answers 200 with state START or LOADING before that."""
    return f"/v1/models/{facts.name}/versions/{facts.version}/metadata"


def server_args(facts: ModelFacts, plan: BatchPlan) -> list[str]:
    args = [f"--port={GRPC_PORT}", f"--rest_api_port={REST_PORT}", f"--model_config_file={CONFIG_DIR}/models.config",
            f"--monitoring_config_file={CONFIG_DIR}/monitoring.config"]
    if plan.batching:
        args += ["--enable_batching=true", f"--batching_parameters_file={CONFIG_DIR}/batching_parameters.txt"]
    return args


def models_config(facts: ModelFacts) -> str:
    return (f"# TF Serving model config (ModelServerConfig text proto), written by mdeploy bundle.\n"
            f"model_config_list {{\n"
            f"  config {{\n"
            f"    name: \"{facts.name}\"\n"
            f"    base_path: \"/models/{facts.name}\"\n"
            f"    model_platform: \"tensorflow\"\n"
            f"    model_version_policy {{\n"
            f"      specific {{\n"
            f"        versions: {facts.version}\n"
            f"      }}\n"
            f"    }}\n"
            f"  }}\n"
            f"}}\n")


def batching_parameters(plan: BatchPlan, threads: int) -> str:
    sizes = ", ".join(str(s) for s in plan.sizes)
    return (f"# TF Serving batching (BatchingParameters text proto), written by mdeploy bundle.\n"
            f"# {plan.basis}.\n"
            f"max_batch_size {{ value: {plan.max_batch_size} }}\n"
            f"batch_timeout_micros {{ value: {plan.timeout_us} }}\n"
            f"# one batch thread per CPU core the container requests (TF Serving's advice for CPU serving)\n"
            f"num_batch_threads {{ value: {threads} }}\n"
            f"max_enqueued_batches {{ value: {max(threads * 4, 8)} }}\n"
            f"# batches are padded up to the next allowed size, so the model runs with few distinct shapes\n"
            f"allowed_batch_sizes: [{sizes}]\n")


def monitoring_config() -> str:
    return (f"# TF Serving monitoring (MonitoringConfig text proto): Prometheus metrics on the REST port.\n"
            f"prometheus_config {{\n"
            f"  enable: true\n"
            f"  path: \"{METRICS_PATH}\"\n"
            f"}}\n")


def dockerfile(facts: ModelFacts, plan: BatchPlan, image: str = TFSERVING_IMAGE) -> str:
    configs = ["models.config", "monitoring.config"] + (["batching_parameters.txt"] if plan.batching else [])
    args = ", ".join(f'"{a}"' for a in ["tensorflow_model_server", *server_args(facts, plan)])
    return (f"# TF Serving {TFSERVING_VERSION} (the official image, pinned): the release of the tensorflow-serving-api\n"
            f"# whose protos validated these configs, and of the TensorFlow that wrote the SavedModel.\n"
            f"FROM {image}\n"
            f"COPY models/ /models/\n"
            f"COPY {' '.join(configs)} {CONFIG_DIR}/\n"
            f"# gRPC {GRPC_PORT}, REST {REST_PORT} (also Prometheus metrics at {METRICS_PATH})\n"
            f"EXPOSE {GRPC_PORT} {REST_PORT}\n"
            f"ENTRYPOINT [{args}]\n")


def files(facts: ModelFacts, plan: BatchPlan, threads: int, image: str = TFSERVING_IMAGE) -> list[BundleFile]:
    out = [BundleFile(f"{ROOT}/models/{facts.name}/{facts.version}", copy_from=facts.path),
           BundleFile(f"{ROOT}/models.config", models_config(facts), "tfserving-models"),
           BundleFile(f"{ROOT}/monitoring.config", monitoring_config(), "tfserving-monitoring"),
           BundleFile(f"{ROOT}/Dockerfile", dockerfile(facts, plan, image), "dockerfile")]
    if plan.batching:
        out.append(BundleFile(f"{ROOT}/batching_parameters.txt", batching_parameters(plan, threads), "tfserving-batching"))
    return out
