"""trainer-fit: train the documented CNN on FER2013, resumably, and report on the test split.

A run folder holds everything: ``config.json``, ``checkpoints/last.keras`` (every epoch, with
optimizer state), ``best.keras`` (best validation accuracy), ``final.keras``, ``history.csv``,
``training_curves.png``, ``metrics.json`` and ``confusion_matrix.png`` (test split, best model),
``val/`` (the same report on the validation split) and, with ``--swa-epochs``, ``swa.keras``.
With ``--no-test-eval`` the test split is never read and ``metrics.json`` is the validation report.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime.cli_support import SEED, ArgumentParser, Number, UserError, atomic_path, os_error_text, run_main
from runtime.contract import ModelSpec
from trainer.cli_common import VAL_FRACTION, first_line, terminate_as_interrupt
from trainer.model import build_model, load_model, read_spec, save_model


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
HISTORY_NUMBERS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds")  # state.json history columns
CHOICES = {"schedule": ("cosine", "constant"), "class_weights": ("none", "sqrt", "balanced")}


def _parser() -> ArgumentParser:
    d = FitConfig()
    b = BOUNDS
    p = ArgumentParser(prog="trainer-fit", description="Train the documented emotion CNN on FER2013.")
    p.add_argument(
        "--data", type=str, help="FER2013 folder with train/ and test/, or fer2013.csv (required unless --resume)"
    )
    p.add_argument("--out", default=d.out, help="run folder for checkpoints, logs and report")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--epochs", type=b["epochs"], default=d.epochs, help="number of epochs")
    p.add_argument("--batch-size", type=b["batch_size"], default=d.batch_size, help="global batch size")
    p.add_argument("--lr", type=b["lr"], default=d.lr, help="peak learning rate (Adam)")
    p.add_argument("--schedule", choices=CHOICES["schedule"], default=d.schedule, help="learning-rate schedule")
    p.add_argument("--warmup-epochs", type=b["warmup_epochs"], default=d.warmup_epochs, help="linear warm-up epochs")
    p.add_argument("--no-augment", dest="augment", action="store_false", help="disable augmentation")
    p.add_argument("--shift", type=b["shift"], default=d.shift, help="augmentation: max shift (fraction)")
    p.add_argument(
        "--rotate-deg", type=b["rotate_deg"], default=d.rotate_deg, help="augmentation: max rotation (degrees)"
    )
    p.add_argument("--zoom", type=b["zoom"], default=d.zoom, help="augmentation: max zoom (fraction)")
    p.add_argument(
        "--class-weights",
        choices=CHOICES["class_weights"],
        default=d.class_weights,
        help="weight the loss per class by inverse frequency (sqrt: milder)",
    )
    p.add_argument("--label-smoothing", type=b["label_smoothing"], default=d.label_smoothing, help="label smoothing")
    p.add_argument(
        "--mixup",
        type=b["mixup"],
        default=d.mixup,
        help="mixup strength a (Beta(a, a) mixing weights), e.g. 0.2; 0 is off",
    )
    p.add_argument(
        "--val-fraction", type=b["val_fraction"], default=d.val_fraction, help="validation fraction of train"
    )
    p.add_argument("--seed", type=b["seed"], default=d.seed, help="random seed")
    p.add_argument("--mixed-precision", action="store_true", help="float16 compute (GPU only)")
    p.add_argument(
        "--limit-per-class", type=b["limit_per_class"], default=None, help="read at most N faces per class (quick runs)"
    )
    p.add_argument("--init-from", default=None, help="start from the weights of this .keras model (fine-tuning)")
    p.add_argument("--tensorboard", action="store_true", help="write TensorBoard logs")
    p.add_argument(
        "--cpu-replicas", type=b["cpu_replicas"], default=d.cpu_replicas, help="mirror over N logical CPUs (testing)"
    )
    p.add_argument(
        "--swa-epochs",
        type=b["swa_epochs"],
        default=d.swa_epochs,
        help="also write swa.keras, the mean weights of the last N epochs, N at most --epochs "
        "(use with --schedule constant)",
    )
    p.add_argument(
        "--no-test-eval",
        dest="test_eval",
        action="store_false",
        help="report on the validation split only: use while choosing a recipe, so the test split stays unseen",
    )
    return p


def config_problem(cfg: FitConfig) -> str | None:
    """What is wrong with a configuration's values (a bound, a type, a choice), or None.

    The flags are checked by argparse with the same :data:`BOUNDS`; this also covers a
    ``FitConfig`` built in Python or read back from a run's ``config.json``.
    """
    for field in dataclasses.fields(FitConfig):
        value = getattr(cfg, field.name)
        if field.name in BOUNDS:
            if value is None and field.name == "limit_per_class":
                continue
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
        elif not (isinstance(value, str) or (value is None and field.name == "init_from")):
            return f"{field.name} is {value!r}, not a string"
    return None


def _validate(cfg: FitConfig) -> None:
    """Refuse a configuration that breaks a bound or a rule between two settings."""
    problem = config_problem(cfg)
    if problem:
        raise UserError(f"bad setting: {problem}")
    if cfg.swa_epochs > cfg.epochs:
        raise UserError(f"--swa-epochs {cfg.swa_epochs} must be between 0 (off) and --epochs {cfg.epochs}")


def class_weight_map(y: np.ndarray, k: int, mode: str) -> dict[int, float] | None:
    """Loss weight per class: ``balanced`` is ``N / (k * count)``, ``sqrt`` its square root."""
    if mode == "none":
        return None
    counts = np.bincount(y, minlength=k).astype(float)
    w = len(y) / (k * np.maximum(counts, 1))
    if mode == "sqrt":
        w = np.sqrt(w)
    return {i: float(v) for i, v in enumerate(w)}


def make_strategy(cpu_replicas: int):  # noqa: ANN201
    """The distribution strategy: mirrored over all GPUs (>1), or over logical CPUs if asked."""
    import tensorflow as tf

    if cpu_replicas > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * cpu_replicas)
        return tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(cpu_replicas)])
    gpus = tf.config.list_physical_devices("GPU")
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def make_dataset(  # noqa: ANN201
    x: np.ndarray,
    y: np.ndarray,
    k: int,
    cfg: FitConfig,
    training: bool,
    replicas: int = 1,
    class_weights: dict[int, float] | None = None,
):
    """A cached, shuffled (training), augmented (training), prefetched ``tf.data`` pipeline.

    With several replicas every batch is whole and divisible by the replica count (TF cannot
    split a ragged last batch across replicas), so up to a batch of faces is left out per epoch.

    With ``cfg.mixup`` each augmented training face is blended with the face at the mirrored
    position of its (shuffled) batch, pixels and one-hot labels alike, with a weight drawn from
    Beta(a, a) per face. ``class_weights`` become per-face loss weights, the label-weighted mean of
    the class weights, so a mixed face carries both of its classes' weights in proportion.
    """
    import keras
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((x, tf.one_hot(y, k))).cache()
    if training:
        ds = ds.shuffle(len(y), seed=cfg.seed, reshuffle_each_iteration=True)
    batch = cfg.batch_size
    if replicas > 1:
        batch = max(replicas, min(batch, len(y)) // replicas * replicas)
    ds = ds.batch(batch, drop_remainder=replicas > 1).map(
        lambda a, b: (tf.cast(a, tf.float32), b), num_parallel_calls=tf.data.AUTOTUNE
    )
    if training and cfg.augment:
        layers = [keras.layers.RandomFlip("horizontal", seed=cfg.seed)]
        if cfg.shift > 0:
            layers.append(keras.layers.RandomTranslation(cfg.shift, cfg.shift, fill_mode="nearest", seed=cfg.seed + 1))
        if cfg.rotate_deg > 0:
            layers.append(keras.layers.RandomRotation(cfg.rotate_deg / 360.0, fill_mode="nearest", seed=cfg.seed + 2))
        if cfg.zoom > 0:
            layers.append(keras.layers.RandomZoom(cfg.zoom, fill_mode="nearest", seed=cfg.seed + 3))
        aug = keras.Sequential(layers, name="augment")
        ds = ds.map(
            lambda a, b: (tf.clip_by_value(aug(a, training=True), 0.0, 255.0), b), num_parallel_calls=tf.data.AUTOTUNE
        )
    if training and cfg.mixup > 0:
        ds = ds.map(lambda a, b: _mixup(a, b, cfg.mixup), num_parallel_calls=tf.data.AUTOTUNE)
    if training and class_weights:
        w = tf.constant([class_weights[i] for i in range(k)], tf.float32)
        ds = ds.map(lambda a, b: (a, b, tf.linalg.matvec(b, w)), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def _mixup(x, y, alpha: float):  # noqa: ANN001, ANN202 - tensors
    """Blend each face and label of a batch with its mirror-position partner, weight ~ Beta(alpha, alpha)."""
    import tensorflow as tf

    n = tf.shape(x)[0]
    g1 = tf.random.gamma([n], alpha)
    g2 = tf.random.gamma([n], alpha)
    lam = g1 / (g1 + g2 + 1e-12)  # Beta(alpha, alpha) from two gammas
    lam_x, lam_y = lam[:, None, None, None], lam[:, None]
    return x * lam_x + tf.reverse(x, [0]) * (1 - lam_x), y * lam_y + tf.reverse(y, [0]) * (1 - lam_y)


def make_optimizer(cfg: FitConfig, steps_per_epoch: int):  # noqa: ANN201
    """Adam with linear warm-up then cosine decay to zero (or a constant rate)."""
    import keras

    if cfg.schedule == "constant":
        return keras.optimizers.Adam(cfg.lr)
    warmup = int(cfg.warmup_epochs * steps_per_epoch)
    total = cfg.epochs * steps_per_epoch
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup else cfg.lr,
        decay_steps=max(1, total - warmup),
        alpha=0.0,
        warmup_target=cfg.lr if warmup else None,
        warmup_steps=warmup,
    )
    return keras.optimizers.Adam(schedule)


class RunFiles:
    """Paths of a run folder."""

    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self.config = self.out / "config.json"
        self.state = self.out / "checkpoints" / "state.json"
        self.last = self.out / "checkpoints" / "last.keras"
        self.best = self.out / "best.keras"
        self.final = self.out / "final.keras"
        self.swa = self.out / "swa.keras"
        self.swa_sum = self.out / "checkpoints" / "swa_sum.npz"
        self.history = self.out / "history.csv"
        self.curves = self.out / "training_curves.png"

    def remove_stale_temporaries(self) -> None:
        """Delete temporary files a killed run left behind (finished files are never touched)."""
        finals = [
            self.config,
            self.state,
            self.last,
            self.best,
            self.final,
            self.swa,
            self.swa_sum,
            self.history,
            self.curves,
        ]
        for path in finals:
            for tmp in path.parent.glob(f".{path.name}.*"):
                tmp.unlink(missing_ok=True)


def _write_json(path: Path, data: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2))


def _write_history(path: Path, rows: list[dict]) -> None:
    keys = ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds"]
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join([",".join(keys)] + [",".join(str(r[k]) for k in keys) for r in rows]) + "\n")


def _add_to_weight_sum(path: Path, weights: list[np.ndarray], epoch: int) -> None:
    """Add one epoch's weights to the running sum in ``path`` (atomic; an epoch is added once)."""
    total, count, last = [w.astype(np.float64) for w in weights], 1, epoch
    if path.is_file():
        with np.load(path) as saved:
            if int(saved["epoch"]) >= epoch:  # already added before a kill and resume
                return
            total = [saved[f"w{i}"] + t for i, t in enumerate(total)]
            count += int(saved["count"])
    with atomic_path(path) as tmp, tmp.open("wb") as fh:
        np.savez(fh, epoch=last, count=count, **{f"w{i}": t for i, t in enumerate(total)})


def _make_checkpoint_callback(files: RunFiles, spec: ModelSpec, state: dict, cfg: FitConfig):  # noqa: ANN202
    import keras

    class AtomicCheckpoint(keras.callbacks.Callback):
        """After every epoch: last checkpoint, best model, history, state; all atomic."""

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self._t0 = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            logs = logs or {}
            opt = self.model.optimizer
            lr = float(keras.ops.convert_to_numpy(opt.learning_rate))
            row = {
                "epoch": epoch + 1,
                **{k: round(float(logs[k]), 5) for k in ("loss", "accuracy", "val_loss", "val_accuracy")},
                "lr": f"{lr:.3e}",
                "seconds": round(time.perf_counter() - self._t0, 1),
            }
            state["history"].append(row)
            extra = {"epoch": epoch + 1, "val_accuracy": row["val_accuracy"], "config": dataclasses.asdict(cfg)}
            if row["val_accuracy"] > state["best_val_accuracy"]:
                state["best_val_accuracy"] = row["val_accuracy"]
                state["best_epoch"] = epoch + 1
                save_model(self.model, files.best, spec, extra)
            save_model(self.model, files.last, spec, extra)
            if epoch + 1 > cfg.epochs - cfg.swa_epochs:
                _add_to_weight_sum(files.swa_sum, self.model.get_weights(), epoch + 1)
            state["epoch"] = epoch + 1
            _write_history(files.history, state["history"])
            _write_json(files.state, state)  # written last: it names a checkpoint that exists

    return AtomicCheckpoint()


def _damaged(run: Path, path: Path, why: str) -> UserError:
    """The one-line error for a run file that cannot be used, with the two ways out."""
    name = path.relative_to(run) if path.is_relative_to(run) else path
    return UserError(
        f"run folder {run}: {name} is damaged ({why}): start a new run with another --out, or restore the file"
    )


def read_json_object(path: Path, run: Path) -> dict:
    """A run file that must hold one JSON object (``config.json``, ``checkpoints/state.json``).

    Raises:
        UserError: It cannot be read, is not UTF-8 JSON, or holds something other than an object.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise _damaged(run, path, f"cannot be read: {os_error_text(exc)}") from None
    except UnicodeDecodeError:
        raise _damaged(run, path, "not UTF-8 text") from None
    if not text.strip():
        raise _damaged(run, path, "empty")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _damaged(run, path, f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    if not isinstance(data, dict):
        raise _damaged(run, path, f"a JSON {type(data).__name__}, not an object")
    return data


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)


def state_problem(state: dict) -> str | None:
    """What is wrong with a run's ``state.json`` (missing keys, wrong types), or None."""
    for key, check, want in (
        ("epoch", _is_int, "an integer"),
        ("best_epoch", _is_int, "an integer"),
        ("best_val_accuracy", _is_number, "a number"),
    ):
        if key not in state:
            return f"no {key!r}"
        if not check(state[key]) or state[key] < (-1 if key == "best_val_accuracy" else 0):
            return f"{key} is {state[key]!r}, not {want} in range"
    history = state.get("history")
    if not isinstance(history, list) or len(history) != state["epoch"]:
        return f"history is not a list of {state['epoch']} epochs"
    for row in history:
        if not isinstance(row, dict) or not all(_is_number(row.get(k)) for k in HISTORY_NUMBERS):
            return f"history row {str(row)[:80]} lacks a number for one of {', '.join(HISTORY_NUMBERS)}"
    return None


def read_state(files: RunFiles) -> dict:
    """The state of a run to resume (epoch, best so far, history).

    Raises:
        UserError: No checkpoint, or ``state.json`` is damaged.
    """
    if not files.state.is_file() or not files.last.is_file():
        raise UserError(f"--resume: no checkpoint in {files.out / 'checkpoints'}: start the run without --resume")
    state = read_json_object(files.state, files.out)
    problem = state_problem(state)
    if problem:
        raise _damaged(files.out, files.state, problem)
    return state


def read_config(out: Path) -> FitConfig:
    """The configuration of the run in ``out`` (its ``config.json``), for ``--resume``.

    The run folder is the one given, even if it was moved since the run began.

    Raises:
        UserError: No ``config.json``, or it is damaged.
    """
    path = out / "config.json"
    if not path.is_file():
        raise UserError(f"--resume: no run in {out} (no config.json): start the run without --resume")
    saved = read_json_object(path, out)
    saved.pop("labels", None)
    names = {f.name for f in dataclasses.fields(FitConfig)}
    unknown = sorted(set(saved) - names)
    if unknown:
        raise _damaged(out, path, f"unknown setting(s) {', '.join(map(str, unknown))[:80]}")
    if not isinstance(saved.get("data"), str) or not saved["data"]:
        raise _damaged(out, path, "no data path")
    cfg = dataclasses.replace(FitConfig(**saved), out=str(out))
    problem = config_problem(cfg)
    if problem:
        raise _damaged(out, path, problem)
    return cfg


def check_run_folder(out: Path) -> None:
    """Fail early, before reading any data, if ``out`` cannot be a run folder.

    Raises:
        UserError: ``out`` is empty, is a file, lies under a file, or cannot be written.
    """
    if not str(out).strip():
        raise UserError("--out is empty: give a run folder")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a folder: choose another --out (the file is left as it is)")
    existing = next((p for p in (out, *out.parents) if p.exists()), Path("."))
    if not existing.is_dir():
        raise UserError(f"--out {out} lies under {existing}, which is a file: choose another --out")
    try:
        fd, probe = tempfile.mkstemp(prefix=".probe.", dir=existing)
    except OSError as exc:
        raise UserError(f"--out {out}: {os_error_text(exc, existing)}: choose a writable folder") from None
    os.close(fd)
    os.unlink(probe)


def _copy_weights(model, path: Path) -> None:  # noqa: ANN001 - a keras model
    """Start ``model`` from the weights of the ``.keras`` model in ``path`` (``--init-from``).

    Raises:
        UserError: The model does not load, or its layers differ from the documented CNN's.
    """
    try:
        model.set_weights(load_model(path).get_weights())
    except ValueError as exc:
        raise UserError(
            f"--init-from {path} is not the documented CNN ({first_line(exc, 120)}): give a model from trainer-fit"
        ) from None


def fit(cfg: FitConfig, resume: bool = False) -> dict:
    """Train (or resume) a run and write its report. Returns the test (or, without test_eval, val) metrics."""
    files = RunFiles(Path(cfg.out))
    _validate(cfg)
    check_run_folder(files.out)
    if resume:
        state = read_state(files)
    else:
        if files.state.is_file():
            raise UserError(f"{files.out} already holds a run: pass --resume to continue it, or choose another --out")
        state = {"epoch": 0, "best_val_accuracy": -1.0, "best_epoch": 0, "history": []}
    init_spec = read_spec(Path(cfg.init_from)) if cfg.init_from and not resume else None

    from trainer.data import load_split, train_val_split

    data = Path(cfg.data)
    t0 = time.perf_counter()
    train, val = train_val_split(data, cfg.val_fraction, cfg.seed, cfg.limit_per_class)
    test = load_split(data, "test", cfg.limit_per_class, cfg.seed) if cfg.test_eval else None
    spec = ModelSpec(labels=train.labels)
    if init_spec is not None and init_spec != spec:
        raise UserError(
            f"--init-from {cfg.init_from} has another model spec (labels or input): give a trainer-fit model"
        )
    n_test, skipped = ("unread", train.skipped) if test is None else (len(test), train.skipped + test.skipped)
    print(
        f"data: {len(train)} train / {len(val)} val / {n_test} test faces from {data} "
        f"({time.perf_counter() - t0:.1f} s; skipped {skipped} unreadable)",
        file=sys.stderr,
    )

    files.state.parent.mkdir(parents=True, exist_ok=True)
    if resume:
        files.remove_stale_temporaries()
    print(f"run folder: {files.out.resolve()}", file=sys.stderr)
    _write_json(files.config, {**dataclasses.asdict(cfg), "labels": list(spec.labels)})

    import keras
    import tensorflow as tf

    strategy = make_strategy(cfg.cpu_replicas)
    keras.utils.set_random_seed(cfg.seed)
    if cfg.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    k = spec.num_classes
    steps = int(np.ceil(len(train) / cfg.batch_size))
    with strategy.scope():
        if resume:
            model = load_model(files.last, compile=True)
            print(f"resuming at epoch {state['epoch'] + 1}/{cfg.epochs} from {files.last}", file=sys.stderr)
        else:
            model = build_model(spec)
            if cfg.init_from:
                _copy_weights(model, Path(cfg.init_from))
                print(f"starting from the weights of {cfg.init_from}", file=sys.stderr)
            model.compile(
                optimizer=make_optimizer(cfg, steps),
                loss=keras.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing),
                metrics=["accuracy"],
            )
    print(
        f"devices: {strategy.num_replicas_in_sync} replica(s); GPUs: {len(tf.config.list_physical_devices('GPU'))}",
        file=sys.stderr,
    )
    callbacks = [_make_checkpoint_callback(files, spec, state, cfg)]
    if cfg.tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(files.out / "tensorboard")))
    if state["epoch"] < cfg.epochs:
        model.fit(
            make_dataset(
                train.x,
                train.y,
                k,
                cfg,
                training=True,
                replicas=strategy.num_replicas_in_sync,
                class_weights=class_weight_map(train.y, k, cfg.class_weights),
            ),
            validation_data=make_dataset(val.x, val.y, k, cfg, training=False, replicas=strategy.num_replicas_in_sync),
            epochs=cfg.epochs,
            initial_epoch=state["epoch"],
            callbacks=callbacks,
            verbose=1 if sys.stderr.isatty() else 2,
        )
    from trainer.evaluate import evaluate_model, format_report, plot_history

    save_model(model, files.final, spec, {"epoch": state["epoch"], "config": dataclasses.asdict(cfg)})
    plot_history(files.history, files.curves)
    swa_val = None
    if cfg.swa_epochs:
        with np.load(files.swa_sum) as saved:
            count = int(saved["count"])
            model.set_weights([saved[f"w{i}"] / count for i in range(len(model.get_weights()))])
        save_model(model, files.swa, spec, {"swa_of_epochs": count, "config": dataclasses.asdict(cfg)})
        swa_val = evaluate_model(model, val)["accuracy"]
        print(f"swa.keras: mean of the last {count} epochs, val accuracy {swa_val:.4f}", file=sys.stderr)
    best = load_model(files.best)
    val_report = evaluate_model(best, val, files.out / "val", "val")
    if test is not None:
        report = evaluate_model(best, test, files.out, "test")
        report["val"] = {key: val_report[key] for key in ("accuracy", "macro_f1", "per_class")}
    else:
        report = val_report
    report.update(
        {
            "model": "best.keras",
            "best_epoch": state["best_epoch"],
            "best_val_accuracy": state["best_val_accuracy"],
            "swa_val_accuracy": swa_val,
            "epochs": state["epoch"],
            "mean_epoch_seconds": round(float(np.mean([r["seconds"] for r in state["history"]] or [0])), 1),
            "train_faces": len(train),
            "val_faces": len(val),
            "test_faces": len(test) if test is not None else None,
        }
    )
    _write_json(files.out / "metrics.json", report)
    print(format_report(report))
    print(f"wrote {files.best}, {files.final}, {files.out / 'metrics.json'} and plots", file=sys.stderr)
    return report


def _config_from_args(args: argparse.Namespace) -> FitConfig:
    """The run's configuration: the flags, or ``config.json`` for ``--resume``."""
    if args.resume:
        return read_config(Path(args.out))
    if not args.data:
        raise UserError("--data is required: give the FER2013 folder (with train/ and test/) or fer2013.csv")
    if args.init_from is not None and not args.init_from.strip():
        raise UserError("--init-from is empty: give a .keras model from trainer-fit, or leave the flag out")
    fields = {f.name for f in dataclasses.fields(FitConfig)}
    return FitConfig(**{k: v for k, v in vars(args).items() if k in fields})


def main(argv: Sequence[str] | None = None) -> int:
    """trainer-fit: train the documented CNN on FER2013."""
    args = _parser().parse_args(argv)
    if not args.out.strip():
        raise UserError("--out is empty: give a run folder")
    cfg = _config_from_args(args)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    terminate_as_interrupt()
    resume_hint = f"continue with trainer-fit --out {cfg.out} --resume"
    try:
        fit(cfg, resume=args.resume)
    except KeyboardInterrupt:
        raise UserError(f"interrupted; checkpoints are intact: {resume_hint}", exit_code=130) from None
    except OSError as exc:
        after = resume_hint if RunFiles(Path(cfg.out)).state.is_file() else "run it again"
        raise UserError(
            f"stopped by a failed file operation: {os_error_text(exc, exc.filename or cfg.out)}; finished files "
            f"in {cfg.out} are intact: free some space or fix the cause, then {after}"
        ) from None
    return 0


cli = run_main(main, "trainer-fit")
