"""What defines a training run: :class:`FitConfig`, the bounds and choices of its settings, and
their validation.

``FitConfig``'s field defaults are the one source of trainer-fit's defaults (and of the
validation split trainer-eval ``--split val`` rebuilds); :data:`BOUNDS` and :data:`CHOICES` are
both the flags' argparse types and the check of a ``config.json`` read back by ``--resume``.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass

from runtime.cli_support import SEED, Number
from runtime.errors import EmocamError
from trainer.cli_common import VAL_FRACTION


class ConfigError(EmocamError):
    """A training configuration that breaks a bound, a type, a choice or a rule between settings."""


@dataclass
class FitConfig:
    """Everything that defines a training run; saved as the run's ``config.json``."""

    data: str = ""  # FER2013 folder (train/ + test/) or fer2013.csv
    out: str = "runs/fer2013"  # run folder
    epochs: int = 60  # full passes over the training split
    batch_size: int = 64  # global batch, as in the original notebook
    lr: float = 1e-3  # peak Adam learning rate (the seed's 1e-4 learns too slowly)
    schedule: str = "cosine"  # cosine (decay to 0 after warm-up) or constant
    warmup_epochs: float = 2.0  # linear warm-up from 0 to lr
    augment: bool = True  # random flip, shift, rotation and zoom of training faces
    shift: float = 0.1  # max translation, fraction of the image side
    rotate_deg: float = 10.0  # max rotation in degrees
    zoom: float = 0.1  # max zoom in or out, fraction
    class_weights: str = "none"  # none, sqrt or balanced: loss weight per class by frequency
    label_smoothing: float = 0.0  # cross-entropy label smoothing
    mixup: float = 0.0  # >0: mix each training face with another of its batch, weight ~ Beta(a, a); 0 is off
    val_fraction: float = 0.1  # stratified validation split carved from train
    seed: int = 1337  # seeds the split, shuffling, augmentation and weights
    mixed_precision: bool = False  # float16 compute on GPU
    limit_per_class: int | None = None  # read at most this many faces per class (quick runs)
    init_from: str | None = None  # start from this .keras model's weights (fine-tuning), else random
    tensorboard: bool = False  # write TensorBoard logs to <out>/tensorboard
    cpu_replicas: int = 1  # >1: split the CPU into logical devices and mirror over them (tests)
    swa_epochs: int = 0  # >0: also average the weights of the last N epochs into swa.keras (weight averaging)
    test_eval: bool = True  # score best.keras on the test split at the end (off while choosing a recipe)


#: Bounds of every numeric setting: the flag's argparse ``type``, shown in ``--help``, and the check
#: of a ``config.json`` read back by ``--resume``.
BOUNDS: dict[str, Number] = {
    "epochs": Number(int, 1, 10_000),
    "batch_size": Number(int, 1, 8192),
    "lr": Number(float, 0, 1, lo_open=True),
    "warmup_epochs": Number(float, 0, 10_000),
    "shift": Number(float, 0, 1),  # Keras' RandomTranslation takes at most the whole side
    "rotate_deg": Number(float, 0, 180),
    "zoom": Number(float, 0, 0.9),  # RandomZoom: 1 would zoom into a single pixel
    "label_smoothing": Number(float, 0, 1),
    "mixup": Number(float, 0, 10),
    "val_fraction": VAL_FRACTION,
    "seed": SEED,
    "limit_per_class": Number(int, 2, 1_000_000),
    "cpu_replicas": Number(int, 1, 64),
    "swa_epochs": Number(int, 0, 10_000),
}
CHOICES = {"schedule": ("cosine", "constant"), "class_weights": ("none", "sqrt", "balanced")}
OPTIONAL = ("limit_per_class", "init_from")  # the settings that may be None


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
    return None


def check_config(cfg: FitConfig) -> None:
    """Refuse a configuration that breaks a bound or a rule between two settings.

    Raises:
        ConfigError: See :func:`config_problem`; or ``swa_epochs`` exceeds ``epochs``.
    """
    problem = config_problem(cfg)
    if problem:
        raise ConfigError(f"bad setting: {problem}")
    if cfg.swa_epochs > cfg.epochs:
        raise ConfigError(f"swa_epochs {cfg.swa_epochs} must be between 0 (off) and epochs {cfg.epochs}")
