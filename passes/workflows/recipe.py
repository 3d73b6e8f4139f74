"""Recipes: the `optimize` pipeline's settings as a typed value, read from TOML and overridden by CLI flags.

Every CLI option of `mdeploy optimize` has a recipe key. Unknown keys and wrong types are errors
that name the key, so a typo never silently falls back to a default.
"""
from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mdeploy.calibration.batches import CALLABLE_SPEC
from mdeploy.calibration.images import image_options
from mdeploy.passes.checks.bounds import bounds_of, check_bounds, with_bounds
from mdeploy.passes.core.errors import BadInput
from mdeploy.passes.core.fsio import safe_component
from mdeploy.passes.defaults import DEFAULT_OPSET

DEPLOYMENT_CHOICES = ("cloud", "edge", "all")
QUANT_MODES = ("int8", "dynamic", "fp16")
# The opsets tf2onnx converts to (its OPSET_TO_IR_VERSION ends at 18; below 9 it lacks most TF ops). Checked up front
# without importing tf2onnx, which would import TensorFlow.
ONNX_OPSETS = range(9, 19)


def check_opset(opset: int, key: str = "--opset") -> int:
    if opset not in ONNX_OPSETS:
        raise BadInput(f"{key} {opset} is outside the opsets tf2onnx supports ({ONNX_OPSETS[0]}-{ONNX_OPSETS[-1]})",
                       f"use {key} 17 (the default) or another value in that range")
    return opset


def _at_least(value: int | None, minimum: int, key: str, optional: bool = False) -> None:
    if (value is None and optional) or (value is not None and value >= minimum):
        return
    raise BadInput(f"recipe key '{key}' must be at least {minimum}, got {value}", f"set {key} to {minimum} or more")


@dataclass(frozen=True)
class PruneSettings:
    sparsity: float = 0.0
    scope: str = "layer"
    pattern: str | None = None
    exclude: tuple[str, ...] = ()
    # fine-tuning (both kinds of pruning): the labelled data, then FineTuning's options (None: its default)
    fine_tune: str | None = None
    epochs: int | None = None
    batch_size: int | None = None
    learning_rate: float | None = None
    loss: str | None = None
    metric: str | None = None
    # structured (filter) pruning instead of zeros: one of ratio / flops_target
    structured: bool = False
    ratio: float | None = None
    flops_target: float | None = None
    criterion: str = "l1"
    channel_multiple: int | str = "auto"  # or N for every channel group
    compare_dense: bool | None = None  # also build the unpruned artifacts (default: with structured pruning)

    def fine_tuning(self):
        """The FineTuning value of these keys (None without fine_tune); bad values raise BadInput."""
        from mdeploy.passes.prune.fine_tuning import fine_tuning_from

        return fine_tuning_from(self.fine_tune, epochs=self.epochs, batch_size=self.batch_size,
                                learning_rate=self.learning_rate, loss=self.loss, metric=self.metric)


@dataclass(frozen=True)
class QuantizeSettings:
    onnx: tuple[str, ...] = ("int8",)
    tflite: tuple[str, ...] = ("int8",)
    method: str = "minmax"
    per_channel: bool = True
    format: str = "qdq"
    activations: str = "uint8"
    symmetric_activations: bool = False
    weight_ops_only: bool = False  # ONNX int8: only Conv/MatMul/Gemm quantized
    exclude: tuple[str, ...] = ()  # ONNX nodes or op types kept in float
    denylist: tuple[str, ...] = ()  # TFLite ops (output tensor names) or op types kept in float
    io: str = "float"
    samples: int = 300
    accuracy_budget: float | None = None  # max accuracy drop; int8 that misses it is searched (see --accuracy-budget)
    debug_layers: bool = False


@dataclass(frozen=True)
@with_bounds
class ValidateSettings:
    """The gate's bounds, a key each (passes/checks/bounds.py; None: the task's default, see passes/checks/gates.py);
    strict fails a run nothing gated."""

    strict: bool = False


@dataclass(frozen=True)
class BenchSettings:
    enabled: bool = True
    batch: int = 1
    threads: int | None = None
    warmup: int = 5
    runs: int = 50


@dataclass(frozen=True)
class ImageSettings:
    """Preprocessing for directories of images (calibration and validation), spelled as on the command line."""

    size: str | None = None
    scale: str = "1/255"
    mean: str | None = None
    std: str | None = None
    layout: str = "auto"
    color: str = "auto"


@dataclass(frozen=True)
class Recipe:
    """Everything `mdeploy optimize` does, with the defaults of the default pipeline."""

    target: str = "all"
    calibration: str | None = None
    validation: str | None = None
    opset: int = DEFAULT_OPSET
    simplify: bool = True
    jobs: int | None = None  # None: one branch process per 2 cores (see default_jobs)
    cache: bool = True
    cache_dir: str | None = None
    name: str | None = None
    input_shapes: tuple[str, ...] = ()  # "NAME:D1,D2,..." (? keeps a dim dynamic), as --input-shape
    prune: PruneSettings = field(default_factory=PruneSettings)
    quantize: QuantizeSettings = field(default_factory=QuantizeSettings)
    validate: ValidateSettings = field(default_factory=ValidateSettings)
    bench: BenchSettings = field(default_factory=BenchSettings)
    images: ImageSettings = field(default_factory=ImageSettings)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_SECTIONS = {"prune": PruneSettings, "quantize": QuantizeSettings, "validate": ValidateSettings, "bench": BenchSettings,
             "images": ImageSettings}


def _type_ok(value: Any, annotation: str) -> bool:
    kinds = {
        "str": lambda v: isinstance(v, str),
        "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        "bool": lambda v: isinstance(v, bool),
        "tuple[str, ...]": lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
        "None": lambda v: v is None,
    }
    return any(kinds[part.strip()](value) for part in annotation.split("|"))


def _build(cls, data: dict[str, Any], where: str, base=None):
    base = base if base is not None else cls()
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{where}{key}"
        if key not in fields:
            known = ", ".join(sorted(fields))
            raise BadInput(f"unknown recipe key '{dotted}'", f"known keys{' in [' + where.rstrip('.') + ']' if where else ''}: {known}")
        if key in _SECTIONS and not where:
            if not isinstance(value, dict):
                raise BadInput(f"recipe key '{dotted}' must be a table ([{key}])", f"write it as a [{key}] section")
            values[key] = _build(_SECTIONS[key], value, f"{key}.", getattr(base, key))
            continue
        annotation = str(fields[key].type)
        if not _type_ok(value, annotation):
            raise BadInput(f"recipe key '{dotted}' must be {annotation.replace('tuple[str, ...]', 'a list of strings')}, not {type(value).__name__} ({value!r})",
                           "fix the value's type in the recipe")
        values[key] = tuple(value) if isinstance(value, list) else (float(value) if annotation.startswith("float") and isinstance(value, int) else value)
    return dataclasses.replace(base, **values)


def check(recipe: Recipe) -> Recipe:
    """Value checks that types alone cannot express."""
    if recipe.target not in DEPLOYMENT_CHOICES:
        raise BadInput(f"recipe key 'target' must be one of {', '.join(DEPLOYMENT_CHOICES)}, not '{recipe.target}'", "use --target cloud|edge|all")
    for fmt in ("onnx", "tflite"):
        bad = [m for m in getattr(recipe.quantize, fmt) if m not in QUANT_MODES]
        if bad:
            raise BadInput(f"recipe key 'quantize.{fmt}' has unknown mode(s) {', '.join(bad)}", f"modes: {', '.join(QUANT_MODES)}")
    if not 0.0 <= recipe.prune.sparsity < 1.0:
        raise BadInput(f"sparsity must be in [0, 1), got {recipe.prune.sparsity}", "pass e.g. --sparsity 0.5")
    p = recipe.prune
    if p.structured:
        if p.sparsity > 0 or p.pattern:
            raise BadInput("recipe key 'prune.structured' removes filters; 'prune.sparsity'/'prune.pattern' zero weights",
                           "use one kind of pruning")
        from mdeploy.passes.prune.structured import PruneStructured, parse_multiple

        PruneStructured(ratio=p.ratio, flops_target=p.flops_target, criterion=p.criterion,
                        multiple=parse_multiple(p.channel_multiple)).check()
    elif p.ratio is not None or p.flops_target is not None:
        raise BadInput("recipe keys 'prune.ratio' and 'prune.flops_target' need 'prune.structured = true'",
                       "set prune.structured = true (or --structured)")

    image_options(**dataclasses.asdict(recipe.images))  # bad sizes, layouts or colours fail before any work
    if recipe.jobs is not None and recipe.jobs < 1:
        raise BadInput(f"jobs must be at least 1, got {recipe.jobs}", "use --jobs 1 to run serially")
    # Every value a later step would refuse is refused now, before anything is written.
    check_opset(recipe.opset, "opset")
    if recipe.name is not None:
        safe_component(recipe.name, "recipe key 'name'")
    b = recipe.bench
    _at_least(b.runs, 1, "bench.runs")
    _at_least(b.warmup, 0, "bench.warmup")
    _at_least(b.batch, 1, "bench.batch")
    _at_least(b.threads, 1, "bench.threads", optional=True)
    _at_least(recipe.quantize.samples, 1, "quantize.samples")
    budget = recipe.quantize.accuracy_budget
    if budget is not None and not 0.0 <= budget < 1.0:
        raise BadInput(f"recipe key 'quantize.accuracy_budget' must be a fraction in [0, 1), got {budget}",
                       "0.01 is one point of accuracy")
    check_bounds(bounds_of(recipe.validate), "recipe key 'validate.")
    recipe.prune.fine_tuning()  # its values are checked where FineTuning is made, even without fine_tune
    return recipe


def default_jobs() -> int:
    """Parallel branches only where cores allow: TensorFlow and ONNX Runtime already use two cores each, so on a
    2-core machine two branch processes gained 7% wall time for 2 GB more peak memory (docs/benchmarks.md)."""
    import os

    return 2 if (os.cpu_count() or 1) >= 4 else 1


def read_toml(path: Path, what: str, hint: str) -> dict[str, Any]:
    """A TOML file as a dict, or BadInput naming the file (recipes and zoo manifests)."""
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"{path}: no such {what}", hint)
    try:
        return tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise BadInput(f"{path} is not valid TOML ({e})", f"check the {what}'s syntax") from e


def load_recipe(path: Path | None, overrides: dict[str, Any] | None = None) -> Recipe:
    """Defaults, then the TOML recipe, then CLI overrides (dotted keys such as 'prune.sparsity')."""
    recipe = Recipe()
    if path is not None:
        data = read_toml(Path(path), "recipe file", "pass a TOML file, e.g. recipes/edge-int8.toml")
        recipe = _resolve_paths(_build(Recipe, data, ""), Path(path).parent)
    if overrides:
        nested: dict[str, Any] = {}
        for key, value in overrides.items():
            if value is None:
                continue
            if "." in key:
                section, sub = key.split(".", 1)
                nested.setdefault(section, {})[sub] = list(value) if isinstance(value, tuple) else value
            else:
                nested[key] = list(value) if isinstance(value, tuple) else value
        recipe = _build(Recipe, nested, "", recipe)
    return check(recipe)


def resolve_data_spec(spec: str | None, base: Path) -> str | None:
    """A data spec written in a recipe or zoo manifest, whose paths are relative to that file (`base`, its folder),
    not to the working directory. `random` and a `module:function` spec (when no such file exists) stay as written:
    the same spec means the same thing in a recipe, a manifest and on the command line."""
    if spec is None or spec == "random":
        return spec
    path = Path(spec)
    if CALLABLE_SPEC.match(spec) and not path.exists() and not (base / path).exists():
        return spec
    return spec if path.is_absolute() else str((base / path).resolve())


def _resolve_paths(recipe: Recipe, base: Path) -> Recipe:
    """Data paths in a recipe are relative to the recipe file, not to the working directory."""
    def fix(p: str | None) -> str | None:
        return resolve_data_spec(p, base)

    return dataclasses.replace(recipe, calibration=fix(recipe.calibration), validation=fix(recipe.validation),
                               prune=dataclasses.replace(recipe.prune, fine_tune=fix(recipe.prune.fine_tune)))


def with_fp16(recipe: Recipe) -> Recipe:
    """The recipe with fp16 added to both quantization targets (`optimize --fp16`)."""
    q = recipe.quantize
    return dataclasses.replace(recipe, quantize=dataclasses.replace(
        q, onnx=tuple(dict.fromkeys((*q.onnx, "fp16"))), tflite=tuple(dict.fromkeys((*q.tflite, "fp16")))))
