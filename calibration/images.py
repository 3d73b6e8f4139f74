"""A directory of PNG/JPEG images as a source, with explicit preprocessing: resize, scale, mean/std, layout, colour.

Images in class sub-directories (DIR/<class>/*.png) get labels: the index of the sub-directory in sorted order.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mdeploy.calibration.batches import LABELS, Batch, check_batch
from mdeploy.passes.core.artifact import TensorSpec
from mdeploy.passes.core.errors import BadInput

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
LAYOUTS = ("auto", "NHWC", "NCHW")
COLORS = ("auto", "rgb", "bgr", "gray")


@dataclass(frozen=True)
class ImageOptions:
    """Preprocessing, applied in this order: colour mode, resize to (height, width), x * scale, (x - mean) / std, layout.

    `size` None takes the model's input height and width; `layout`/`color` "auto" follow the input's channel axis.
    """

    size: tuple[int, int] | None = None
    scale: float = 1.0 / 255.0
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    layout: str = "auto"
    color: str = "auto"

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise BadInput(f"unknown image layout '{self.layout}'", f"choose from {', '.join(LAYOUTS)}")
        if self.color not in COLORS:
            raise BadInput(f"unknown colour mode '{self.color}'", f"choose from {', '.join(COLORS)}")
        if any(s == 0 for s in self.std):
            raise BadInput("--image-std has a zero", "standard deviations must be non-zero")


def image_options(size: str | None = None, scale: str = "1/255", mean: str | None = None, std: str | None = None,
                  layout: str = "auto", color: str = "auto") -> ImageOptions:
    """ImageOptions from their command-line (and recipe) spellings: `224x224`, `1/255`, `0.485,0.456,0.406`."""
    return ImageOptions(size=parse_size(size), scale=(parse_floats(scale, "--image-scale") or (1.0 / 255.0,))[0],
                        mean=parse_floats(mean, "--image-mean") or (0.0,), std=parse_floats(std, "--image-std") or (1.0,),
                        layout=layout, color=color)


def parse_size(text: str | None) -> tuple[int, int] | None:
    """`224` or `224x224` (height x width)."""
    if not text:
        return None
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts *= 2
    if len(parts) != 2 or min(parts) <= 0:
        raise BadInput(f"--image-size '{text}' is not HEIGHTxWIDTH", "for example --image-size 224x224")
    return parts[0], parts[1]


def parse_floats(text: str | None, flag: str) -> tuple[float, ...] | None:
    """`0.5` or `0.485,0.456,0.406`, or a fraction such as `1/255`."""
    if not text:
        return None
    try:
        values = tuple(_number(p) for p in text.split(","))
    except (ValueError, ZeroDivisionError) as e:
        raise BadInput(f"{flag} '{text}' is not a number or a comma-separated list", f"for example {flag} 0.485,0.456,0.406") from e
    return values


def _number(text: str) -> float:
    if "/" in text:
        num, den = text.split("/")
        return float(num) / float(den)
    return float(text)


def _layout(spec: TensorSpec, options: ImageOptions) -> str:
    if options.layout != "auto":
        return options.layout
    if len(spec.shape) == 4 and spec.shape[1] in (1, 3) and spec.shape[3] not in (1, 3):
        return "NCHW"
    return "NHWC"


@dataclass
class ImageDirSource:
    """PNG/JPEG files under a directory (sorted; class sub-directories give labels), decoded with Pillow a batch at a time."""

    path: Path
    inputs: tuple[TensorSpec, ...]
    options: ImageOptions | None = None
    batch_size: int = 32

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        self.options = self.options or ImageOptions()
        if len(self.inputs) != 1 or len(self.inputs[0].shape) != 4:
            shapes = ", ".join(f"'{t.name}' {t.shape_str()}" for t in self.inputs)
            raise BadInput(f"{self.path}: an image directory feeds one 4-D image input, but the model has {shapes}",
                           "use a .npz keyed by input name for this model")
        self.spec = self.inputs[0]
        self.layout = _layout(self.spec, self.options)
        channel_dim = self.spec.shape[1] if self.layout == "NCHW" else self.spec.shape[3]
        self.channels = channel_dim or 3
        hw = self.spec.shape[2:4] if self.layout == "NCHW" else self.spec.shape[1:3]
        self.size = self.options.size or (None if None in hw else (int(hw[0]), int(hw[1])))
        if self.size is None:
            raise BadInput(f"input '{self.spec.name}' has dynamic height/width {self.spec.shape_str()}",
                           "give the size to resize to with --image-size HEIGHTxWIDTH")
        self.color = self.options.color if self.options.color != "auto" else ("gray" if self.channels == 1 else "rgb")
        if (self.color == "gray") != (self.channels == 1):
            raise BadInput(f"colour mode '{self.color}' gives {1 if self.color == 'gray' else 3} channel(s) but input "
                           f"'{self.spec.name}' expects {self.channels} ({self.spec.shape_str()}, {self.layout})",
                           "choose --image-color gray for one channel, rgb or bgr for three, or set --image-layout")
        for flag, values in (("--image-mean", self.options.mean), ("--image-std", self.options.std)):
            if len(values) not in (1, self.channels):
                raise BadInput(f"{flag} has {len(values)} values but input '{self.spec.name}' has {self.channels} channel(s)",
                               "give one value, or one per channel")
        files = sorted(p for p in self.path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        classes = sorted({p.parent.relative_to(self.path).parts[0] for p in files if p.parent != self.path})
        self._labelled = bool(classes) and all(p.parent != self.path for p in files)
        index = {c: i for i, c in enumerate(classes)}
        self._files = [(p, index[p.relative_to(self.path).parts[0]] if self._labelled else -1) for p in files]
        self.classes = classes if self._labelled else []

    has_labels = property(lambda self: self._labelled)
    description = property(lambda self: f"{self.path.name}/ ({len(self._files)} images)")

    def __len__(self) -> int:
        return len(self._files)

    def __iter__(self) -> Iterator[Batch]:
        for start in range(0, len(self._files), self.batch_size):
            chunk = self._files[start:start + self.batch_size]
            batch: Batch = {self.spec.name: np.stack([self.preprocess(p) for p, _ in chunk])}
            if self._labelled:
                batch[LABELS] = np.asarray([label for _, label in chunk], dtype=np.int64)
            yield check_batch(batch, self.inputs, f"{self.description} at {chunk[0][0].name}")

    def preprocess(self, file: Path) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(file) as im:
                im = im.convert("L" if self.color == "gray" else "RGB")
                im = im.resize((self.size[1], self.size[0]), Image.BILINEAR)
                x = np.asarray(im, dtype=np.float32)
        except (UnidentifiedImageError, OSError) as e:
            raise BadInput(f"{file}: not a readable image ({e})", "remove or re-encode the file (PNG or JPEG)") from e
        if x.ndim == 2:
            x = x[..., None]
        if self.color == "bgr":
            x = x[..., ::-1]
        x = x * np.float32(self.options.scale)
        x = (x - np.asarray(self.options.mean, np.float32)) / np.asarray(self.options.std, np.float32)
        if self.layout == "NCHW":
            x = np.transpose(x, (2, 0, 1))
        return np.ascontiguousarray(x)
