"""Kubernetes and KServe manifests for a server image of the bundle: Deployment, Service and an autoscaling/v2
HorizontalPodAutoscaler, or a KServe InferenceService, with probes that tell the truth.

Probes: the startup probe and the readiness probe ask whether the model itself can serve (TF Serving: this
version's metadata, answered only once it is AVAILABLE; Triton: `/v2/health/ready`, which with strict readiness
means every model is loaded), so no traffic reaches a pod still loading; the liveness probe asks only whether the
server answers (TF Serving: the model status endpoint, 200 in any state; Triton: `/v2/health/live`), so a slow
load is never killed by liveness (the startup probe holds liveness off until the model is up).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mdeploy.passes.deploy import tfserving, triton
from mdeploy.passes.deploy.facts import BundleFile, ModelFacts, Resources


@dataclass(frozen=True)
class Scaling:
    min_replicas: int = 1
    max_replicas: int = 4
    cpu_target: int = 70  # average CPU utilization (% of the request) the HPA keeps


@dataclass(frozen=True)
class Server:
    """What the manifests need to know of one server image."""

    kind: str  # tfserving | triton
    image: str
    ports: dict[str, int]  # name -> container port
    ready_path: str
    live_path: str
    live_port: str  # port name


def server_for(kind: str, facts: ModelFacts, image: str) -> Server:
    if kind == "tfserving":
        return Server(kind, image, {"grpc": tfserving.GRPC_PORT, "http": tfserving.REST_PORT},
                      tfserving.ready_path(facts), tfserving.model_status_path(facts), "http")
    return Server(kind, image, {"http": triton.HTTP_PORT, "grpc": triton.GRPC_PORT, "metrics": triton.METRICS_PORT},
                  "/v2/health/ready", "/v2/health/live", "http")


def _probe(path: str, port: str, period: int, failures: int, timeout: int = 2) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": port}, "periodSeconds": period, "timeoutSeconds": timeout,
            "failureThreshold": failures}


def container(server: Server, res: Resources, name: str = "server") -> dict[str, Any]:
    return {
        "name": name,
        "image": server.image,
        "imagePullPolicy": "IfNotPresent",
        "ports": [{"name": n, "containerPort": p, "protocol": "TCP"} for n, p in server.ports.items()],
        "resources": {"requests": {"cpu": res.cpu, "memory": res.memory_request},
                      "limits": {"memory": res.memory_limit}},
        "startupProbe": _probe(server.ready_path, "http", 5, res.startup_failure_threshold),
        "readinessProbe": _probe(server.ready_path, "http", 5, 3),
        "livenessProbe": _probe(server.live_path, server.live_port, 10, 3),
    }


def _labels(facts: ModelFacts, server: Server) -> dict[str, str]:
    return {"app.kubernetes.io/name": facts.name, "app.kubernetes.io/component": server.kind,
            "app.kubernetes.io/version": str(facts.version), "app.kubernetes.io/managed-by": "mdeploy"}


def _metadata(name: str, labels: dict[str, str], res: Resources) -> dict[str, Any]:
    return {"name": name, "labels": labels, "annotations": {"mdeploy.dev/resources": res.basis}}


def manifests(facts: ModelFacts, server: Server, res: Resources, scaling: Scaling) -> dict[str, dict[str, Any]]:
    """{file name: manifest} for the Deployment, Service and HPA."""
    name = f"{facts.name}-{server.kind}"
    labels = _labels(facts, server)
    selector = {"app.kubernetes.io/name": facts.name, "app.kubernetes.io/component": server.kind}
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": _metadata(name, labels, res),
        # no `replicas`: the HPA owns the count, and re-applying this file must not reset it
        "spec": {"selector": {"matchLabels": selector},
                 "template": {"metadata": {"labels": labels},
                              "spec": {"containers": [container(server, res)], "terminationGracePeriodSeconds": 30}}}}
    service = {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "labels": labels},
        "spec": {"selector": selector, "ports": [{"name": n, "port": p, "targetPort": n, "protocol": "TCP"}
                                                 for n, p in server.ports.items()]}}
    hpa = {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": name, "labels": labels},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                 "minReplicas": scaling.min_replicas, "maxReplicas": scaling.max_replicas,
                 "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                     "type": "Utilization", "averageUtilization": scaling.cpu_target}}}]}}
    return {"deployment.yaml": deployment, "service.yaml": service, "hpa.yaml": hpa}


def inference_service(facts: ModelFacts, server: Server, res: Resources, scaling: Scaling) -> dict[str, Any]:
    """A KServe InferenceService running the bundle's server image as its predictor (the same image, probes and
    resources as the Deployment), scaled by KServe on CPU between the same bounds."""
    c = container(server, res, name="kserve-container")
    c["ports"] = [c["ports"][[p["name"] for p in c["ports"]].index("http")]]  # KServe routes to one port
    return {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
            "metadata": {"name": f"{facts.name}-{server.kind}", "labels": _labels(facts, server),
                         "annotations": {"serving.kserve.io/deploymentMode": "RawDeployment",
                                         "mdeploy.dev/resources": res.basis}},
            "spec": {"predictor": {"minReplicas": scaling.min_replicas, "maxReplicas": scaling.max_replicas,
                                   "scaleMetric": "cpu", "scaleTarget": scaling.cpu_target, "containers": [c]}}}


def _yaml(doc: dict[str, Any], comment: str) -> str:
    import yaml

    class NoAliases(yaml.SafeDumper):  # plain YAML: no &id001 anchors for the shared label dicts
        def ignore_aliases(self, data):
            return True

    return f"# {comment}\n" + yaml.dump(doc, Dumper=NoAliases, sort_keys=False, width=120)


def files(facts: ModelFacts, server: Server, res: Resources, scaling: Scaling) -> list[BundleFile]:
    head = f"{server.kind} serving {facts.name} ({facts.artifact}), written by mdeploy bundle; {res.basis}"
    return [BundleFile(f"k8s/{server.kind}/{fname}", _yaml(doc, head), "k8s")
            for fname, doc in manifests(facts, server, res, scaling).items()]


def kserve_files(facts: ModelFacts, server: Server, res: Resources, scaling: Scaling) -> list[BundleFile]:
    head = f"KServe InferenceService for {facts.name} on {server.kind}, written by mdeploy bundle; {res.basis}"
    return [BundleFile(f"kserve/{server.kind}-inferenceservice.yaml",
                       _yaml(inference_service(facts, server, res, scaling), head), "kserve")]
