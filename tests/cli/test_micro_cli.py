"""`mdeploy micro`: the C array holds the model byte for byte, 16-byte aligned; the resolver lists the model's ops;
the arena is at least the measured need, at most 15% above it and verified in TFLite Micro; TFLM and LiteRT agree
within one quantization step on every validation sample of the int8 digits model."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from mdeploy.passes.core.errors import PassFailed
from mdeploy.passes.micro.ops import resolver_methods


def _try_arena(model: Path, arena: int) -> bool:
    out = subprocess.run([sys.executable, "-m", "mdeploy.passes.micro.probe", "try", str(model), str(arena)],
                         capture_output=True, text=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])["ok"]


@pytest.fixture(scope="module")
def int8_digits(digits_tflite_quantized) -> Path:
    return digits_tflite_quantized / "tflite" / "model.int8.tflite"


@pytest.fixture(scope="module")
def micro_int8(tmp_path_factory, int8_digits, digits_validation) -> tuple[dict, Path]:
    from mdeploy.cli import run

    out = tmp_path_factory.mktemp("micro_int8")
    assert run(["micro", str(int8_digits), "-o", str(out), "--data", str(digits_validation), "--name", "digits",
                "--json"]) == 0
    return json.loads((out / "micro.json").read_text()), out


def test_tflm_agrees_with_litert_within_one_step_on_every_validation_sample(micro_int8):
    report, _ = micro_int8
    assert report["ok"] and report["samples"] == 300  # the whole digits validation split
    [probs] = report["outputs"]
    assert probs["step"] == pytest.approx(1 / 256)  # the int8 softmax's step, through the float output's DEQUANTIZE
    assert probs["max_steps"] <= 1.0 and probs["ok"]


def test_the_arena_is_measured_bounded_and_verified(micro_int8, int8_digits):
    report, out = micro_int8
    need, arena = report["arena_measured"], report["arena_bytes"]
    assert need <= arena <= 1.15 * need and arena % 16 == 0
    assert report["arena_recorded"] <= need  # TFLM's own recording is a lower bound of the real need
    assert _try_arena(int8_digits, arena)  # the declared arena runs the model
    assert _try_arena(int8_digits, need)  # the measurement is real: the need is enough...
    assert not _try_arena(int8_digits, need - 16)  # ...and is the smallest that is
    header = (out / "digits_model_data.h").read_text()
    assert f"constexpr int kDigitsTensorArenaSize = {arena};" in header


def test_the_c_array_is_the_model_byte_for_byte_and_aligned(micro_int8, int8_digits, tmp_path):
    report, out = micro_int8
    source = (out / "digits_model_data.cc").read_text()
    assert "alignas(16) const unsigned char g_digits_model[]" in source
    data = bytes(int(b, 16) for b in re.findall(r"0x([0-9a-f]{2})", source))
    assert data == int8_digits.read_bytes()
    assert f"g_digits_model_len = {len(data)};" in source
    ops = (out / "digits_model_ops.h").read_text()
    calls = re.findall(r"resolver\.(Add\w+)\(\)", ops)
    assert set(calls) >= {"AddConv2D", "AddFullyConnected", "AddSoftmax", "AddQuantize", "AddDequantize"}
    assert f"constexpr int kDigitsOpCount = {len(calls)};" in ops and len(calls) == len(set(calls))
    if shutil.which("g++") is None:
        pytest.skip("no g++ to compile the generated array")
    main = tmp_path / "main.cc"
    main.write_text('#include <cstdint>\n#include <cstdio>\n#include "digits_model_data.h"\n'
                    "int main() { std::printf(\"%u %d\\n\", g_digits_model_len, "
                    "int(reinterpret_cast<std::uintptr_t>(g_digits_model) % 16)); }\n")
    exe = tmp_path / "main"
    subprocess.run(["g++", "-std=c++17", "-I", str(out), str(main), str(out / "digits_model_data.cc"), "-o", str(exe)],
                   check=True, timeout=120)
    assert subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.split() == [str(len(data)), "0"]


def test_float_model_runs_and_float16_weights_get_a_clear_error(mdeploy, digits_tflite_quantized, digits_validation, tmp_path):
    r = mdeploy("micro", digits_tflite_quantized / "tflite" / "model.tflite", "-o", tmp_path / "f32",
                "--data", digits_validation, "--json")
    assert r.exit_code == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["outputs"][0]["step"] is None and report["outputs"][0]["ok"]
    r = mdeploy("micro", digits_tflite_quantized / "tflite" / "model.fp16.tflite", "-o", tmp_path / "f16")
    assert r.exit_code == 3
    assert "TFLite Micro cannot run this model" in r.stderr and "dequantize" in r.stderr.lower()
    assert not (tmp_path / "f16").exists() or not any((tmp_path / "f16").iterdir())


def test_an_op_without_a_tflm_kernel_is_named():
    assert resolver_methods(Counter({"CONV_2D": 2, "RELU": 1}), "m.tflite") == ["AddConv2D", "AddRelu"]
    with pytest.raises(PassFailed) as e:
        resolver_methods(Counter({"CONV_2D": 1, "TOPK_V2": 1, "custom:MyOp": 1}), "m.tflite")
    assert "TOPK_V2" in e.value.message and "MyOp" in e.value.message and e.value.exit_code == 3


def test_not_a_tflite_model_exits_2(mdeploy, digits_model, tmp_path):
    r = mdeploy("micro", digits_model, "-o", tmp_path / "m")
    assert r.exit_code == 2 and "not a .tflite" in r.stderr
