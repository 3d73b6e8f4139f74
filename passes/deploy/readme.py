"""The bundle's README.md: what is in it, what each number is based on, and the exact commands to deploy it."""
from __future__ import annotations

from typing import Any

from mdeploy.passes.deploy import tfserving, triton


def _layout(paths: list[str]) -> str:
    """Directories once, files under them; a copied model directory shown as one entry."""
    lines, seen = [], set()
    for p in sorted(set(paths) | {"README.md", "bundle.json"}):
        parts = p.rstrip("/").split("/")
        if p.endswith("/"):
            parts[-1] += "/   (the SavedModel, copied)"
        for depth in range(len(parts) - 1):
            d = "/".join(parts[: depth + 1])
            if d not in seen:
                seen.add(d)
                lines.append("  " * depth + parts[depth] + "/")
        lines.append("  " * (len(parts) - 1) + parts[-1])
    return "\n".join(lines)


def _server_section(result: Any, server: str) -> list[str]:
    f, plan, res, image = result.models[server], result.plans[server], result.resources[server], result.images[server]
    status = f"**NOT passing the gate** ({f.status}: {f.reason}), bundled with --allow-failed" if f.forced else f.status
    out = [f"## {'TF Serving' if server == 'tfserving' else 'Triton'}", "",
           f"Serves `{f.artifact}` ({f.format}, sha256 `{f.sha256[:16]}…`, gate: {status}) as model `{f.name}`, "
           f"version {f.version}.", "",
           "| input / output | shape | dtype |", "| --- | --- | --- |"]
    out += [f"| in `{t.name}` | {t.shape_text()} | {t.dtype} |" for t in f.inputs]
    out += [f"| out `{t.name}` | {t.shape_text()} | {t.dtype} |" for t in f.outputs]
    out += ["", f"Batching: {plan.basis}. Resources per replica: CPU {res.cpu}, memory request {res.memory_request}, "
                f"limit {res.memory_limit} ({res.basis}).", ""]
    if server == "tfserving":
        p = tfserving.REST_PORT
        out += ["```bash", f"docker build -t {image} tfserving/",
                f"docker run --rm -p {tfserving.GRPC_PORT}:{tfserving.GRPC_PORT} -p {p}:{p} {image}",
                f"curl -s localhost:{p}{tfserving.ready_path(f)}   # 200 once the version is AVAILABLE",
                "python client/tfserving_client.py --print-request > request.json",
                f"curl -s -d @request.json localhost:{p}/v1/models/{f.name}/versions/{f.version}:predict",
                "python client/tfserving_client.py            # REST; add --grpc for gRPC (tensorflow-serving-api)",
                f"curl -s localhost:{p}{tfserving.METRICS_PATH} | head", "```"]
    else:
        p = triton.HTTP_PORT
        out += ["```bash", f"docker build -t {image} triton/",
                f"docker run --rm -p {p}-{triton.METRICS_PORT}:{p}-{triton.METRICS_PORT} {image}",
                f"curl -s -o /dev/null -w '%{{http_code}}\\n' localhost:{p}/v2/health/ready   # 200 once the model is loaded",
                "python client/triton_client.py --print-request > request.json",
                f"curl -s -d @request.json localhost:{p}/v2/models/{f.name}/versions/{f.version}/infer",
                "python client/triton_client.py               # HTTP; add --grpc for gRPC (tritonclient)",
                f"curl -s localhost:{triton.METRICS_PORT}/metrics | head", "```"]
    if "k8s" in result.targets or "kserve" in result.targets:
        svc = f"{f.name}-{server}"
        port = tfserving.REST_PORT if server == "tfserving" else triton.HTTP_PORT
        out += ["", "On Kubernetes (push the image where your cluster can pull it, or load it into kind/minikube):", "",
                "```bash", f"docker push {image}        # or: kind load docker-image {image}"]
        if "k8s" in result.targets:
            out += [f"kubectl apply -f k8s/{server}/", f"kubectl rollout status deployment/{svc}",
                    f"kubectl port-forward service/{svc} {port}:{port} &"]
        if "kserve" in result.targets:
            out += [f"kubectl apply -f kserve/{server}-inferenceservice.yaml   # needs KServe installed",
                    f"kubectl get inferenceservice {svc}"]
        out += ["```"]
    return out + [""]


def bundle_readme(result: Any, paths: list[str]) -> str:
    lines = ["# Serving bundle", "", f"Written by `mdeploy bundle` from `{result.run_dir}` for: {', '.join(result.targets)}.", ""]
    if result.warnings:
        lines += ["**Warnings**", ""] + [f"- {w}" for w in result.warnings] + [""]
    lines += ["```", _layout(paths), "```", ""]
    for server in result.models:
        lines += _server_section(result, server)
    lines += ["## Probes", "",
              "- TF Serving: startup and readiness GET `/v1/models/NAME/versions/V/metadata`, which answers 200 only "
              "once that version is AVAILABLE (`/v1/models/NAME` answers 200 while it is still LOADING); liveness GET "
              "`/v1/models/NAME`, which answers whenever the server is up.",
              "- Triton: startup and readiness GET `/v2/health/ready` (with `--strict-readiness=true`: every model "
              "loaded); liveness GET `/v2/health/live`.",
              "- The startup probe allows ten times the measured load time (at least five minutes) before liveness "
              "can restart a pod.", "",
              "Every file here was validated before it was written: Kubernetes manifests with kubernetes-validate "
              "(strict), config.pbtxt with Triton's model_config proto, the TF Serving configs with their protos, the "
              "InferenceService with KServe's CRD schema. `bundle.json` records what was bundled and why.", ""]
    return "\n".join(lines)
