"""The model architectures (the documented CNN and the stronger VGG-BN), and the model contract
stored with them.

The network takes RAW 0-255 pixels: the 1/255 rescale of the original notebook is the model's
first layer, so training and serving can never disagree about it. Errors are
:class:`runtime.errors.ModelError`. Keras is imported inside the functions that need it, so that
importing this module (for its constants, or :func:`read_spec`) stays fast.
"""

from __future__ import annotations

import json
import tempfile
import zipfile
from pathlib import Path

from runtime.cli_support import atomic_path, first_line, os_error_text
from runtime.contract import ContractError, ModelSpec
from runtime.errors import ModelError

SPEC_MEMBER = "emocam_model_spec.json"  # extra member of the .keras zip holding the ModelSpec
PARAMETERS = 2_345_607  # documented parameter count of the CNN
MULTIPLY_ADDS = 77_300_000  # documented cost per face (rounded)
MULTIPLY_ADDS_BY_ARCH = {"documented": MULTIPLY_ADDS, "vgg": 118_040_320}  # per face and network pass, at 48x48


MODEL_NAMES = {"documented": "emotion_cnn", "vgg": "emotion_vgg"}  # the Keras model's name, per architecture
ARCHITECTURES = tuple(MODEL_NAMES)  # trainer-fit --arch: the documented CNN (default), the stronger VGG-BN
VGG_WIDTHS = (32, 64, 128, 256)  # channels of the VGG-BN's four stages (two 3x3 convolutions each)
VGG_HIDDEN = 256  # units of the VGG-BN's hidden dense layer


def build_model(spec: ModelSpec | None = None, dtype: str | None = None, arch: str = "documented"):
    """Build one of :data:`ARCHITECTURES`.

    Both take raw 0-255 pixels (a Rescaling layer first, no parameters), and their input and
    softmax layer are float32 whatever the dtype policy, so the model takes and gives float32 (and
    so does its ONNX export).

    Args:
        spec: The model contract (input size, labels). Defaults to FER2013's.
        dtype: The Keras dtype policy of every layer but the softmax (``"float32"``,
            ``"mixed_bfloat16"``...); None: Keras's global policy.
        arch: ``"documented"`` (:func:`build_documented`) or ``"vgg"`` (:func:`build_vgg`).

    Returns:
        An uncompiled ``keras.Sequential`` model.

    Raises:
        ValueError: An unknown ``arch``.
    """
    builders = {"documented": build_documented, "vgg": build_vgg}
    if arch not in builders:
        raise ValueError(f"unknown architecture {arch!r}: choose one of {', '.join(ARCHITECTURES)}")
    return builders[arch](spec or ModelSpec(), dtype)


def _input_layers(spec: ModelSpec, dtype: str | None) -> list:
    """The float32 input and the 0-255 -> 0-1 rescale every architecture starts with."""
    import keras
    from keras import layers

    lo, hi = spec.input_range
    return [
        keras.Input(shape=spec.input_shape, name="pixels"),
        layers.Rescaling(1.0 / (hi - lo), offset=-lo / (hi - lo), name="rescale", dtype=dtype),
    ]


def build_documented(spec: ModelSpec, dtype: str | None):
    """The documented CNN, layer for layer (2,345,607 parameters, 77 M multiply-adds a face).

    Conv 32 3x3 relu -> Conv 64 3x3 relu -> MaxPool 2 -> Dropout .25 -> Conv 128 3x3 relu ->
    MaxPool 2 -> Conv 128 3x3 relu -> MaxPool 2 -> Dropout .25 -> Flatten -> Dense 1024 relu ->
    Dropout .5 -> Dense N softmax.
    """
    import keras
    from keras import layers

    return keras.Sequential(
        [
            *_input_layers(spec, dtype),
            layers.Conv2D(32, 3, activation="relu", name="conv1", dtype=dtype),
            layers.Conv2D(64, 3, activation="relu", name="conv2", dtype=dtype),
            layers.MaxPooling2D(2, name="pool1", dtype=dtype),
            layers.Dropout(0.25, name="drop1", dtype=dtype),
            layers.Conv2D(128, 3, activation="relu", name="conv3", dtype=dtype),
            layers.MaxPooling2D(2, name="pool2", dtype=dtype),
            layers.Conv2D(128, 3, activation="relu", name="conv4", dtype=dtype),
            layers.MaxPooling2D(2, name="pool3", dtype=dtype),
            layers.Dropout(0.25, name="drop2", dtype=dtype),
            layers.Flatten(name="flatten", dtype=dtype),
            layers.Dense(1024, activation="relu", name="fc1", dtype=dtype),
            layers.Dropout(0.5, name="drop3", dtype=dtype),
            # float32 output keeps softmax exact under mixed precision
            layers.Dense(spec.num_classes, activation="softmax", name="probs", dtype="float32"),
        ],
        name=MODEL_NAMES["documented"],
    )


def build_vgg(spec: ModelSpec, dtype: str | None):
    """The stronger model: a small VGG with batch norm (after Khaireddin & Chen 2021, at half width).

    Four stages of two 3x3 convolutions (same padding, no bias) each followed by batch norm and
    relu, with widths :data:`VGG_WIDTHS`, each stage ending in MaxPool 2 (48 -> 24 -> 12 -> 6 -> 3);
    then Dropout .3 -> Flatten -> Dense 256 (batch norm, relu) -> Dropout .5 -> Dense N softmax.
    At 48x48 that is 1.77 M parameters (7 MB in float32) and 118 M multiply-adds a face; export
    folds the batch norms into the convolutions.
    """
    import keras
    from keras import layers

    stack = _input_layers(spec, dtype)
    for stage, width in enumerate(VGG_WIDTHS, start=1):
        for conv in (1, 2):
            name = f"s{stage}c{conv}"
            stack += [
                layers.Conv2D(width, 3, padding="same", use_bias=False, name=name, dtype=dtype),
                layers.BatchNormalization(name=f"{name}_bn", dtype=dtype),
                layers.ReLU(name=f"{name}_relu", dtype=dtype),
            ]
        stack.append(layers.MaxPooling2D(2, name=f"pool{stage}", dtype=dtype))
    stack += [
        layers.Dropout(0.3, name="drop1", dtype=dtype),
        layers.Flatten(name="flatten", dtype=dtype),
        layers.Dense(VGG_HIDDEN, use_bias=False, name="fc1", dtype=dtype),
        layers.BatchNormalization(name="fc1_bn", dtype=dtype),
        layers.ReLU(name="fc1_relu", dtype=dtype),
        layers.Dropout(0.5, name="drop2", dtype=dtype),
        layers.Dense(spec.num_classes, activation="softmax", name="probs", dtype="float32"),
    ]
    return keras.Sequential(stack, name=MODEL_NAMES["vgg"])


def save_model(model, path: Path, spec: ModelSpec, extra: dict | None = None) -> None:
    """Save a ``.keras`` model with its :class:`ModelSpec` inside, atomically.

    The spec travels as an extra member of the ``.keras`` zip, which Keras ignores on load.
    """
    with atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)
        with zipfile.ZipFile(tmp, "a") as zf:
            zf.writestr(SPEC_MEMBER, json.dumps({"spec": json.loads(spec.to_json()), **(extra or {})}))


def read_spec(path: Path) -> ModelSpec:
    """Read the :class:`ModelSpec` stored in a ``.keras`` file by :func:`save_model`.

    Raises:
        ModelError: The file is not a ``.keras`` archive or holds no spec.
    """
    path = Path(path)
    if path.is_dir():
        raise ModelError(f"model {path} is a folder: give the path of a .keras file from trainer-fit")
    if not path.is_file():
        raise ModelError(f"model {path} does not exist: give the path of a .keras file from trainer-fit")
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            if "config.json" not in names:
                raise ModelError(f"{path} is not a Keras 3 .keras model (no config.json inside)")
            if SPEC_MEMBER not in names:
                raise ModelError(
                    f"{path} has no model spec (labels, input contract): it was not saved by "
                    "trainer-fit; give its class names in output order (labels)"
                )
            data = json.loads(zf.read(SPEC_MEMBER))
    except zipfile.BadZipFile:
        raise ModelError(f"{path} is not a Keras .keras model (not a zip archive)") from None
    try:
        return ModelSpec.from_json(json.dumps(data["spec"]))
    except (KeyError, ContractError) as exc:
        raise ModelError(f"{path} holds a broken model spec: {exc}") from None


def check_against_spec(model, spec: ModelSpec, path: Path) -> None:
    """Refuse a model whose input shape or class count differs from its spec.

    Raises:
        ModelError: The model takes another input, or has another number of outputs than labels.
    """
    in_shape = tuple(model.input_shape[1:])
    if in_shape != spec.input_shape:
        raise ModelError(
            f"{path}: model takes input {in_shape} but the contract says {spec.input_shape}: "
            "use a model built by trainer-fit"
        )
    n_out = model.output_shape[-1]
    if n_out != spec.num_classes:
        raise ModelError(
            f"{path}: model has {n_out} outputs but {spec.num_classes} labels {list(spec.labels)}: "
            "give matching labels or a model from trainer-fit"
        )


def load_model(path: Path, compile: bool = False):
    """Load a ``.keras`` model in safe mode (no arbitrary code from the file).

    Raises:
        ModelError: The file is missing or not a loadable Keras model.
    """
    import keras

    path = Path(path)
    if path.is_dir():
        raise ModelError(f"model {path} is a folder: give the path of a .keras file from trainer-fit")
    if not path.is_file():
        raise ModelError(f"model {path} does not exist: give the path of a .keras file from trainer-fit")
    if not zipfile.is_zipfile(path):
        raise ModelError(f"{path} is not a Keras .keras model (not a zip archive)")
    try:
        return keras.saving.load_model(path, compile=compile, safe_mode=True)
    except OSError as exc:  # Keras unpacks the archive into a temporary folder first
        raise ModelError(
            f"{path} could not be loaded: {os_error_text(exc, exc.filename or tempfile.gettempdir())}: Keras "
            "unpacks the model into the temporary folder: free some space there (or set TMPDIR to another folder)"
        ) from None
    except Exception as exc:  # keras raises many types for a bad file
        raise ModelError(f"{path} could not be loaded as a Keras model: {first_line(exc)}") from None
