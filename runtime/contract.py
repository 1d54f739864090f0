"""The model contract: what an emotion model takes and gives.

One frozen :class:`ModelSpec` is shared by the trainer (which records it in the saved Keras
model's config), the exporter (which writes it into the ONNX file's ``metadata_props``) and the
runtime (which reads it back from the ONNX file). Nothing is ever guessed from a file name.

This module imports only the standard library, so every package can use it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from runtime.errors import ModelError

#: FER2013 class names in the order the Kaggle folder layout sorts them (alphabetical). This is
#: the project's one canonical output order.
FER2013_LABELS: tuple[str, ...] = (
    "angry",
    "disgust",
    "fear",
    "happy",
    "neutral",
    "sad",
    "surprise",
)

#: ``fer2013.csv`` numbers its classes differently: index ``i`` of the CSV's ``emotion`` column
#: is the class named ``FER2013_CSV_LABELS[i]``.
FER2013_CSV_LABELS: tuple[str, ...] = (
    "angry",
    "disgust",
    "fear",
    "happy",
    "sad",
    "surprise",
    "neutral",
)

#: ONNX metadata key holding a JSON list of the class names in output order.
META_LABELS = "labels"
#: ONNX metadata key holding the whole :class:`ModelSpec` as JSON.
META_SPEC = "model_spec"

SPEC_VERSION = 1  # bump when ModelSpec's fields change meaning


class ContractError(ModelError):
    """A model's description does not satisfy the contract."""


@dataclass(frozen=True)
class ModelSpec:
    """What a facial-emotion model takes and gives.

    Attributes:
        labels: Class names in the model's output order (lowercase).
        input_hw: Input height and width in pixels.
        channels: Input channels (1: grayscale).
        input_range: The value range the model expects. ``(0, 255)`` means RAW pixels: any
            rescaling happens inside the model, so callers never rescale.
        layout: Tensor layout of the input, ``"NHWC"``.
        label_source: Where the label order comes from.
        version: Version of this contract's schema.
    """

    labels: tuple[str, ...] = FER2013_LABELS
    input_hw: tuple[int, int] = (48, 48)
    channels: int = 1
    input_range: tuple[float, float] = (0.0, 255.0)
    layout: str = "NHWC"
    label_source: str = "FER2013, Kaggle folder order (alphabetical)"
    version: int = field(default=SPEC_VERSION)

    def __post_init__(self) -> None:
        labels = tuple(self.labels)
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "input_hw", tuple(int(v) for v in self.input_hw))
        object.__setattr__(self, "input_range", tuple(float(v) for v in self.input_range))
        if len(labels) < 2:
            raise ContractError(f"a model needs at least 2 labels, got {len(labels)}")
        if len(set(labels)) != len(labels):
            raise ContractError(f"labels must be unique, got {list(labels)}")
        if any(not isinstance(x, str) or not x or x != x.lower() for x in labels):
            raise ContractError(f"labels must be non-empty lowercase strings, got {list(labels)}")
        if len(self.input_hw) != 2 or min(self.input_hw) < 1:
            raise ContractError(f"input_hw must be two positive ints, got {self.input_hw}")
        if self.channels not in (1, 3):
            raise ContractError(f"channels must be 1 or 3, got {self.channels}")
        if self.layout != "NHWC":
            raise ContractError(f"only NHWC input is supported, got {self.layout!r}")
        lo, hi = self.input_range
        if not lo < hi:
            raise ContractError(f"input_range must be (low, high) with low < high, got {self.input_range}")

    @property
    def num_classes(self) -> int:
        """Number of output classes."""
        return len(self.labels)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """Per-sample input shape ``(H, W, C)``."""
        return (*self.input_hw, self.channels)

    def to_json(self) -> str:
        """The spec as a compact JSON string."""
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> ModelSpec:
        """Parse :meth:`to_json` output.

        Raises:
            ContractError: The text is not a valid spec.
        """
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ContractError(f"model spec is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ContractError("model spec must be a JSON object")
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ContractError(f"model spec has unknown fields {sorted(unknown)}")
        if data.get("version", SPEC_VERSION) > SPEC_VERSION:
            raise ContractError(
                f"model spec version {data['version']} is newer than this runtime ({SPEC_VERSION}): upgrade the package"
            )
        try:
            return cls(**data)
        except TypeError as exc:
            raise ContractError(f"model spec is malformed: {exc}") from None

    def to_metadata(self) -> dict[str, str]:
        """The ONNX ``metadata_props`` entries that describe this spec."""
        return {META_LABELS: json.dumps(list(self.labels)), META_SPEC: self.to_json()}

    @classmethod
    def from_metadata(cls, meta: Mapping[str, Any]) -> ModelSpec:
        """Read a spec back from ONNX ``metadata_props``.

        Raises:
            ContractError: The metadata is missing or inconsistent.
        """
        if META_SPEC not in meta or META_LABELS not in meta:
            missing = [k for k in (META_SPEC, META_LABELS) if k not in meta]
            raise ContractError(f"model has no {' or '.join(missing)} metadata: re-export it with export-onnx")
        spec = cls.from_json(meta[META_SPEC])
        try:
            labels = json.loads(meta[META_LABELS])
        except json.JSONDecodeError:
            raise ContractError("model's 'labels' metadata is not a JSON list") from None
        if list(labels) != list(spec.labels):
            raise ContractError(f"model's 'labels' {labels} disagree with its spec {list(spec.labels)}")
        return spec


def csv_to_canonical(csv_index: int) -> int:
    """Map a ``fer2013.csv`` class index to the canonical :data:`FER2013_LABELS` index."""
    return FER2013_LABELS.index(FER2013_CSV_LABELS[csv_index])
