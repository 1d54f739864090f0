"""What defines a training run: :class:`FitConfig`, the bounds and choices of its settings, and
their validation.

``FitConfig``'s field defaults are the one source of trainer-fit's defaults (and of the
validation split trainer-eval ``--split val`` rebuilds); :data:`BOUNDS` and :data:`CHOICES` are
both the flags' argparse types and the check of a ``config.json`` read back by ``--resume``.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from runtime.cli_support import SEED, Number
from runtime.errors import EmocamError
from trainer.cli_common import VAL_FRACTION
from trainer.model import ARCHITECTURES


class ConfigError(EmocamError):
    """A training configuration that breaks a bound, a type, a choice or a rule between settings."""


@dataclass
class FitConfig:
    """Everything that defines a training run; saved as the run's ``config.json``."""

    data: str = ""  # FER2013 folder (train/ + test/) or fer2013.csv
    out: str = "runs/fer2013"  # run folder
    arch: str = "documented"  # documented (the design's CNN) or vgg (the stronger VGG-BN, trainer/model.py)
    epochs: int = 60  # full passes over the training split
    batch_size: int = 64  # global batch, as in the original notebook
    lr: float = 1e-3  # peak learning rate (Adam: the seed's 1e-4 learns too slowly)
    optimizer: str = "adam"  # adam, or sgd (with Nesterov momentum)
    momentum: float = 0.9  # sgd's Nesterov momentum (adam ignores it)
    weight_decay: float = 0.0  # decoupled weight decay: each step shrinks weights by lr * weight_decay; 0 is off
    schedule: str = "cosine"  # cosine (decay to 0 after warm-up) or constant
    warmup_epochs: float = 2.0  # linear warm-up from 0 to lr
    augment: bool = True  # random flip, shift, rotation and zoom of training faces
    shift: float = 0.1  # max translation, fraction of the image side
    rotate_deg: float = 10.0  # max rotation in degrees
    zoom: float = 0.1  # max zoom in or out, fraction
    erase: float = 0.0  # random erasing: chance per face of blanking a rectangle (2-33 % of its area); 0 is off
    blur: float = 0.0  # chance per face of a Gaussian blur (sigma 0.4-1.2 px): served crops of small faces are soft
    class_weights: str = "none"  # none, sqrt or balanced: loss weight per class by frequency
    label_smoothing: float = 0.0  # cross-entropy label smoothing
    mixup: float = 0.0  # >0: mix each training face with another of its batch, weight ~ Beta(a, a); 0 is off
    val_fraction: float = 0.1  # stratified validation split carved from train
    seed: int = 1337  # seeds the split (unless split_seed), shuffling, augmentation and weights
    split_seed: int | None = None  # seeds the validation split instead of seed: runs of other seeds can share one
    precision: str = "fp32"  # compute precision: fp32, bf16 (CPU bf16 units or GPU >= 8.0) or fp16 (GPU)
    mixed_precision: bool = False  # old name of precision fp16 (older config.json files); follows precision
    limit_per_class: int | None = None  # read at most this many faces per class (quick runs)
    init_from: str | None = None  # start from this .keras (or export-onnx .onnx) model's weights, else random
    teacher: str | None = None  # .npz from trainer-teach: distil its probabilities into the model, else labels only
    teacher_share: float = 0.7  # with teacher: each target is this share of the teacher's probabilities + the label
    tensorboard: bool = False  # write TensorBoard logs to <out>/tensorboard
    cpu_replicas: int = 1  # >1: split the CPU into logical devices and mirror over them (tests)
    swa_epochs: int = 0  # >0: also average the weights of the last N epochs into swa.keras (weight averaging)
    time_budget_min: float = 0.0  # >0: fit the run into this many minutes of the process (epochs = what fits)
    test_eval: bool = True  # score best.keras on the test split at the end (off while choosing a recipe)

    def __post_init__(self) -> None:
        """Keep ``mixed_precision`` (the old setting) and ``precision`` in step.

        A ``config.json`` written before ``precision`` existed holds only ``mixed_precision``: true
        means fp16. A contradiction (``mixed_precision`` true with bf16) is left for
        :func:`config_problem` to report.
        """
        if self.mixed_precision is True and self.precision == "fp32":
            self.precision = "fp16"
        elif self.precision == "fp16" and self.mixed_precision is False:
            self.mixed_precision = True


#: Bounds of every numeric setting: the flag's argparse ``type``, shown in ``--help``, and the check
#: of a ``config.json`` read back by ``--resume``.
BOUNDS: dict[str, Number] = {
    "epochs": Number(int, 1, 10_000),
    "batch_size": Number(int, 1, 8192),
    "lr": Number(float, 0, 1, lo_open=True),
    "warmup_epochs": Number(float, 0, 10_000),
    "shift": Number(float, 0, 1),  # at most the whole side
    "rotate_deg": Number(float, 0, 180),
    "zoom": Number(float, 0, 0.9),  # 1 would zoom out to nothing (scale 0)
    "erase": Number(float, 0, 1),  # a probability
    "blur": Number(float, 0, 1),  # a probability
    "momentum": Number(float, 0, 0.999),  # 1 would never forget a gradient
    "weight_decay": Number(float, 0, 1),
    "label_smoothing": Number(float, 0, 1),
    "mixup": Number(float, 0, 10),
    "val_fraction": VAL_FRACTION,
    "seed": SEED,
    "split_seed": SEED,
    "limit_per_class": Number(int, 2, 1_000_000),
    "cpu_replicas": Number(int, 1, 64),
    "swa_epochs": Number(int, 0, 10_000),
    "time_budget_min": Number(float, 0, 1_000_000),  # 0 is off
    "teacher_share": Number(float, 0, 1),
}
CHOICES = {
    "arch": ARCHITECTURES,
    "optimizer": ("adam", "sgd"),
    "schedule": ("cosine", "constant"),
    "class_weights": ("none", "sqrt", "balanced"),
    "precision": ("fp32", "bf16", "fp16"),
}
#: The Keras dtype policy of each precision: mixed policies keep the weights (and the softmax) float32.
KERAS_POLICY = {"fp32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")  # Linux /proc/cpuinfo flags of CPU bf16 units (either will do)
BF16_MIN_GPU = (8, 0)  # the first CUDA compute capability with bf16 tensor cores (Ampere)
OPTIONAL = ("limit_per_class", "init_from", "teacher", "split_seed")  # the settings that may be None


def split_seed(cfg: FitConfig) -> int:
    """The seed of the run's validation split: ``split_seed``, or ``seed`` where it is not set."""
    return cfg.seed if cfg.split_seed is None else cfg.split_seed


def config_problem(cfg: FitConfig) -> str | None:
    """What is wrong with a configuration's values (a bound, a type, a choice), or None.

    The flags are checked by argparse with the same :data:`BOUNDS`; this also covers a
    ``FitConfig`` built in Python or read back from a run's ``config.json``.
    """
    for field in dataclasses.fields(FitConfig):
        value = getattr(cfg, field.name)
        if value is None and field.name in OPTIONAL:
            continue
        if field.name in BOUNDS:
            number = BOUNDS[field.name]
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or (number.kind is int and not isinstance(value, int))
            ):
                return f"{field.name} is {value!r}, not {'an integer' if number.kind is int else 'a number'}"
            try:
                number(repr(value))
            except argparse.ArgumentTypeError as exc:
                return f"{field.name}: {exc}"
        elif field.name in CHOICES:
            if value not in CHOICES[field.name]:
                return f"{field.name} is {value!r}, not one of {', '.join(CHOICES[field.name])}"
        elif isinstance(field.default, bool):
            if not isinstance(value, bool):
                return f"{field.name} is {value!r}, not true or false"
        elif not isinstance(value, str):
            return f"{field.name} is {value!r}, not a string"
    if cfg.mixed_precision != (cfg.precision == "fp16"):
        return f"mixed_precision is {str(cfg.mixed_precision).lower()} but precision is {cfg.precision}"
    return None


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str] | None:
    """The CPU's feature flags from Linux's ``/proc/cpuinfo``, or None where it cannot be read (not Linux)."""
    try:
        text = cpuinfo.read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            flags.update(value.split())
    return frozenset(flags)


def precision_problem(
    precision: str, flags: frozenset[str] | None, gpus: Sequence[tuple[int, int] | None]
) -> str | None:
    """Why ``precision`` would not speed up training on this machine, or None where it would.

    fp32 runs anywhere. bf16 needs bf16 units: on a GPU, compute capability 8.0 or later (every
    GPU TensorFlow sees); without one, a CPU with one of :data:`BF16_CPU_FLAGS`. fp16 needs a GPU:
    on a CPU it is slower than fp32.

    Args:
        precision: One of ``CHOICES["precision"]``.
        flags: The CPU's feature flags (:func:`cpu_flags`); None where they are unknown.
        gpus: The compute capability (major, minor) of each GPU TensorFlow sees; None where unknown.

    Returns:
        The problem in a few words (no fix: the caller knows which flag or setting to name).
    """
    if precision == "fp16" and not gpus:
        return "fp16 needs a GPU, and this machine has none (on a CPU float16 is slower than float32)"
    if precision != "bf16":
        return None
    if gpus:
        need = f"{BF16_MIN_GPU[0]}.{BF16_MIN_GPU[1]}"
        for i, cc in enumerate(gpus):
            if cc is None or tuple(cc) < BF16_MIN_GPU:
                have = "unknown" if cc is None else f"{cc[0]}.{cc[1]}"
                return f"bf16 needs a GPU of compute capability {need} or later, and GPU {i} is {have}"
        return None
    if flags is None:
        return f"cannot tell whether this CPU has bf16 units ({'/'.join(BF16_CPU_FLAGS)}): no /proc/cpuinfo"
    if not flags.intersection(BF16_CPU_FLAGS):
        return f"this CPU has no bf16 units ({'/'.join(BF16_CPU_FLAGS)})"
    return None


def check_config(cfg: FitConfig) -> None:
    """Refuse a configuration that breaks a bound or a rule between two settings.

    Raises:
        ConfigError: See :func:`config_problem`; or ``swa_epochs`` exceeds ``epochs``, or is given
            with ``time_budget_min``.
    """
    problem = config_problem(cfg)
    if problem:
        raise ConfigError(f"bad setting: {problem}")
    if cfg.swa_epochs > cfg.epochs:
        raise ConfigError(f"swa_epochs {cfg.swa_epochs} must be between 0 (off) and epochs {cfg.epochs}")
    if cfg.swa_epochs and cfg.time_budget_min:
        raise ConfigError("swa_epochs needs a fixed number of epochs: leave out time_budget_min, or swa_epochs")
