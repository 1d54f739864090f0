"""The trainer builds the documented CNN, layer for layer."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.tf
keras = pytest.importorskip("keras")

from trainer.model import PARAMETERS, build_model  # noqa: E402

# (layer type, key config) in the documented order, after the input rescale
DOCUMENTED = [
    ("Conv2D", {"filters": 32, "kernel_size": (3, 3), "activation": "relu"}),
    ("Conv2D", {"filters": 64, "kernel_size": (3, 3), "activation": "relu"}),
    ("MaxPooling2D", {"pool_size": (2, 2)}),
    ("Dropout", {"rate": 0.25}),
    ("Conv2D", {"filters": 128, "kernel_size": (3, 3), "activation": "relu"}),
    ("MaxPooling2D", {"pool_size": (2, 2)}),
    ("Conv2D", {"filters": 128, "kernel_size": (3, 3), "activation": "relu"}),
    ("MaxPooling2D", {"pool_size": (2, 2)}),
    ("Dropout", {"rate": 0.25}),
    ("Flatten", {}),
    ("Dense", {"units": 1024, "activation": "relu"}),
    ("Dropout", {"rate": 0.5}),
    ("Dense", {"units": 7, "activation": "softmax"}),
]


def test_layers_match_documented_architecture() -> None:
    model = build_model()
    layers = model.layers
    assert type(layers[0]).__name__ == "Rescaling"
    assert layers[0].get_config()["scale"] == pytest.approx(1 / 255)
    assert len(layers) - 1 == len(DOCUMENTED)
    for layer, (kind, want) in zip(layers[1:], DOCUMENTED, strict=True):
        assert type(layer).__name__ == kind, layer.name
        cfg = layer.get_config()
        for key, value in want.items():
            got = tuple(cfg[key]) if isinstance(cfg[key], list) else cfg[key]
            assert got == value, (layer.name, key, got)


def test_parameter_count_is_documented() -> None:
    assert build_model().count_params() == PARAMETERS == 2_345_607


def test_model_takes_raw_pixels() -> None:
    """The rescale is inside: 0-255 input reaches conv1 as 0-1."""
    model = build_model()
    x = np.full((1, 48, 48, 1), 255.0, np.float32)
    assert float(np.asarray(model.layers[0](x)).max()) == pytest.approx(1.0)
    probs = np.asarray(model(x, training=False))
    assert probs.shape == (1, 7) and probs.sum() == pytest.approx(1.0, abs=1e-5)


def test_loading_is_safe_mode(tmp_path) -> None:
    """A .keras file carrying a Lambda (arbitrary Python) is refused, not executed."""
    from runtime.contract import ModelSpec
    from runtime.errors import ModelError
    from trainer.model import load_model, save_model

    evil = keras.Sequential([keras.Input((48, 48, 1)), keras.layers.Lambda(lambda x: x * 2), keras.layers.Flatten(),
                             keras.layers.Dense(7, activation="softmax")])
    save_model(evil, tmp_path / "lambda.keras", ModelSpec())
    with pytest.raises(ModelError, match="could not be loaded"):
        load_model(tmp_path / "lambda.keras")
