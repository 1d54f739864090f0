"""Keras weights back from an exported ONNX file, so that ``trainer-fit --init-from`` can start from it.

A run folder's ``.keras`` files are what fine-tuning and distillation start from, but only the
exported ``.onnx`` files ship (``models/``). This module rebuilds a trainer-fit model from one:

- The documented CNN's convolutions and dense layers are in the graph as they were trained
  (a convolution's kernel is stored OIHW there, HWIO in Keras).
- The VGG's batch norms were folded into the layers before them at export: each convolution
  carries a bias, and the hidden dense layer is followed by a scale and a shift. A batch norm
  is rebuilt that gives exactly that bias (or scale and shift) in inference, with moving
  statistics measured on real faces (``calibration``): its mean and variance are those of the
  layer's output on those faces, so in training, where a batch's own statistics stand in for
  the moving ones, the network computes nearly what it did.

The rebuilt model is then checked against the file: the same views (the graph's test-time
augmentation) through Keras must give the file's probabilities on the calibration faces.

Example:
    trainer-fit --arch vgg --data ../shared/fer2013 --init-from models/emotion_vgg.onnx --teacher ...
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from runtime.contract import ModelSpec
from runtime.errors import ModelError

WEIGHT_OPS = ("Conv", "MatMul", "Mul", "Add")  # the graph ops that hold the network's trained weights
CALIBRATION_FACES = 1024  # real training faces that measure a rebuilt batch norm's moving statistics
MATCH_ATOL = 1e-4  # largest difference of a probability between the rebuilt model and the file


def read_onnx(path: Path) -> tuple[ModelSpec, str, str, list[tuple[str, list[np.ndarray]]]]:
    """The contract, architecture, views and weight-holding ops (in graph order) of an export-onnx file.

    Returns:
        The :class:`ModelSpec`, the ``architecture`` metadata (trainer-fit's ``--arch``), the
        ``test_time_augmentation`` metadata (the graph's views), and for each op of
        :data:`WEIGHT_OPS` that holds a tensor of rank 1 or more, its type and its weights (the
        0-255 rescale's scalar is left out).

    Raises:
        ModelError: The file is missing, not ONNX, not from export-onnx, or an INT8 variant.
    """
    import onnx
    from onnx import numpy_helper

    try:
        graph_model = onnx.load(str(path))
    except FileNotFoundError:
        raise ModelError(f"model {path} to start from does not exist: give an .onnx file from export-onnx") from None
    except Exception as exc:  # onnx raises its own decode errors for a file that is not ONNX
        raise ModelError(f"model {path} to start from is not an ONNX file ({type(exc).__name__}): "
                         "give an .onnx file from export-onnx") from None
    meta = {p.key: p.value for p in graph_model.metadata_props}
    try:
        spec = ModelSpec.from_metadata(meta)
    except Exception:
        raise ModelError(f"model {path} has no model contract in its metadata: give an .onnx file from "
                         "export-onnx") from None
    if meta.get("variant", "fp32") != "fp32":
        raise ModelError(f"model {path} is the {meta['variant']} variant: start from the fp32 file beside it")
    weights = {t.name: numpy_helper.to_array(t) for t in graph_model.graph.initializer}
    for node in graph_model.graph.node:  # export-onnx --half-weights: float16 weights, each cast to float32
        if node.op_type == "Cast" and node.input[0] in weights:
            weights[node.output[0]] = weights[node.input[0]].astype(np.float32)
    ops = []
    for node in graph_model.graph.node:
        held = [weights[name] for name in node.input if name in weights and weights[name].ndim >= 1]
        if node.op_type in WEIGHT_OPS and held:
            ops.append((node.op_type, held))
    return spec, meta.get("architecture", "documented"), meta.get("test_time_augmentation", "none"), ops


def keras_from_onnx(path: Path, calibration: np.ndarray):
    """A float32 trainer-fit model with the weights of the export-onnx file ``path``.

    Args:
        path: An fp32 ``.onnx`` file written by export-onnx (its ``architecture`` metadata names
            the network).
        calibration: Real faces, raw 0-255 pixels ``(N, H, W, C)``, a run's training faces say:
            :data:`CALIBRATION_FACES` of them, spread evenly over the array (whose classes may come
            in runs), measure the rebuilt batch norms' statistics and check the result.

    Returns:
        ``(model, spec, arch)``: the uncompiled Keras model, its contract and its architecture.

    Raises:
        ModelError: The file is not an export of a trainer-fit architecture, or the rebuilt model
            does not give the file's probabilities.
    """
    from trainer.model import ARCHITECTURES, build_model

    spec, arch, tta, ops = read_onnx(path)
    if arch not in ARCHITECTURES:
        raise ModelError(f"model {path} has the architecture {arch!r}, which trainer-fit cannot build: start from "
                         "one network's file (an ensemble's members are listed in its ensemble_members metadata)")
    model = build_model(spec, dtype="float32", arch=arch)
    pick = np.unique(np.linspace(0, len(calibration) - 1, CALIBRATION_FACES).round().astype(np.int64))
    faces = np.ascontiguousarray(calibration[pick], dtype=np.float32)
    pending: Iterator = iter(ops)
    after = (1.0, 0.0)  # what the graph applies after the last layer read: (scale, shift) a batch norm takes over
    try:
        for layer in model.layers:
            kind = type(layer).__name__
            if kind == "Conv2D":
                kernel, *bias = _take(pending, "Conv")
                kernel = kernel.transpose(2, 3, 1, 0)  # OIHW -> HWIO
                layer.set_weights([kernel, *bias] if layer.use_bias else [kernel])
                after = (1.0, bias[0] if bias and not layer.use_bias else 0.0)
            elif kind == "Dense":
                (kernel,) = _take(pending, "MatMul")
                if layer.use_bias:
                    layer.set_weights([kernel, *_take(pending, "Add")])
                else:
                    layer.set_weights([kernel])
                    (scale,), (shift,) = _take(pending, "Mul"), _take(pending, "Add")
                    after = (scale, shift)
            elif kind == "BatchNormalization":
                _rebuild_batch_norm(model, layer, faces, *after)
        leftover = next(pending, None)
    except StopIteration:
        raise ModelError(f"model {path} holds fewer weights than a {arch} network: give an .onnx file from "
                         "export-onnx of a trainer-fit model") from None
    except ValueError as exc:  # an op out of place, or weights of another shape
        raise ModelError(f"model {path} does not hold a {arch} network as export-onnx writes it ({exc}): "
                         "give an .onnx file from export-onnx of a trainer-fit model") from None
    if leftover is not None:
        raise ModelError(f"model {path} holds more weights than a {arch} network: give an .onnx file from export-onnx "
                         "of a trainer-fit model")
    _check_against_file(model, path, faces, tta)
    return model, spec, arch


def _take(ops: Iterator, op_type: str) -> list[np.ndarray]:
    """The weights of the next op, which must be ``op_type``."""
    found, weights = next(ops)
    if found != op_type:
        raise ValueError(f"found {found} where {op_type} was expected")
    return weights


def _rebuild_batch_norm(model, layer, faces: np.ndarray, scale, shift) -> None:
    """Set ``layer`` (a batch norm) so that in inference it is ``scale * x + shift``, with moving
    statistics that are its input's mean and variance on ``faces``."""
    import keras

    before = model.layers[model.layers.index(layer) - 1]
    probe = keras.Model(model.inputs[0], before.output)
    out = np.concatenate([np.asarray(probe(faces[i: i + 256], training=False)) for i in range(0, len(faces), 256)])
    axes = tuple(range(out.ndim - 1))
    mean, var = out.mean(axis=axes, dtype=np.float64), out.var(axis=axes, dtype=np.float64)
    scale = np.broadcast_to(np.asarray(scale, np.float64), mean.shape)
    gamma = scale * np.sqrt(var + layer.epsilon)
    beta = scale * mean + np.asarray(shift, np.float64)
    layer.set_weights([w.astype(np.float32) for w in (gamma, beta, mean, var)])


def _check_against_file(model, path: Path, faces: np.ndarray, tta: str) -> None:
    """Refuse a rebuilt model whose probabilities (through the file's own views) differ from the file's."""
    from export.convert import forward
    from runtime.classifier import EmotionClassifier

    sample = faces[:256]
    want = EmotionClassifier(path, provider="cpu").predict(sample)
    got = np.asarray(forward(model, sample, tta))
    worst = float(np.max(np.abs(got - want)))
    if not worst <= MATCH_ATOL:
        raise ModelError(f"model {path}: the Keras network rebuilt from it differs from the file by {worst:.2g} "
                         f"(more than {MATCH_ATOL:g}) on {len(sample)} faces: give an .onnx file from export-onnx "
                         "of a trainer-fit model")
