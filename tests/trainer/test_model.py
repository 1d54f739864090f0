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


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_keeps_float32_weights_input_and_softmax(policy: str) -> None:
    """Under a mixed policy the hidden layers compute in 16 bits; what goes in and out stays float32."""
    from runtime.contract import ModelSpec
    from trainer.config import FitConfig
    from trainer.train import for_use

    model = build_model(dtype=policy)
    layers = {layer.name: layer.dtype_policy.name for layer in model.layers}
    assert layers.pop("probs") == "float32" and set(layers.values()) == {policy}
    assert {w.dtype for w in model.weights} == {"float32"}
    x = np.random.default_rng(0).integers(0, 256, (4, 48, 48, 1)).astype(np.float32)
    probs = np.asarray(model(x, training=False))
    assert probs.dtype == np.float32 and probs.sum(1) == pytest.approx(np.ones(4), abs=1e-5)
    copy = for_use(model, ModelSpec(), FitConfig(precision="bf16"))  # what trainer-fit saves as best.keras
    assert {layer.dtype_policy.name for layer in copy.layers} == {"float32"}
    assert all(np.array_equal(a, b) for a, b in zip(copy.get_weights(), model.get_weights(), strict=True))
    np.testing.assert_allclose(np.asarray(copy(x, training=False)), probs, atol=0.05)  # 16-bit rounding only


def test_vgg_is_the_documented_stronger_model() -> None:
    """--arch vgg: four stages of two conv-BN-relu at widths 32..256, each halving 48 -> 3; under 10 MB in float32."""
    from trainer.model import MODEL_NAMES, VGG_WIDTHS

    model = build_model(arch="vgg")
    assert model.name == MODEL_NAMES["vgg"] and model.input_shape == (None, 48, 48, 1)
    convs = [layer for layer in model.layers if type(layer).__name__ == "Conv2D"]
    assert [c.filters for c in convs] == [w for w in VGG_WIDTHS for _ in (1, 2)]
    assert all(not c.use_bias for c in convs)  # batch norm follows each
    assert model.get_layer("pool4").output.shape[1:3] == (3, 3)
    assert model.count_params() == 1_767_207 and model.count_params() * 4 < 10_000_000
    x = np.random.default_rng(0).integers(0, 256, (3, 48, 48, 1)).astype(np.float32)
    probs = np.asarray(model(x, training=False))
    assert probs.shape == (3, 7) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_unknown_architecture_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown architecture 'resnet'"):
        build_model(arch="resnet")


@pytest.mark.parametrize("arch", ["documented", "vgg"])
def test_multiply_adds_match_the_layers(arch: str) -> None:
    """The cost the benchmark divides by is the layers' own: conv and dense multiply-adds per face."""
    from trainer.model import MULTIPLY_ADDS_BY_ARCH

    total = 0
    for layer in build_model(arch=arch).layers:
        kind = type(layer).__name__
        if kind == "Conv2D":
            h, w, c_out = layer.output.shape[1:]
            total += h * w * c_out * layer.input.shape[-1] * layer.kernel_size[0] * layer.kernel_size[1]
        elif kind == "Dense":
            total += layer.input.shape[-1] * layer.units
    assert total == pytest.approx(MULTIPLY_ADDS_BY_ARCH[arch], rel=0.002)
