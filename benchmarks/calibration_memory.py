"""Peak memory of ONNX static int8 calibration with 2,000 vs 200 samples, each run in its own fresh process.

Streaming means the larger run should cost about the same: the ratio printed should stay <= ~1.5.
The model is a small conv net on 3x64x64 inputs built with onnx.helper (no TensorFlow in the measured
processes), and the data a .npz on disk: 2,000 samples are 98 MB, so loading them whole would show.
Run: /work/venv/bin/python benchmarks/calibration_memory.py [--small 200] [--large 2000]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np


def build_model(path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    r = np.random.default_rng(0)
    inits = [numpy_helper.from_array(r.standard_normal((16, 3, 3, 3)).astype(np.float32) * 0.2, "w1"),
             numpy_helper.from_array(r.standard_normal((32, 16, 3, 3)).astype(np.float32) * 0.1, "w2"),
             numpy_helper.from_array(r.standard_normal((32, 10)).astype(np.float32), "w3")]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2]), helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("GlobalAveragePool", ["r2"], ["g"]), helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("MatMul", ["f", "w3"], ["y"])]
    graph = helper.make_graph(nodes, "bench", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 64, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)


def child(model: Path, data: Path, samples: int, out_dir: Path) -> None:
    import time

    from mdeploy.calibration import DataSpec
    from mdeploy.passes.backends import open_artifact
    from mdeploy.passes.core.pipeline import Context, run_pass
    from mdeploy.passes.quantize.onnx import QuantizeOnnx

    t0 = time.perf_counter()
    run_pass(QuantizeOnnx(calibration=DataSpec(str(data), take=samples)), open_artifact(model), Context(out_dir=out_dir), [])
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # Linux: kilobytes
    print(json.dumps({"samples": samples, "peak_mb": peak_kb / 1024, "seconds": time.perf_counter() - t0}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--small", type=int, default=200)
    ap.add_argument("--large", type=int, default=2000)
    ap.add_argument("--child", nargs=4, metavar=("MODEL", "DATA", "SAMPLES", "OUT"))
    args = ap.parse_args()
    if args.child:
        m, d, n, o = args.child
        child(Path(m), Path(d), int(n), Path(o))
        return
    with tempfile.TemporaryDirectory(prefix="mdeploy-membench-") as tmp:
        tmp = Path(tmp)
        build_model(tmp / "model.onnx")
        x = np.random.default_rng(0).random((args.large, 3, 64, 64), dtype=np.float32)
        np.savez(tmp / "data.npz", x=x)
        print(f"data: {args.large} samples, {x.nbytes / 2**20:.0f} MB on disk ({tmp / 'data.npz'})")
        del x
        results = {}
        for n in (args.small, args.large):
            out = subprocess.run([sys.executable, __file__, "--child", str(tmp / "model.onnx"), str(tmp / "data.npz"), str(n),
                                  str(tmp / f"out{n}")], capture_output=True, text=True, check=True)
            results[n] = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{n:>6} samples: peak RSS {results[n]['peak_mb']:.0f} MB, {results[n]['seconds']:.1f} s")
        ratio = results[args.large]["peak_mb"] / results[args.small]["peak_mb"]
        print(f"ratio {args.large}/{args.small}: {ratio:.2f}x")


if __name__ == "__main__":
    main()
