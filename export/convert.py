"""Keras -> ONNX: the exported computation (with optional test-time augmentation), the conversion
with stable names, and the metadata that makes the file describe itself.

TensorFlow, tf2onnx and onnx are imported inside the functions: export-onnx's argument checks
and ``--help`` stay fast.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path

from export.config import ENSEMBLE, INPUT_NAME, OPSET, OUTPUT_NAME, TTA_VIEWS, ZOOM_PX
from runtime.cli_support import EXIT_FAILED, first_line
from runtime.contract import ModelSpec
from runtime.errors import EmocamError, ModelError


def tta_views(pixels, tta: str) -> list:
    """The views of each face (a numpy array or TF tensor) that ``tta`` averages over, as TF ops.

    See :data:`export.config.TTA_VIEWS`. ``zoom`` adds a zoom-in (crop :data:`ZOOM_PX` pixels per
    side, resize back) and a zoom-out (repeat the edge pixels :data:`ZOOM_PX` times per side,
    resize back): about x1.09 and x0.92.

    Raises:
        ValueError: ``tta`` is not a key of ``TTA_VIEWS``.
    """
    import tensorflow as tf

    if tta not in TTA_VIEWS:
        raise ValueError(f"test-time augmentation {tta!r} is unknown: choose one of {', '.join(TTA_VIEWS)}")
    views = [tf.convert_to_tensor(pixels)]
    if "zoom" in tta:
        p, size_hw = ZOOM_PX, tuple(views[0].shape[1:3])
        rows = tf.concat([views[0][:, :1]] * p + [views[0]] + [views[0][:, -1:]] * p, axis=1)
        padded = tf.concat([rows[:, :, :1]] * p + [rows] + [rows[:, :, -1:]] * p, axis=2)
        views += [tf.image.resize(views[0][:, p:-p, p:-p], size_hw), tf.image.resize(padded, size_hw)]
    if "flip" in tta:
        views += [tf.reverse(v, axis=[2]) for v in views]
    return views


def forward(models, pixels, tta: str = "none"):
    """The exported computation: the network's probabilities, or their mean over the ``tta`` views.

    ``models`` is one Keras model or a sequence of them (an ensemble): then the result is the mean
    of each model's (view-averaged) probabilities. All views go through each network as one batch.
    Works on numpy arrays (Keras reference) and on TF tensors (inside the exported graph).
    """
    import tensorflow as tf

    members = list(models) if isinstance(models, (list, tuple)) else [models]
    views = tta_views(pixels, tta)
    batch = views[0] if len(views) == 1 else tf.concat(views, axis=0)
    means = []
    for model in members:
        probs = model(batch, training=False)
        means.append(probs if len(views) == 1
                     else tf.reduce_mean(tf.reshape(probs, (len(views), -1, probs.shape[-1])), axis=0))
    return means[0] if len(means) == 1 else tf.add_n(means) / len(means)


def convert(models, spec: ModelSpec, opset: int = OPSET, tta: str = "none"):
    """Convert a Keras model (or several: an ensemble) to an ``onnx.ModelProto`` with stable names
    and a dynamic batch.

    With ``tta`` other than ``none`` the graph averages the probabilities over several views of
    each face (test-time augmentation; :data:`TTA_VIEWS` network passes per face, in one graph).
    With several models it averages the models' probabilities too (:func:`forward`).
    """
    import onnx
    import tensorflow as tf
    import tf2onnx

    signature = (tf.TensorSpec((None, *spec.input_shape), tf.float32, name=INPUT_NAME),)

    @tf.function(input_signature=signature)
    def serve(pixels):
        return {OUTPUT_NAME: forward(models, pixels, tta)}

    proto, _ = tf2onnx.convert.from_function(serve, input_signature=signature, opset=opset)
    graph = proto.graph
    old_out = graph.output[0].name
    if old_out != OUTPUT_NAME:
        for node in graph.node:
            node.output[:] = [OUTPUT_NAME if o == old_out else o for o in node.output]
        graph.output[0].name = OUTPUT_NAME
    old_in = graph.input[0].name
    if old_in != INPUT_NAME:
        for node in graph.node:
            node.input[:] = [INPUT_NAME if i == old_in else i for i in node.input]
        graph.input[0].name = INPUT_NAME
    graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    graph.output[0].type.tensor_type.shape.dim[0].dim_param = "N"
    proto.doc_string = ("Facial emotion CNN (or the mean of several); input: raw 0-255 grayscale faces NHWC; "
                        "output: class probabilities")
    onnx.checker.check_model(proto)
    return proto


def set_metadata(proto, entries: dict[str, str]) -> None:
    """Replace ``metadata_props`` entries of an ONNX model (an ``onnx.ModelProto``)."""
    keep = [p for p in proto.metadata_props if p.key not in entries]
    del proto.metadata_props[:]
    for p in keep:
        proto.metadata_props.add(key=p.key, value=p.value)
    for key, value in entries.items():
        proto.metadata_props.add(key=key, value=value)


def architecture(model_path: Path) -> str:
    """The ``trainer-fit --arch`` of a ``.keras`` file (by the Keras model's name), or ``other``."""
    from trainer.model import MODEL_NAMES

    try:
        with zipfile.ZipFile(model_path) as zf:
            name = json.loads(zf.read("config.json")).get("config", {}).get("name")
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, AttributeError):
        return "other"
    return next((arch for arch, model_name in MODEL_NAMES.items() if model_name == name), "other")


def provenance(model_paths: Path | Sequence[Path], opset: int, variant: str, tta: str = "none") -> dict[str, str]:
    """Source hash, training data and accuracy (from the run folder), export time, tool versions.

    For an ensemble (several ``model_paths``) the top-level ``architecture`` is ``ensemble`` and
    ``ensemble_members`` lists each member's source, architecture, hash and recorded accuracy.
    """
    import keras
    import onnx
    import onnxruntime
    import tensorflow as tf
    import tf2onnx

    paths = [Path(model_paths)] if isinstance(model_paths, (str, Path)) else [Path(p) for p in model_paths]
    members = [_source(p) for p in paths]
    meta = {
        "variant": variant,
        "opset": str(opset),
        "test_time_augmentation": tta,  # see export.config.TTA_VIEWS
        "forward_passes": str(TTA_VIEWS[tta] * len(paths)),  # network evaluations per face
        "exported_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "tool_versions": json.dumps(
            {
                "tensorflow": tf.__version__,
                "keras": keras.__version__,
                "tf2onnx": tf2onnx.__version__,
                "onnx": onnx.__version__,
                "onnxruntime": onnxruntime.__version__,
            }
        ),
    }
    if len(paths) == 1:
        meta.update(members[0])
        cfg = _run_json(paths[0].parent / "config.json")
        if cfg is not None:
            meta["training_data"] = str(cfg.get("data", ""))
            meta["training_config"] = json.dumps(cfg, separators=(",", ":"))
    else:
        meta["source_model"] = " + ".join(m["source_model"] for m in members)
        meta["architecture"] = ENSEMBLE
        meta["ensemble_members"] = json.dumps(members, separators=(",", ":"))
    return meta


def _source(model_path: Path) -> dict[str, str]:
    """One model's name, ``--arch``, hash and the accuracy its run folder recorded (without TTA)."""
    entry = {
        "source_model": model_path.name,
        "architecture": architecture(model_path),  # trainer-fit --arch
        "source_sha256": hashlib.sha256(model_path.read_bytes()).hexdigest(),
    }
    m = _run_json(model_path.parent / "metrics.json")  # trainer-fit's report on the .keras model, without TTA
    if m is not None:
        split = str(m.get("split", "test"))  # "val" for a run made with --no-test-eval
        entry[f"source_{split}_accuracy"] = str(m.get("accuracy"))
        entry[f"source_{split}_split"] = f"{m.get('source', '')} (n={m.get('n')})"
    return entry


def _run_json(path: Path) -> dict | None:
    """A JSON object of the model's run folder, or None (with a warning when it exists but is damaged)."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        data = exc
    if isinstance(data, dict):
        return data
    print(f"warning: {path} is damaged or unreadable; its provenance is left out of the metadata", file=sys.stderr)
    return None


def convert_described(models, spec: ModelSpec, model_paths: Sequence[Path], opset: int, tta: str):
    """:func:`convert` plus the contract and provenance metadata and the full ONNX check.

    Raises:
        ModelError: The converter or the checker failed (exit code 1), in one line.
    """
    import onnx

    try:
        proto = convert(models, spec, opset, tta)
        set_metadata(proto, {**spec.to_metadata(), **provenance(model_paths, opset, "fp32", tta)})
        onnx.checker.check_model(proto, full_check=True)
    except (EmocamError, KeyboardInterrupt):
        raise
    except Exception as exc:  # tf2onnx and the ONNX checker raise many types
        raise ModelError(
            f"conversion to ONNX (opset {opset}) failed: {first_line(exc)}: try the default opset {OPSET}",
            exit_code=EXIT_FAILED,
        ) from None
    return proto
