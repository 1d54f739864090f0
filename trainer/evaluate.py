"""Evaluation report: accuracy, per-class precision/recall/F1, confusion matrix, curves.

``trainer-eval MODEL DATA`` evaluates any saved ``.keras`` or exported ``.onnx`` model on any split,
including ``--split val``, the validation split that ``trainer-fit`` carved from train (same seed).
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from runtime.backends import PROVIDERS
from runtime.classifier import EmotionClassifier
from runtime.cli_support import SEED, ArgumentParser, UserError, atomic_path, check_output_path, path_arg, run_main
from trainer.cli_common import VAL_FRACTION, inference_errors, write_errors
from trainer.config import FitConfig
from trainer.data import Split, load_split, train_val_split
from trainer.model import check_against_spec, load_model, read_spec

FIT_DEFAULTS = FitConfig()  # trainer-fit's defaults: --split val rebuilds its validation split


def classification_report(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence[str]) -> dict:
    """Accuracy, per-class precision/recall/F1/support and the confusion matrix.

    Args:
        y_true: True class indices ``(N,)``.
        y_pred: Predicted class indices ``(N,)``.
        labels: Class names in index order.

    Returns:
        A JSON-ready dict; ``confusion[i][j]`` counts true class ``i`` predicted as ``j``.
    """
    k = len(labels)
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true), np.asarray(y_pred)), 1)
    tp = np.diag(cm).astype(float)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    precision = np.divide(tp, predicted, out=np.zeros(k), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros(k), where=support > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(k), where=precision + recall > 0)
    per_class = {
        name: {
            "precision": round(float(precision[i]), 4),
            "recall": round(float(recall[i]), 4),
            "f1": round(float(f1[i]), 4),
            "support": int(support[i]),
        }
        for i, name in enumerate(labels)
    }
    return {
        "accuracy": round(float(tp.sum() / max(1, cm.sum())), 4),
        "macro_f1": round(float(f1.mean()), 4),
        "n": int(cm.sum()),
        "labels": list(labels),
        "per_class": per_class,
        "confusion": cm.tolist(),
    }


def format_report(report: dict) -> str:
    """The report as a small text table."""
    lines = [f"accuracy {report['accuracy']:.4f} on {report['n']} faces, macro F1 {report['macro_f1']:.4f}"]
    lines.append(f"{'class':<10}{'precision':>10}{'recall':>8}{'f1':>8}{'support':>9}")
    for name, row in report["per_class"].items():
        lines.append(f"{name:<10}{row['precision']:>10.3f}{row['recall']:>8.3f}{row['f1']:>8.3f}{row['support']:>9d}")
    return "\n".join(lines)


def plot_confusion(report: dict, path: Path, title: str = "") -> None:
    """Write a row-normalised confusion-matrix PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(report["confusion"], dtype=float)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    labels = report["labels"]
    fig, ax = plt.subplots(figsize=(6.4, 5.6), dpi=100)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(
                j,
                i,
                f"{norm[i, j]:.2f}\n{int(cm[i, j])}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if norm[i, j] > 0.5 else "black",
            )
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or f"accuracy {report['accuracy']:.3f} (n={report['n']})")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp)
    plt.close(fig)


def plot_history(history_csv: Path, path: Path) -> None:
    """Write the training-curves PNG (loss and accuracy, train and validation) from history.csv."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with Path(history_csv).open() as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        return
    epochs = [int(r["epoch"]) for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    for ax, key in zip(axes, ("loss", "accuracy"), strict=True):
        ax.plot(epochs, [float(r[key]) for r in rows], label=f"train {key}")
        ax.plot(epochs, [float(r[f"val_{key}"]) for r in rows], label=f"val {key}")
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp)
    plt.close(fig)


def predict_classes(model, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Predicted class indices of raw-pixel faces ``x`` (``model``: a Keras model or an :class:`OnnxModel`)."""
    probs = model.predict(x.astype(np.float32), batch_size=batch_size, verbose=0)
    return np.asarray(probs).argmax(axis=1)


def score_model(model, split: Split, name: str = "test") -> dict:
    """The :func:`classification_report` of ``model`` on a :class:`trainer.data.Split`."""
    report = classification_report(split.y, predict_classes(model, split.x), split.labels)
    report["split"] = name
    report["source"] = split.source
    report["skipped_unreadable"] = split.skipped
    return report


def write_report(report: dict, out_dir: Path, name: str = "test") -> None:
    """Write ``metrics.json`` and ``confusion_matrix.png`` into ``out_dir``, each atomically."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "metrics.json") as tmp:
        tmp.write_text(json.dumps(report, indent=2))
    plot_confusion(report, out_dir / "confusion_matrix.png", f"{name}: accuracy {report['accuracy']:.3f}")


def evaluate_model(model, split: Split, out_dir: Path | None = None, name: str = "test") -> dict:
    """Evaluate ``model`` on a :class:`trainer.data.Split`; optionally write metrics and PNG.

    Writes ``metrics.json`` and ``confusion_matrix.png`` into ``out_dir`` when given.
    """
    report = score_model(model, split, name)
    if out_dir is not None:
        write_report(report, out_dir, name)
    return report


class OnnxModel:
    """An exported ONNX model behind the ``predict`` call that :func:`evaluate_model` uses."""

    def __init__(self, path: Path, provider: str = "cpu") -> None:
        self.classifier = EmotionClassifier(path, provider=provider)
        self.spec = self.classifier.spec

    def predict(self, x: np.ndarray, batch_size: int = 256, verbose: int = 0) -> np.ndarray:
        """Class probabilities of raw-pixel faces, in batches."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        return np.concatenate([self.classifier.predict(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])


def _parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="trainer-eval", description="Evaluate a saved .keras or exported .onnx model on a FER2013 split."
    )
    parser.add_argument(
        "model", type=path_arg, help="a .keras model saved by trainer-fit, or an .onnx from export-onnx"
    )
    parser.add_argument("data", type=path_arg, help="FER2013 folder (with train/ and test/) or fer2013.csv")
    parser.add_argument(
        "--split",
        default="test",
        choices=["train", "val", "test", "private"],
        help="split to evaluate; val is the validation split trainer-fit carves from train (see --seed)",
    )
    parser.add_argument(
        "--val-fraction",
        type=VAL_FRACTION,
        default=FIT_DEFAULTS.val_fraction,
        help="--split val: trainer-fit's fraction",
    )
    parser.add_argument("--seed", type=SEED, default=FIT_DEFAULTS.seed,
                        help="--split val: the run's split seed (trainer-fit's --split-seed, else its --seed)")
    parser.add_argument("--out", type=path_arg, default=None, help="folder for metrics.json and confusion_matrix.png")
    parser.add_argument("--provider", choices=PROVIDERS, default="cpu",
                        help="engine for an .onnx model: cpu (onnxruntime, the reference), openvino, cuda or auto")
    return parser


def _check_out_folder(out: Path | None) -> None:
    """Refuse an ``--out`` that is a file, and make a missing one (with its parents), before any work."""
    if out is None:
        return
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a folder: give a folder (the file is left as it is)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--out {out} cannot be made ({exc.strerror}): choose another folder") from None
    check_output_path(out / "metrics.json", "--out")


def _open_model(path: Path, provider: str = "cpu"):
    """The model (an :class:`OnnxModel` on ``provider``, or a Keras model) and its spec.

    A ``.keras`` model is checked against its spec (input shape, class count).
    """
    if path.suffix.lower() == ".onnx":
        model = OnnxModel(path, provider)
        return model, model.spec
    if provider != "cpu":
        raise UserError(f"--provider {provider} applies to .onnx models; {path} runs in Keras: leave --provider out")
    spec = read_spec(path)
    model = load_model(path)
    check_against_spec(model, spec, path)
    return model, spec


def main(argv: Sequence[str] | None = None) -> int:
    """trainer-eval: evaluate a saved model on a FER2013 split."""
    args = _parser().parse_args(argv)
    _check_out_folder(args.out)
    model, spec = _open_model(args.model, args.provider)
    if args.split == "val":  # the same faces trainer-fit validated on: same data, fraction and seed
        split = train_val_split(args.data, args.val_fraction, args.seed)[1]
    else:
        split = load_split(args.data, args.split)
    if tuple(split.labels) != spec.labels:
        raise UserError(f"model labels {list(spec.labels)} differ from the data's {list(split.labels)}")
    with inference_errors(f"model {args.model} on {len(split)} faces"):
        report = score_model(model, split, args.split)
    report["engine"] = model.classifier.provider if isinstance(model, OnnxModel) else "keras"
    if args.out is not None:
        with write_errors(args.out):
            write_report(report, args.out, args.split)
    print(format_report(report))
    if args.out is not None:
        print(f"wrote {args.out / 'metrics.json'} and {args.out / 'confusion_matrix.png'}", file=sys.stderr)
    return 0


cli = run_main(main, "trainer-eval")
