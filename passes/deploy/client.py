"""A small client per server, generated with the model's real input and output names, shapes and dtypes: REST and
gRPC for TF Serving (gRPC through tensorflow-serving-api), HTTP and gRPC for Triton (tritonclient)."""
from __future__ import annotations

import json

from mdeploy.passes.deploy import tfserving, triton
from mdeploy.passes.deploy.facts import BundleFile, ModelFacts

_COMMON = '''
import argparse
import json
import sys
import urllib.request

import numpy as np

MODEL = {model!r}
VERSION = {version}
# name -> (shape, dtype): None is a dynamic dimension (the first one is the batch)
INPUTS = {inputs}
OUTPUTS = {outputs}


def example_inputs(batch=1, seed=0):
    """Random inputs of the model's shapes and dtypes (a dynamic batch becomes `batch`, other dynamic dims 1)."""
    rng = np.random.default_rng(seed)
    feeds = {{}}
    for name, (shape, dtype) in INPUTS.items():
        dims = [(batch if i == 0 else 1) if d is None else d for i, d in enumerate(shape)]
        feeds[name] = rng.random(dims).astype(dtype) if np.dtype(dtype).kind == "f" else np.zeros(dims, dtype)
    return feeds


def load_inputs(path):
    """Inputs from an .npz keyed by input name (as mdeploy's --data reads them)."""
    with np.load(path) as data:
        missing = [n for n in INPUTS if n not in data.files]
        if missing:
            sys.exit(f"{{path}} has no array for input(s) {{missing}}; it holds {{data.files}}")
        return {{n: data[n].astype(INPUTS[n][1]) for n in INPUTS}}
'''

_TFSERVING = '''

def rest_request(feeds):
    """The body of TF Serving's REST predict call (columnar "inputs")."""
    return {{"signature_name": "serving_default", "inputs": {{n: a.tolist() for n, a in feeds.items()}}}}


def predict_rest(url, feeds, timeout=30):
    body = json.dumps(rest_request(feeds)).encode()
    req = urllib.request.Request(f"{{url}}/v1/models/{{MODEL}}/versions/{{VERSION}}:predict", data=body,
                                 headers={{"Content-Type": "application/json"}})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        out = json.loads(r.read())["outputs"]
    out = out if isinstance(out, dict) else {{next(iter(OUTPUTS)): out}}
    return {{n: np.asarray(v, dtype=OUTPUTS[n][1]) for n, v in out.items()}}


def grpc_request(feeds):
    """A tensorflow_serving.apis PredictRequest for the feeds (needs tensorflow-serving-api)."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = MODEL
    request.model_spec.version.value = VERSION
    request.model_spec.signature_name = "serving_default"
    for name, array in feeds.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(array))
    return request


def predict_grpc(target, feeds, timeout=30):
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        response = stub.Predict(grpc_request(feeds), timeout=timeout)
    return {{n: tf.make_ndarray(t) for n, t in response.outputs.items()}}


DEFAULT_REST, DEFAULT_GRPC = "http://localhost:{rest_port}", "localhost:{grpc_port}"
'''

_TRITON = '''
# the v2 protocol's datatype of each input
DATATYPES = {datatypes}


def rest_request(feeds):
    """The body of a v2 (KServe/Triton) REST infer call."""
    return {{"inputs": [{{"name": n, "shape": list(a.shape), "datatype": DATATYPES[n], "data": a.ravel().tolist()}}
                        for n, a in feeds.items()]}}


def infer_inputs(module, feeds):
    """tritonclient InferInput objects for the feeds; `module` is tritonclient.http or tritonclient.grpc."""
    inputs = []
    for name, array in feeds.items():
        item = module.InferInput(name, list(array.shape), DATATYPES[name])
        item.set_data_from_numpy(array)
        inputs.append(item)
    return inputs


def _infer(module, url, feeds):
    client = module.InferenceServerClient(url=url)
    outputs = [module.InferRequestedOutput(n) for n in OUTPUTS]
    result = client.infer(MODEL, infer_inputs(module, feeds), model_version=str(VERSION), outputs=outputs)
    return {{n: result.as_numpy(n) for n in OUTPUTS}}


def predict_rest(url, feeds):
    import tritonclient.http as module

    return _infer(module, url.removeprefix("http://"), feeds)


def predict_grpc(target, feeds):
    import tritonclient.grpc as module

    return _infer(module, target, feeds)


DEFAULT_REST, DEFAULT_GRPC = "http://localhost:{rest_port}", "localhost:{grpc_port}"
'''

_MAIN = '''

def main(argv=None):
    parser = argparse.ArgumentParser(description=f"Send one prediction to {{MODEL}} on {server}.")
    parser.add_argument("--url", default=DEFAULT_REST, help="REST endpoint [%(default)s]")
    parser.add_argument("--grpc", nargs="?", const=DEFAULT_GRPC, default=None, help="use gRPC at this host:port instead")
    parser.add_argument("--data", help=".npz keyed by input name (default: random inputs of the right shape)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--print-request", action="store_true", help="print the REST request body (for curl -d @-) and exit")
    args = parser.parse_args(argv)
    feeds = load_inputs(args.data) if args.data else example_inputs(args.batch)
    if args.print_request:
        print(json.dumps(rest_request(feeds)))
        return
    out = predict_grpc(args.grpc, feeds) if args.grpc else predict_rest(args.url, feeds)
    for name, value in out.items():
        print(name, value.shape, value.dtype)
        print(np.array2string(value, threshold=50, precision=4))


if __name__ == "__main__":
    main()
'''


def _spec(tensors) -> str:
    return "{" + ", ".join(f"{t.name!r}: ({list(t.shape)!r}, {t.dtype!r})" for t in tensors) + "}"


def client_source(server: str, facts: ModelFacts) -> str:
    doc = (f'"""Client for {facts.name} (version {facts.version}) on {server}, generated by mdeploy bundle from '
           f'{facts.artifact}.\n\n'
           + "\n".join(f"input  {t.name}: {t.shape_text()} {t.dtype}" for t in facts.inputs) + "\n"
           + "\n".join(f"output {t.name}: {t.shape_text()} {t.dtype}" for t in facts.outputs) + "\n\n"
           + ("Needs numpy; gRPC needs tensorflow-serving-api (and grpcio, tensorflow)." if server == "tfserving"
              else "Needs numpy and tritonclient[http,grpc].") + '\n"""\n')
    common = _COMMON.format(model=facts.name, version=facts.version, inputs=_spec(facts.inputs),
                            outputs=_spec(facts.outputs))
    if server == "tfserving":
        body = _TFSERVING.format(rest_port=tfserving.REST_PORT, grpc_port=tfserving.GRPC_PORT)
        label = "TF Serving"
    else:
        datatypes = json.dumps({t.name: triton.dtype(t)[1] for t in facts.inputs})
        body = _TRITON.format(datatypes=datatypes, rest_port=triton.HTTP_PORT, grpc_port=triton.GRPC_PORT)
        label = "Triton"
    return doc + common + body + _MAIN.format(server=label)


def files(server: str, facts: ModelFacts) -> list[BundleFile]:
    return [BundleFile(f"client/{server}_client.py", client_source(server, facts), "python")]
