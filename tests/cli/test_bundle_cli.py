"""`mdeploy bundle` end to end: every target from a real digits run, each file re-checked here with its real validator,
the generated clients building real requests, and the error paths through the CLI."""
from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from mdeploy.passes.core.artifact import content_hash


@pytest.fixture
def digits_run(tmp_path, digits_converted) -> Path:
    """A private copy of the session's digits conversion (SavedModel, ONNX, TFLite, all parity-checked)."""
    run = tmp_path / "run"
    shutil.copytree(digits_converted, run, ignore=shutil.ignore_patterns(".mdeploy*"))
    return run


def _bundle(mdeploy, run: Path, out: Path, *args):
    return mdeploy("bundle", run, "-o", out, *args)


def check_bundle_files(out: Path, name: str, input_dims: list[int], version: int = 1) -> dict:
    """Re-validate every generated file with the real validators, independently of the writer. Returns the parsed."""
    import kubernetes_validate
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2
    from tritonclient.grpc import model_config_pb2

    from mdeploy.passes.deploy.validate import KUBERNETES_VERSION, tfserving_message, validate_kserve

    parsed = {}
    triton = text_format.Parse((out / f"triton/model_repository/{name}/config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert triton.max_batch_size > 0 and triton.HasField("dynamic_batching")  # a dynamic batch: batched, dims without it
    # the largest batch the queue holds, within the delay: no preferred sizes that would split 3 requests into 2 + 1
    assert not triton.dynamic_batching.preferred_batch_size and triton.dynamic_batching.max_queue_delay_microseconds > 0
    assert [list(t.dims) for t in triton.input] == [input_dims] and triton.input[0].data_type == model_config_pb2.TYPE_FP32
    assert (out / f"triton/model_repository/{name}/{version}/model.onnx").is_file()
    parsed["triton"] = triton
    models = text_format.Parse((out / "tfserving/models.config").read_text(), model_server_config_pb2.ModelServerConfig())
    assert models.model_config_list.config[0].base_path == f"/models/{name}"
    batching = text_format.Parse((out / "tfserving/batching_parameters.txt").read_text(), tfserving_message("BatchingParameters")())
    assert batching.allowed_batch_sizes[-1] == batching.max_batch_size.value >= 1
    monitoring = text_format.Parse((out / "tfserving/monitoring.config").read_text(), tfserving_message("MonitoringConfig")())
    assert monitoring.prometheus_config.enable
    parsed["batching"] = batching
    assert (out / f"tfserving/models/{name}/{version}/saved_model.pb").is_file()
    kinds = {}
    for f in sorted((out / "k8s").rglob("*.yaml")):
        for doc in yaml.safe_load_all(f.read_text()):
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
            kinds.setdefault(f.parent.name, {})[doc["kind"]] = doc
    for server in ("tfserving", "triton"):
        assert set(kinds[server]) == {"Deployment", "Service", "HorizontalPodAutoscaler"}
        assert kinds[server]["HorizontalPodAutoscaler"]["apiVersion"] == "autoscaling/v2"
        isvc = yaml.safe_load((out / f"kserve/{server}-inferenceservice.yaml").read_text())
        validate_kserve("isvc", [isvc])
    parsed["k8s"] = kinds
    for dockerfile in (out / "tfserving/Dockerfile", out / "triton/Dockerfile"):
        base = next(ln.split()[1] for ln in dockerfile.read_text().splitlines() if ln.startswith("FROM "))
        assert ":" in base and not base.endswith(":latest")
    return parsed


def test_bundle_writes_every_target_and_each_file_passes_its_validator(mdeploy, digits_run, tmp_path):
    out = tmp_path / "bundle"
    r = _bundle(mdeploy, digits_run, out, "--target", "all", "--json")
    assert r.exit_code == 0, r.stderr
    result = json.loads(r.stdout)
    assert result["targets"] == ["tfserving", "triton", "k8s", "kserve"]
    assert result["servers"]["tfserving"]["format"] == "savedmodel" and result["servers"]["triton"]["format"] == "onnx"
    report = json.loads((digits_run / "report.json").read_text())
    by_name = {a["name"]: a for a in report["artifacts"]}
    # the bundled model files are the checked artifacts, byte for byte
    assert content_hash(out / "tfserving/models/digits/1") == by_name["savedmodel"]["sha256"]
    triton_art = result["servers"]["triton"]["artifact"]
    assert content_hash(out / "triton/model_repository/digits/1/model.onnx") == by_name[triton_art]["sha256"]
    parsed = check_bundle_files(out, "digits", [8, 8, 1])
    tf = parsed["k8s"]["tfserving"]["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    # readiness reads the version's metadata (200 only when AVAILABLE), liveness the status (200 in any state)
    assert tf["readinessProbe"]["httpGet"]["path"] == tf["startupProbe"]["httpGet"]["path"] == "/v1/models/digits/versions/1/metadata"
    assert tf["livenessProbe"]["httpGet"]["path"] == "/v1/models/digits"
    tr = parsed["k8s"]["triton"]["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert tr["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert tr["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    # no bench in a convert run: the memory request is a stated estimate from the model's size
    assert "estimated" in parsed["k8s"]["tfserving"]["Deployment"]["metadata"]["annotations"]["mdeploy.dev/resources"]
    readme = (out / "README.md").read_text()
    for command in ("docker build -t mdeploy/digits-tfserving:1 tfserving/", "kubectl apply -f k8s/tfserving/",
                    "/v1/models/digits/versions/1:predict", "/v2/models/digits/versions/1/infer"):
        assert command in readme
    assert json.loads((out / "bundle.json").read_text())["servers"]["tfserving"]["sha256"] == by_name["savedmodel"]["sha256"]
    assert not list(tmp_path.glob(".*partial*"))


def _load_module(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_clients_build_real_requests(mdeploy, digits_run, tmp_path):
    import numpy as np

    out = tmp_path / "b"
    assert _bundle(mdeploy, digits_run, out, "--target", "tfserving,triton").exit_code == 0
    assert not (out / "k8s").exists() and not (out / "kserve").exists()
    tfs = _load_module(out / "client/tfserving_client.py")
    feeds = tfs.example_inputs(batch=3)
    assert {n: (a.shape, a.dtype) for n, a in feeds.items()} == {"image": ((3, 8, 8, 1), np.dtype("float32"))}
    request = tfs.grpc_request(feeds)  # tensorflow-serving-api's PredictRequest
    assert request.model_spec.name == "digits" and request.model_spec.signature_name == "serving_default"
    assert [d.size for d in request.inputs["image"].tensor_shape.dim] == [3, 8, 8, 1]
    assert np.asarray(tfs.rest_request(feeds)["inputs"]["image"]).shape == (3, 8, 8, 1)
    import tritonclient.grpc

    tri = _load_module(out / "client/triton_client.py")
    (item,) = tri.infer_inputs(tritonclient.grpc, tri.example_inputs(batch=2))
    assert (item.name(), item.datatype(), item.shape()) == ("image", "FP32", [2, 8, 8, 1])
    assert tri.rest_request(tri.example_inputs())["inputs"][0]["shape"] == [1, 8, 8, 1]


@pytest.mark.parametrize("args,fragment", [
    (("--target", "tfserving,bogus"), "unknown --target 'bogus'"),
    (("--artifact", "nope"), "has no artifact named 'nope'"),
    (("--target", "tfserving", "--artifact", "onnx"), "tfserving cannot serve onnx (onnx)"),
    (("--min-replicas", "3", "--max-replicas", "2"), "replicas 3..2"),
])
def test_bad_options_are_exit_2(mdeploy, digits_run, tmp_path, args, fragment):
    r = _bundle(mdeploy, digits_run, tmp_path / "b", *args)
    assert r.exit_code == 2 and fragment in r.stderr and "hint:" in r.stderr, r.stderr
    assert not (tmp_path / "b").exists()


def test_missing_or_invalid_run_dir(mdeploy, tmp_path):
    r = mdeploy("bundle", tmp_path / "nowhere", "-o", tmp_path / "b")
    assert r.exit_code == 2 and "does not exist" in r.stderr and "hint:" in r.stderr
    (tmp_path / "empty").mkdir()
    r = mdeploy("bundle", tmp_path / "empty", "-o", tmp_path / "b")
    assert r.exit_code == 2 and "has no report.json" in r.stderr
    (tmp_path / "empty" / "report.json").write_text("{not json")
    r = mdeploy("bundle", tmp_path / "empty", "-o", tmp_path / "b")
    assert r.exit_code == 2 and "not a readable report" in r.stderr and "hint:" in r.stderr
    assert not (tmp_path / "b").exists()


def _fail_parity(run: Path, names: set[str]) -> None:
    report = json.loads((run / "report.json").read_text())
    for a in report["artifacts"]:
        if a["name"] in names:
            a["checks"]["passed"] = False
            a["checks"]["max_abs_error"] = 0.5
    (run / "report.json").write_text(json.dumps(report))


def test_no_passing_artifact_and_forcing_a_failed_one(mdeploy, digits_run, tmp_path):
    _fail_parity(digits_run, {"savedmodel"})
    r = _bundle(mdeploy, digits_run, tmp_path / "b", "--target", "tfserving")
    assert r.exit_code == 2 and "no savedmodel artifact" in r.stderr and "passed the gate" in r.stderr, r.stderr
    assert "savedmodel: failed" in r.stderr and "--allow-failed" in r.stderr
    # k8s alone falls back to Triton on the passing ONNX
    r = _bundle(mdeploy, digits_run, tmp_path / "k", "--target", "k8s", "--json")
    assert r.exit_code == 0, r.stderr
    assert list(json.loads(r.stdout)["servers"]) == ["triton"] and (tmp_path / "k/k8s/triton/deployment.yaml").is_file()
    r = _bundle(mdeploy, digits_run, tmp_path / "b", "--target", "tfserving", "--artifact", "savedmodel")
    assert r.exit_code == 2 and "did not pass the gate" in r.stderr and "--allow-failed" in r.stderr
    r = _bundle(mdeploy, digits_run, tmp_path / "b", "--target", "tfserving", "--artifact", "savedmodel", "--allow-failed")
    assert r.exit_code == 0 and "did NOT pass the gate" in r.stderr, r.stderr
    manifest = json.loads((tmp_path / "b/bundle.json").read_text())
    assert manifest["servers"]["tfserving"]["forced"] is True and manifest["servers"]["tfserving"]["status"] == "failed"
    assert "NOT passing the gate" in (tmp_path / "b/README.md").read_text()


def test_existing_output_needs_force_and_a_changed_artifact_is_refused(mdeploy, digits_run, tmp_path):
    out = tmp_path / "b"
    assert _bundle(mdeploy, digits_run, out, "--target", "triton").exit_code == 0
    r = _bundle(mdeploy, digits_run, out, "--target", "triton")
    assert r.exit_code == 2 and "already exists" in r.stderr and "--force" in r.stderr
    assert _bundle(mdeploy, digits_run, out, "--target", "tfserving", "--force").exit_code == 0
    assert not (out / "triton").exists() and (out / "tfserving/Dockerfile").is_file()  # replaced whole
    with open(digits_run / "onnx" / "model.sim.onnx", "ab") as f:
        f.write(b"\0")
    (digits_run / "onnx" / "model.onnx").write_bytes(b"x")
    r = _bundle(mdeploy, digits_run, tmp_path / "c", "--target", "triton")
    assert r.exit_code == 2 and "no longer matches its sha256" in r.stderr, r.stderr
    r = _bundle(mdeploy, digits_run, digits_run, "--target", "triton", "--force")
    assert r.exit_code == 2 and "would replace the run directory" in r.stderr
    assert (digits_run / "report.json").is_file()


def _docker_daemon() -> str | None:
    """None when a Docker daemon answers, else why not."""
    if shutil.which("docker") is None:
        return "no docker client on PATH"
    try:
        probe = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"docker info failed: {e}"
    return None if probe.returncode == 0 else f"no Docker daemon ({(probe.stderr or probe.stdout).strip().splitlines()[-1:]})"


def test_docker_image_builds(mdeploy, digits_run, tmp_path):
    why = _docker_daemon()
    if why:
        pytest.skip(why)
    out = tmp_path / "b"
    assert _bundle(mdeploy, digits_run, out, "--target", "tfserving").exit_code == 0
    build = subprocess.run(["docker", "build", "-q", "-t", "mdeploy-test/digits-tfserving:1", str(out / "tfserving")],
                           capture_output=True, text=True, timeout=900)
    assert build.returncode == 0, build.stderr[-2000:]


@pytest.mark.slow
def test_mobilenet_bundle_every_target(mdeploy, mobilenet_model, tmp_path):
    run = tmp_path / "run"
    assert mdeploy("convert", mobilenet_model, "--to", "savedmodel,onnx", "-o", run).exit_code == 0
    out = tmp_path / "bundle"
    r = _bundle(mdeploy, run, out, "--json")
    assert r.exit_code == 0, r.stderr
    parsed = check_bundle_files(out, json.loads(r.stdout)["servers"]["triton"]["model"], [224, 224, 3])
    assert parsed["triton"].input[0].dims == [224, 224, 3]


def test_measured_bench_sets_batching_and_memory_and_triton_serves_a_savedmodel(mdeploy, digits_run, tmp_path):
    report = json.loads((digits_run / "report.json").read_text())
    for a in report["artifacts"]:
        if a["name"] == "savedmodel":  # as `mdeploy bench -o` records it
            a["bench"] = {"name": "savedmodel", "runtime": "tensorflow", "batch": 1, "latency_ms": {"p50": 5.0},
                          "peak_rss_bytes": 300 << 20, "baseline_rss_bytes": 100 << 20, "load_seconds": 40.0}
    (digits_run / "report.json").write_text(json.dumps(report))
    out = tmp_path / "b"
    r = _bundle(mdeploy, digits_run, out, "--target", "tfserving,triton,k8s", "--artifact", "savedmodel", "--cpu", "2", "--json")
    assert r.exit_code == 0, r.stderr
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    from mdeploy.passes.deploy.validate import tfserving_message

    batching = text_format.Parse((out / "tfserving/batching_parameters.txt").read_text(), tfserving_message("BatchingParameters")())
    assert batching.max_batch_size.value == 8 and batching.num_batch_threads.value == 2  # 8 x 5 ms within 50 ms
    assert batching.batch_timeout_micros.value == 5000
    config = text_format.Parse((out / "triton/model_repository/digits/config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert config.platform == "tensorflow_savedmodel" and config.max_batch_size == 8 and config.instance_group[0].count == 2
    assert (out / "triton/model_repository/digits/1/model.savedmodel/saved_model.pb").is_file()
    deployment = yaml.safe_load((out / "k8s/tfserving/deployment.yaml").read_text())
    c = deployment["spec"]["template"]["spec"]["containers"][0]
    assert c["resources"]["requests"] == {"cpu": "2", "memory": f"{int((256 + 200) * 1.25)}Mi"}
    assert c["startupProbe"]["failureThreshold"] * c["startupProbe"]["periodSeconds"] >= 400  # 10x the 40 s load
