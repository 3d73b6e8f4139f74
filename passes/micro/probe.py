"""The TFLite Micro worker: runs in its own process, because TFLM's Python interpreter can crash the process
(a segfault, not an exception) when an arena is too small or a kernel refuses a tensor.

    python -m mdeploy.passes.micro.probe need MODEL          -> JSON {need, recorded, probes}
    python -m mdeploy.passes.micro.probe run MODEL ARENA IN.npz OUT.npz   -> JSON {samples}
    python -m mdeploy.passes.micro.probe try MODEL ARENA    -> JSON {ok}

`need` bisects the smallest arena (16-byte steps) with which the model allocates and runs, each try in a forked
child (this worker runs no threads, so fork is safe), starting from the RecordingMicroAllocator's total as the
lower bound. `run` invokes the model sample by sample with exactly the given arena.
"""
from __future__ import annotations

import json
import os
import re
import sys
import tempfile

ALIGN = 16
_MAX_ARENA = 1 << 31


def _interpreter(model: bytes, arena: int):
    from tflite_micro.python.tflite_micro import runtime

    return runtime.Interpreter.from_bytes(model, arena_size=arena)


def _input_count(model: bytes) -> int:
    from tflite_micro.python.tflite_micro import runtime

    m = runtime.convert_bytearray_to_object(model)
    return len(m.subgraphs[0].inputs)


def _zero_inputs(interp, n: int) -> None:
    import numpy as np

    for i in range(n):
        d = interp.get_input_details(i)
        interp.set_input(np.zeros(tuple(int(x) for x in d["shape"]), d["dtype"]), i)


def _try(model: bytes, arena: int, n_inputs: int, record: bool = False) -> tuple[bool, str]:
    """Allocate and invoke with `arena` bytes in a forked child; (ok, the child's stderr)."""
    with tempfile.TemporaryFile() as err:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child: never returns
            code = 1
            try:
                os.dup2(err.fileno(), 2)
                interp = _interpreter(model, arena)
                _zero_inputs(interp, n_inputs)
                interp.invoke()
                if record:
                    interp.print_allocations()
                code = 0
            except BaseException as e:  # noqa: BLE001 - any failure is a failed try
                os.write(2, f"\n{type(e).__name__}: {e}\n".encode())
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        err.seek(0)
        text = err.read().decode(errors="replace")
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        what = {6: "aborted on an internal check (SIGABRT)", 11: "crashed (SIGSEGV)"}.get(sig, f"was killed by signal {sig}")
        text += f"\nTFLite Micro {what} while preparing or running the model"
    return os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, text


def measure_need(path: str) -> dict:
    import numpy  # noqa: F401 - imported once here, so every forked try starts warm
    from tflite_micro.python.tflite_micro import runtime  # noqa: F401

    model = open(path, "rb").read()
    n_inputs = _input_count(model)
    hi = max(1 << 16, len(model) * 4)
    probes = 0
    while True:
        ok, text = _try(model, hi, n_inputs, record=True)
        probes += 1
        if ok:
            break
        if hi >= _MAX_ARENA:
            return {"error": _last_error(text), "probes": probes}
        hi *= 4
    m = re.search(r"Arena allocation total (\d+) bytes", text)
    recorded = int(m.group(1)) if m else 0
    lo = max(recorded - ALIGN, 0) // ALIGN * ALIGN  # a failing size: the allocator needs at least its total
    hi = (hi + ALIGN - 1) // ALIGN * ALIGN
    if lo and _try(model, lo, n_inputs)[0]:  # never seen, but then the bound was not one: search from 0
        lo = 0
    probes += 1
    while hi - lo > ALIGN:
        mid = (lo + hi) // 2 // ALIGN * ALIGN
        ok, _ = _try(model, mid, n_inputs)
        probes += 1
        if ok:
            hi = mid
        else:
            lo = mid
    return {"need": hi, "recorded": recorded, "probes": probes}


def _last_error(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("[RecordingMicroAllocator]")]
    useful = [ln for ln in lines if "fail" in ln.lower() or "error" in ln.lower() or "not" in ln.lower()]
    return ((useful or lines or ["TFLite Micro failed without a message"])[0])[:300]


def run(path: str, arena: int, inputs: str, outputs: str) -> dict:
    import numpy as np

    model = open(path, "rb").read()
    feeds = np.load(inputs)
    n_inputs = _input_count(model)
    arrays = [feeds[f"input_{i}"] for i in range(n_inputs)]
    interp = _interpreter(model, arena)
    n_out = 0
    while True:
        try:
            interp.get_output_details(n_out)
        except Exception:  # noqa: BLE001 - past the last output
            break
        n_out += 1
    results: list[list] = [[] for _ in range(n_out)]
    for s in range(len(arrays[0])):
        for i, a in enumerate(arrays):
            interp.set_input(np.ascontiguousarray(a[s:s + 1]), i)
        interp.invoke()
        for o in range(n_out):
            results[o].append(np.array(interp.get_output(o)))
    np.savez(outputs, **{f"output_{o}": np.concatenate(r) for o, r in enumerate(results)})
    return {"samples": len(arrays[0]), "outputs": n_out}


def main(argv: list[str]) -> int:
    try:
        if argv[0] == "need":
            result = measure_need(argv[1])
        elif argv[0] == "try":  # does the model allocate and run with exactly this arena?
            model = open(argv[1], "rb").read()
            ok, text = _try(model, int(argv[2]), _input_count(model))
            result = {"ok": ok} if ok else {"ok": False, "reason": _last_error(text)}
        elif argv[0] == "run":
            with open(os.devnull, "w") as null:
                saved = os.dup(2)
                os.dup2(null.fileno(), 2)
                try:
                    result = run(argv[1], int(argv[2]), argv[3], argv[4])
                finally:
                    os.dup2(saved, 2)
        else:
            result = {"error": f"unknown mode {argv[0]}"}
    except Exception as e:  # noqa: BLE001 - reported to the parent as data
        result = {"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]}
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
