"""``trainer-teach TEACHER.keras|.onnx ... --data FER --out teacher.npz``: a teacher's probabilities for distillation.

Knowledge distillation (Hinton et al. 2015) trains a network on a stronger teacher's class
probabilities as well as on the true labels. Here the teacher is the mean of one or more trained
models (an ensemble), each averaging its test-time views, and the student trains with
``trainer-fit --teacher teacher.npz``: it keeps one network's size and speed.

A teacher is a ``.keras`` model from trainer-fit (averaging ``--views``) or an ``.onnx`` file from
export-onnx, the shipped ones included (averaging the views in its graph; ``--views`` does not
apply to it). So the shipped models can teach when their Keras weights are gone.

The file holds the teacher's probabilities for the faces of one training split, the one
``trainer-fit`` carves with the same ``--data``, split seed (``--split-seed``, else ``--seed``),
``--val-fraction`` and ``--limit-per-class``, and a SHA-256 of those faces' pixels: trainer-fit refuses a file made for
other faces. Teachers that saw the validation faces (a run of another split seed, say) make the
student's validation score optimistic: choose on validation only with teachers of the same split.

Example:
    trainer-teach runs/a/final.keras runs/b/final.keras --data ../shared/fer2013 --out runs/teacher.npz
    trainer-fit --arch vgg --data ../shared/fer2013 --teacher runs/teacher.npz --init-from runs/a/final.keras ...
    trainer-teach models/emotion_vgg.onnx --data ../shared/fer2013 --out runs/vgg_teacher.npz
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from export.config import TTA_VIEWS
from runtime.cli_support import SEED, ArgumentParser, UserError, atomic_path, path_arg, run_main
from runtime.contract import ModelSpec
from trainer.cli_common import VAL_FRACTION, check_new_output, load_models_of_one_contract, write_errors
from trainer.config import BOUNDS, FitConfig

FIT_DEFAULTS = FitConfig()  # trainer-fit's defaults: the split is rebuilt from the same settings
TEACHER_VIEWS = tuple(TTA_VIEWS)  # the views each teacher averages: the exported models' choices


_SAME = "give models of one contract"


class TeacherError(ValueError):
    """A teacher file that cannot be used for this run's faces."""


def faces_sha256(x: np.ndarray) -> str:
    """The SHA-256 of a split's pixels (uint8, in order): what ties a teacher file to its faces."""
    return hashlib.sha256(np.ascontiguousarray(x, dtype=np.uint8).tobytes()).hexdigest()


def teacher_probabilities(models: Sequence, x: np.ndarray, views: str, batch_size: int = 512) -> np.ndarray:
    """The mean over ``models`` of each one's probabilities, itself averaged over ``views``.

    Args:
        models: Models of one contract (raw 0-255 pixels in, class probabilities out): Keras
            models, or :class:`trainer.evaluate.OnnxModel` (exported files, which average the
            views in their graph instead of ``views``).
        x: Faces, ``uint8`` ``(N, 48, 48, 1)``.
        views: One of :data:`TEACHER_VIEWS` (the exported models' views, :func:`export.convert.forward`),
            for the Keras models.
    """
    from export.convert import forward
    from trainer.evaluate import OnnxModel

    def one(model) -> np.ndarray:
        if isinstance(model, OnnxModel):  # its views are in its graph; it batches itself
            return model.predict(x)
        return np.concatenate([np.asarray(forward(model, x[i : i + batch_size].astype(np.float32), views))
                               for i in range(0, len(x), batch_size)])

    return np.mean([one(model) for model in models], axis=0, dtype=np.float64).astype(np.float32)


def load_teachers(paths: Sequence[Path], views: str) -> tuple[list, ModelSpec, list[str]]:
    """Open teacher models (``.keras`` or ``.onnx``) that share one contract.

    Returns:
        The models, their :class:`runtime.contract.ModelSpec`, and for each model the views it
        averages (``views`` for a Keras model, its graph's own for an ONNX file).

    Raises:
        UserError: A model's contract (labels or input) differs from the first's.
        ModelError: A file is not a trainer-fit or export-onnx model.
    """
    from trainer.evaluate import OnnxModel

    keras_paths = [p for p in paths if p.suffix.lower() != ".onnx"]
    keras_models, keras_spec = load_models_of_one_contract(keras_paths, _SAME) if keras_paths else ([], None)
    loaded = iter(keras_models)
    models, specs, model_views = [], [], []
    for path in paths:
        if path.suffix.lower() == ".onnx":
            model = OnnxModel(path, "cpu")
            models.append(model)
            specs.append(model.spec)
            model_views.append("its graph's " + model.classifier.metadata.get("test_time_augmentation", "none"))
        else:
            models.append(next(loaded))
            specs.append(keras_spec)
            model_views.append(views)
    for path, spec in zip(paths[1:], specs[1:], strict=True):
        if spec != specs[0]:
            raise UserError(f"{path} has another contract (labels or input) than {paths[0]}: {_SAME}")
    return models, specs[0], model_views


def read_teacher(path: Path, x: np.ndarray, labels: Sequence[str]) -> np.ndarray:
    """The teacher's probabilities for the faces ``x`` (one row per face, in order).

    Raises:
        TeacherError: The file is not a trainer-teach file, was made for other faces or labels, or
            holds rows that are not probabilities.
    """
    try:
        with np.load(path, allow_pickle=False) as saved:
            probs, sha, saved_labels = saved["probabilities"], str(saved["faces_sha256"]), list(saved["labels"])
    except (OSError, ValueError, KeyError) as exc:
        raise TeacherError(f"teacher {path} is not a trainer-teach file ({type(exc).__name__}): make it with "
                           "trainer-teach") from None
    if saved_labels != list(labels):
        raise TeacherError(f"teacher {path} has the labels {saved_labels}, not this run's {list(labels)}")
    if probs.shape != (len(x), len(labels)) or sha != faces_sha256(x):
        raise TeacherError(f"teacher {path} was made for other faces than this run's {len(x)} training faces: "
                           "make it with trainer-teach and the run's --data, split seed, --val-fraction and "
                           "--limit-per-class")
    if not np.all(np.isfinite(probs)) or np.any(probs < 0) or not np.allclose(probs.sum(axis=1), 1.0, atol=1e-3):
        raise TeacherError(f"teacher {path} holds rows that are not probabilities (negative, not finite or not "
                           "summing to 1): make it again with trainer-teach")
    return probs


def _parser() -> ArgumentParser:
    d = FIT_DEFAULTS
    p = ArgumentParser(prog="trainer-teach", description="Write a teacher's probabilities for trainer-fit --teacher.")
    p.add_argument("models", nargs="+", type=path_arg,
                   help=".keras models from trainer-fit or .onnx files from export-onnx (their mean teaches)")
    p.add_argument("--data", type=path_arg, required=True, help="FER2013 folder (with train/) or fer2013.csv")
    p.add_argument("--out", type=path_arg, required=True, help=".npz file to write (a new file)")
    p.add_argument("--views", choices=TEACHER_VIEWS, default="flip",
                   help="test-time views each .keras model averages (an .onnx file averages its graph's own)")
    p.add_argument("--seed", type=SEED, default=d.seed,
                   help="the run's split seed (trainer-fit's --split-seed, else its --seed)")
    p.add_argument("--val-fraction", type=VAL_FRACTION, default=d.val_fraction, help="trainer-fit's --val-fraction")
    p.add_argument("--limit-per-class", type=BOUNDS["limit_per_class"], default=None,
                   help="trainer-fit's --limit-per-class, if the run uses it")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """trainer-teach: the teacher's probabilities for a run's training faces."""
    args = _parser().parse_args(argv)
    check_new_output(args.out, ".npz")
    models, spec, model_views = load_teachers(args.models, args.views)

    from trainer.data import train_val_split

    train, _ = train_val_split(args.data, args.val_fraction, args.seed, args.limit_per_class)
    if tuple(train.labels) != tuple(spec.labels):
        raise UserError(f"the models' labels {list(spec.labels)} differ from the data's {list(train.labels)}")
    probs = teacher_probabilities(models, train.x, args.views)
    agree = float(np.mean(probs.argmax(1) == train.y))
    with write_errors(args.out), atomic_path(args.out, suffix=".npz") as tmp, open(tmp, "wb") as fh:
        np.savez(fh, probabilities=probs, faces_sha256=np.array(faces_sha256(train.x)),
                 labels=np.array(train.labels), models=np.array([str(m) for m in args.models]),
                 views=np.array(model_views))
    views = ", ".join(dict.fromkeys(model_views))
    teacher = "one model" if len(models) == 1 else f"the mean of {len(models)} models"
    print(f"wrote {args.out}: {teacher} ({views} views) on {len(train)} training faces; "
          f"its top class is the label for {agree:.1%}", file=sys.stderr)
    return 0


cli = run_main(main, "trainer-teach")
