"""Training: the data pipeline, the optimizer, the per-epoch checkpoint, and :func:`fit`.

:func:`fit` trains (or resumes) the run a :class:`~trainer.config.FitConfig` describes and writes
its report; trainer-fit (:mod:`trainer.fit`) is its command line. TensorFlow and Keras are
imported inside the functions that use them: importing this module stays cheap.

Keras 3 runs on TensorFlow (the default), JAX or PyTorch (``KERAS_BACKEND``). On TensorFlow the
faces flow through a ``tf.data`` pipeline (:func:`make_dataset`); on the others, where TensorFlow
may not be installed (a GPU machine with only JAX, say), batches are augmented on the host
(:mod:`trainer.augment`). Either way the saved ``.keras`` files are the same and export-onnx reads
them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import sys
import time
from pathlib import Path

import numpy as np

from runtime.cli_support import first_line
from runtime.contract import ModelSpec
from runtime.errors import ModelError
from trainer.augment import HostAugment, face_batches, random_affine_layer, random_blur_layer
from trainer.config import (
    KERAS_POLICY,
    ConfigError,
    FitConfig,
    check_config,
    cpu_flags,
    precision_problem,
    split_seed,
)
from trainer.data import Split, load_split, train_val_split
from trainer.evaluate import evaluate_model, format_report, plot_history
from trainer.model import build_model, load_model, read_spec, save_model
from trainer.run_files import (
    RunError,
    RunFiles,
    add_to_weight_sum,
    check_run_folder,
    new_state,
    read_state,
    write_history,
    write_json,
)
from trainer.teach import TeacherError, read_teacher


def class_weight_map(y: np.ndarray, k: int, mode: str) -> dict[int, float] | None:
    """Loss weight per class: ``balanced`` is ``N / (k * count)``, ``sqrt`` its square root."""
    if mode == "none":
        return None
    counts = np.bincount(y, minlength=k).astype(float)
    w = len(y) / (k * np.maximum(counts, 1))
    if mode == "sqrt":
        w = np.sqrt(w)
    return {i: float(v) for i, v in enumerate(w)}


def keras_backend() -> str:
    """The Keras backend this process trains with: ``tensorflow``, ``jax`` or ``torch``."""
    import keras

    return keras.backend.backend()


def uses_tf_data() -> bool:
    """Whether faces flow through ``tf.data`` (the TensorFlow backend), else through :mod:`trainer.augment`."""
    return keras_backend() == "tensorflow"


def gpu_capabilities() -> list[tuple[int, int] | None]:
    """The CUDA compute capability (major, minor) of each GPU Keras's backend sees; None where it is not told."""
    backend = keras_backend()
    caps: list[tuple[int, int] | None] = []
    if backend == "jax":
        import jax

        for device in jax.devices():
            if device.platform == "gpu":
                major, _, minor = str(getattr(device, "compute_capability", "")).partition(".")
                caps.append((int(major), int(minor or 0)) if major.isdigit() else None)
        return caps
    if backend == "torch":
        import torch

        return [tuple(torch.cuda.get_device_capability(i)) for i in range(torch.cuda.device_count())]
    import tensorflow as tf

    for gpu in tf.config.list_physical_devices("GPU"):
        cc = tf.config.experimental.get_device_details(gpu).get("compute_capability")
        caps.append(tuple(cc) if cc else None)
    return caps


def machine_precision_problem(precision: str) -> str | None:
    """Why ``precision`` would not speed up training on this machine, or None (fp32 always runs).

    See :func:`trainer.config.precision_problem`; this reads the machine's CPU flags and GPUs.
    """
    if precision == "fp32":
        return None
    return precision_problem(precision, cpu_flags(), gpu_capabilities())


def backend_config_problem(cfg: FitConfig, backend: str) -> str | None:
    """What ``cfg`` asks that only the TensorFlow backend does (with the fix), or None."""
    if backend == "tensorflow":
        return None
    tf_only = {"mixup": cfg.mixup > 0, "cpu_replicas": cfg.cpu_replicas > 1, "tensorboard": cfg.tensorboard}
    for setting, used in tf_only.items():
        if used:
            return (
                f"{setting} needs Keras's TensorFlow backend (this is {backend}): leave it off, or unset KERAS_BACKEND"
            )
    return None


def make_strategy(cpu_replicas: int):
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


def make_dataset(
    x: np.ndarray,
    y: np.ndarray,
    k: int,
    cfg: FitConfig,
    training: bool,
    replicas: int = 1,
    class_weights: dict[int, float] | None = None,
    targets: np.ndarray | None = None,
):
    """A cached, shuffled (training), augmented (training), prefetched ``tf.data`` pipeline.

    The targets are the one-hot labels ``y``, or ``targets`` (``(N, k)`` float32, each row summing to
    1: a teacher's probabilities mixed with the labels) where given.

    With several replicas every batch is whole and divisible by the replica count (TF cannot
    split a ragged last batch across replicas), so up to a batch of faces is left out per epoch.

    With ``cfg.mixup`` each augmented training face is blended with the face at the mirrored
    position of its (shuffled) batch, pixels and one-hot labels alike, with a weight drawn from
    Beta(a, a) per face. ``class_weights`` become per-face loss weights, the label-weighted mean of
    the class weights, so a mixed face carries both of its classes' weights in proportion.
    """
    import tensorflow as tf

    # the pipeline is float32 whatever the precision: under a mixed policy Keras's augmentation
    # layers would compute in bfloat16 or float16 (pixels rounded, and mixup's float32 weights refused)
    ds = tf.data.Dataset.from_tensor_slices((x, tf.one_hot(y, k) if targets is None else targets)).cache()
    if training:
        ds = ds.shuffle(len(y), seed=cfg.seed, reshuffle_each_iteration=True)
    batch = cfg.batch_size
    if replicas > 1:
        batch = max(replicas, min(batch, len(y)) // replicas * replicas)
    ds = ds.batch(batch, drop_remainder=replicas > 1).map(
        lambda a, b: (tf.cast(a, tf.float32), b), num_parallel_calls=tf.data.AUTOTUNE
    )
    aug = make_augmenter(cfg) if training else None
    if aug is not None:
        ds = ds.map(
            lambda a, b: (tf.clip_by_value(aug(a, training=True), 0.0, 255.0), b), num_parallel_calls=tf.data.AUTOTUNE
        )
    if training and cfg.mixup > 0:
        ds = ds.map(lambda a, b: _mixup(a, b, cfg.mixup), num_parallel_calls=tf.data.AUTOTUNE)
    if training and class_weights:
        w = tf.constant([class_weights[i] for i in range(k)], tf.float32)
        ds = ds.map(lambda a, b: (a, b, tf.linalg.matvec(b, w)), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def make_augmenter(cfg: FitConfig):
    """The training augmentation as Keras layers (float32, 0-255 pixels in and out), or None when off.

    Random horizontal flip, shift, rotation and zoom (each only when its setting is above 0), blur
    with ``cfg.blur``, then random erasing with ``cfg.erase``; mapped over ``tf.data`` batches
    (:mod:`trainer.augment` is its host-side twin for the other backends).
    """
    import keras

    if not cfg.augment:
        return None
    f32 = "float32"  # under a mixed policy these layers would otherwise round pixels to 16 bits
    layers = [keras.layers.RandomFlip("horizontal", seed=cfg.seed, dtype=f32)]  # exact: no resampling
    if cfg.shift > 0 or cfg.rotate_deg > 0 or cfg.zoom > 0:  # one warp, not three resamplings (see trainer.augment)
        layers.append(random_affine_layer(cfg.shift, cfg.rotate_deg, cfg.zoom, seed=cfg.seed + 1))
    if cfg.blur > 0:
        layers.append(random_blur_layer(cfg.blur, seed=cfg.seed + 2))
    if cfg.erase > 0:  # blanks to random pixel values, as Zhong et al.'s random erasing
        # (p, p): a single float would draw each batch's chance from [0, p]
        erasing = keras.layers.RandomErasing((cfg.erase, cfg.erase), value_range=(0, 255), seed=cfg.seed + 4, dtype=f32)
        layers.append(erasing)
    return keras.Sequential(layers, name="augment")


def _mixup(x, y, alpha: float):
    """Blend each face and label of a batch with its mirror-position partner, weight ~ Beta(alpha, alpha)."""
    import tensorflow as tf

    n = tf.shape(x)[0]
    g1 = tf.random.gamma([n], alpha)
    g2 = tf.random.gamma([n], alpha)
    lam = g1 / (g1 + g2 + 1e-12)  # Beta(alpha, alpha) from two gammas
    lam_x, lam_y = lam[:, None, None, None], lam[:, None]
    return x * lam_x + tf.reverse(x, [0]) * (1 - lam_x), y * lam_y + tf.reverse(y, [0]) * (1 - lam_y)


def make_optimizer(cfg: FitConfig, steps_per_epoch: int):
    """Adam or SGD with Nesterov momentum, optional decoupled weight decay, and a learning rate with
    linear warm-up then cosine decay to zero (or a constant rate)."""
    import keras

    def optimizer(rate):
        decay = cfg.weight_decay or None
        if cfg.optimizer == "sgd":
            return keras.optimizers.SGD(rate, momentum=cfg.momentum, nesterov=True, weight_decay=decay)
        return keras.optimizers.Adam(rate, weight_decay=decay)

    if cfg.schedule == "constant":
        return optimizer(cfg.lr)
    if cfg.time_budget_min:  # the epochs are known only once two are timed: epoch_rate sets the rate
        return optimizer(epoch_rate(cfg, 0, cfg.epochs))
    warmup = int(cfg.warmup_epochs * steps_per_epoch)
    total = cfg.epochs * steps_per_epoch
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup else cfg.lr,
        decay_steps=max(1, total - warmup),
        alpha=0.0,
        warmup_target=cfg.lr if warmup else None,
        warmup_steps=warmup,
    )
    return optimizer(schedule)


def cosine_progress(cfg: FitConfig, epoch: int, planned_epochs: int, start: float | None = None,
                    at: float = 0.5) -> float:
    """How far along its cosine (0 at ``lr``, 1 at 0) a ``--time-budget-min`` run is, ``at`` of the
    way through epoch ``epoch`` (from 0) of a plan of ``planned_epochs``.

    ``start`` is the progress at the epoch's start, carried over from the epochs before, when the
    plan may have been another; the rest of the cosine is spread evenly over the epochs the plan
    has left. So a plan that shrinks or grows (the machine got slower or faster) bends the
    schedule from where it is, and the rate never jumps, up or down. Without ``start``, the
    progress of a plan that never changed: linear from the warm-up's end to ``planned_epochs``.
    """
    begin = max(float(epoch), cfg.warmup_epochs)  # the cosine starts when the warm-up ends
    if epoch + at <= begin:
        return 0.0 if start is None else start
    left = planned_epochs - begin
    if start is None:
        start = min(1.0, max(0.0, (begin - cfg.warmup_epochs) / max(planned_epochs - cfg.warmup_epochs, 1e-9)))
    if left <= 0:
        return 1.0
    return min(1.0, start + (1.0 - start) * (epoch + at - begin) / left)


def epoch_rate(cfg: FitConfig, epoch: int, planned_epochs: int, start: float | None = None) -> float:
    """The learning rate of epoch ``epoch`` (from 0) of a run planned for ``planned_epochs``, for
    ``--time-budget-min``: the cosine schedule of :func:`make_optimizer` taken at the epoch's middle.

    A budgeted run learns its length only after two epochs are timed, so its rate is set per epoch
    (a step schedule is fixed when the optimizer is built): linear warm-up over ``warmup_epochs``,
    then a cosine from ``lr`` to 0 at ``planned_epochs``, continued from ``start`` (the progress
    the epochs before reached, :func:`cosine_progress`) when the plan has changed. A constant
    schedule stays at ``lr``.
    """
    if cfg.schedule == "constant":
        return cfg.lr
    middle = epoch + 0.5
    if middle < cfg.warmup_epochs:
        return cfg.lr * middle / cfg.warmup_epochs
    progress = cosine_progress(cfg, epoch, planned_epochs, start)
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def budget_epochs(*, max_epochs: int, done: int, elapsed_s: float, epoch_s: float, budget_s: float) -> int:
    """How many epochs a run with a time budget trains in all, re-planned after each epoch.

    The epochs that fit are those done plus as many more as the time left holds at ``epoch_s``
    each, keeping one epoch's time for the final save and report; never more than ``max_epochs``,
    never fewer than ``done``. The plan may shrink (a slower machine must still end in time) or
    grow (a machine freed again) at any time: the rate continues from where it is
    (:func:`epoch_rate` with the progress reached), so a cosine near its end is never lifted.

    Args:
        max_epochs: ``--epochs``, the most the run may train.
        done: The epochs trained.
        elapsed_s: Seconds since the budget's clock started (the process's training call).
        epoch_s: Seconds an epoch takes now (recent epochs, compilation excluded).
        budget_s: The budget in seconds.
    """
    fits = done + max(0, math.floor((budget_s - elapsed_s - epoch_s) / epoch_s))
    return max(done, min(max_epochs, fits))


def _make_budget_callback(cfg: FitConfig, state: dict, clock_start: float):
    """A Keras callback for ``--time-budget-min``: sets each epoch's rate from the plan, times the
    epochs, re-plans (:func:`budget_epochs`) and stops the run at the planned epoch. It runs
    before the checkpoint callback, so ``state.json`` holds the plan the checkpoint follows and
    the cosine's progress (``schedule_progress``) that the next epoch continues from."""
    import keras

    timed: list[float] = []  # this process's epoch times: the first holds the compilation

    class TimeBudget(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self._t0 = time.perf_counter()
            self.model.optimizer.learning_rate = epoch_rate(cfg, epoch, state["planned_epochs"],
                                                            state.get("schedule_progress"))

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            now = time.perf_counter()
            timed.append(now - self._t0)
            state["schedule_progress"] = cosine_progress(cfg, epoch, state["planned_epochs"],
                                                         state.get("schedule_progress"), at=1.0)
            if len(timed) >= 2:
                recent = timed[1:][-3:]
                planned = budget_epochs(
                    max_epochs=cfg.epochs,
                    done=epoch + 1,
                    elapsed_s=now - clock_start,
                    epoch_s=sum(recent) / len(recent),
                    budget_s=cfg.time_budget_min * 60,
                )
                if planned != state["planned_epochs"]:
                    print(
                        f"time budget: {planned} epochs fit in {cfg.time_budget_min:g} min "
                        f"({sum(recent) / len(recent):.1f} s an epoch)",
                        file=sys.stderr,
                    )
                    state["planned_epochs"] = planned
            if epoch + 1 >= state["planned_epochs"]:
                self.model.stop_training = True

    return TimeBudget()


def for_use(model, spec: ModelSpec, cfg: FitConfig):
    """The model as saved for use (``best``, ``final``, ``swa``): float32 throughout.

    A mixed-precision model keeps float32 weights and computes in bfloat16 or float16; its copy
    with a float32 policy holds the same weights and computes in float32, so trainer-eval,
    export-onnx and ``--init-from`` read it like any other (tf2onnx cannot convert bfloat16
    layers). The checkpoint ``last.keras`` keeps the training precision, for ``--resume``.
    """
    if cfg.precision == "fp32":
        return model
    copy = build_model(spec, dtype="float32", arch=cfg.arch)
    copy.set_weights(model.get_weights())
    return copy


def _make_checkpoint_callback(files: RunFiles, spec: ModelSpec, state: dict, cfg: FitConfig):
    """A Keras callback that saves the run after every epoch (defined here: Keras is imported lazily)."""
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
                save_model(for_use(self.model, spec, cfg), files.best, spec, extra)
            save_model(self.model, files.last, spec, extra)
            if epoch + 1 > cfg.epochs - cfg.swa_epochs:
                add_to_weight_sum(files.swa_sum, self.model.get_weights(), epoch + 1)
            state["epoch"] = epoch + 1
            write_history(files.history, state["history"])
            write_json(files.state, state)  # written last: it names a checkpoint that exists

    return AtomicCheckpoint()


def _init_spec(cfg: FitConfig) -> ModelSpec:
    """The contract of ``cfg.init_from`` (a ``.keras`` model, or an ``.onnx`` file of ``cfg.arch``).

    Raises:
        ModelError: The file is not a trainer-fit or export-onnx model, or exports another architecture.
    """
    path = Path(cfg.init_from)
    if path.suffix.lower() != ".onnx":
        return read_spec(path)
    from trainer.from_onnx import read_onnx

    spec, arch, _, _ = read_onnx(path)
    if arch != cfg.arch:
        raise ModelError(f"model {path} to start from is a {arch} network, not {cfg.arch}: pass --arch {arch}, or "
                         f"start from a {cfg.arch} model")
    return spec


def _copy_weights(model, path: Path, faces: np.ndarray) -> None:
    """Start ``model`` (a Keras model) from the weights of the ``.keras`` model in ``path``, or of the
    export-onnx file there (:mod:`trainer.from_onnx`, which measures batch norms on ``faces``).

    Raises:
        ModelError: The model does not load, or its layers differ from ``model``'s.
    """
    try:
        if path.suffix.lower() == ".onnx":
            from trainer.from_onnx import keras_from_onnx

            source = keras_from_onnx(path, faces)[0]
        else:
            source = load_model(path)
        model.set_weights(source.get_weights())
    except ValueError as exc:
        raise ModelError(
            f"model {path} to start from has other layers than {model.name} ({first_line(exc, 120)}): "
            "give a model from trainer-fit"
        ) from None


def fit(cfg: FitConfig, resume: bool = False) -> dict:
    """Train (or resume) a run and write its report.

    Args:
        cfg: The run's configuration (for a resume, the one read back by
            :func:`trainer.run_files.read_config`).
        resume: Continue the run in ``cfg.out`` from its last checkpoint.

    Returns:
        The test metrics (the validation metrics when ``cfg.test_eval`` is off).

    Raises:
        ConfigError, RunError, DataError, ModelError: A bad setting (or a precision this machine
            cannot speed up), run folder, data or model.
    """
    files = RunFiles(Path(cfg.out))
    check_config(cfg)
    problem = machine_precision_problem(cfg.precision)
    if problem:
        raise ConfigError(f"{problem}: train in fp32 instead")
    backend_problem = backend_config_problem(cfg, keras_backend())
    if backend_problem:
        raise ConfigError(backend_problem)
    check_run_folder(files.out)
    if resume:
        state = read_state(files)
    else:
        if files.state.is_file():
            raise RunError(f"{files.out} already holds a run: resume it, or choose another run folder")
        state = new_state()
    init_spec = _init_spec(cfg) if cfg.init_from and not resume else None
    if cfg.time_budget_min:  # fewer than --epochs once two epochs are timed; a resume keeps the plan
        state.setdefault("planned_epochs", cfg.epochs)
    else:  # the plan is --epochs (which a resume may raise by hand in config.json)
        state["planned_epochs"] = cfg.epochs

    data = Path(cfg.data)
    t0 = time.perf_counter()  # also the time budget's clock
    train, val = train_val_split(data, cfg.val_fraction, split_seed(cfg), cfg.limit_per_class)
    test = load_split(data, "test", cfg.limit_per_class, split_seed(cfg)) if cfg.test_eval else None
    spec = ModelSpec(labels=train.labels)
    if init_spec is not None and init_spec != spec:
        raise ModelError(
            f"model {cfg.init_from} to start from has another model spec (labels or input): give a trainer-fit model"
        )
    n_test, skipped = ("unread", train.skipped) if test is None else (len(test), train.skipped + test.skipped)
    print(
        f"data: {len(train)} train / {len(val)} val / {n_test} test faces from {data} "
        f"({time.perf_counter() - t0:.1f} s; skipped {skipped} unreadable)",
        file=sys.stderr,
    )

    targets = _targets(cfg, train)  # a teacher made for other faces is refused before the run folder exists
    files.state.parent.mkdir(parents=True, exist_ok=True)
    if resume:
        files.remove_stale_temporaries()
    print(f"run folder: {files.out.resolve()}", file=sys.stderr)
    write_json(files.config, {**dataclasses.asdict(cfg), "labels": list(spec.labels)})

    import keras

    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(KERAS_POLICY[cfg.precision])
    try:
        return _train_and_report(cfg, resume, files, state, spec, train, val, test, t0, targets)
    finally:  # the policy is process-wide: leave it as it was for the caller's next model
        keras.mixed_precision.set_global_policy(previous)


def _targets(cfg: FitConfig, train: Split) -> np.ndarray | None:
    """The training targets with ``cfg.teacher``: ``teacher_share`` of its probabilities plus the rest
    of the one-hot label, one row per training face; None without a teacher (labels alone).

    Raises:
        ConfigError: The teacher file was made for other faces or labels, or is not one.
    """
    if not cfg.teacher:
        return None
    try:
        probs = read_teacher(Path(cfg.teacher), train.x, train.labels)
    except TeacherError as exc:
        raise ConfigError(str(exc)) from None
    onehot = np.eye(len(train.labels), dtype=np.float32)[train.y]
    agree = float(np.mean(probs.argmax(1) == train.y))
    print(f"teacher: {cfg.teacher}, {cfg.teacher_share:g} of each target (its top class is the label for "
          f"{agree:.1%} of the training faces)", file=sys.stderr)
    return (cfg.teacher_share * probs + (1 - cfg.teacher_share) * onehot).astype(np.float32)


def _train_and_report(
    cfg: FitConfig,
    resume: bool,
    files: RunFiles,
    state: dict,
    spec: ModelSpec,
    train: Split,
    val: Split,
    test: Split | None,
    clock_start: float,
    targets: np.ndarray | None = None,
) -> dict:
    """:func:`fit` once the data is read and Keras's dtype policy is set: train, save, report.

    ``clock_start`` is when :func:`fit` began (``time.perf_counter``): the time budget's start.
    ``targets`` are the training targets with a teacher (:func:`_targets`), else None (the labels)."""
    import keras

    on_tf = uses_tf_data()
    strategy = make_strategy(cfg.cpu_replicas) if on_tf else None
    scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
    replicas = strategy.num_replicas_in_sync if strategy is not None else 1
    keras.utils.set_random_seed(cfg.seed)
    k = spec.num_classes
    steps = int(np.ceil(len(train) / cfg.batch_size))
    with scope:
        if resume:
            model = load_model(files.last, compile=True)
            print(
                f"resuming at epoch {state['epoch'] + 1}/{state['planned_epochs']} from {files.last}", file=sys.stderr
            )
        else:
            model = build_model(spec, arch=cfg.arch)
            if cfg.init_from:
                _copy_weights(model, Path(cfg.init_from), train.x)
                print(f"starting from the weights of {cfg.init_from}", file=sys.stderr)
            model.compile(
                optimizer=make_optimizer(cfg, steps),
                loss=keras.losses.CategoricalCrossentropy(label_smoothing=cfg.label_smoothing),
                metrics=["accuracy"],
            )
    print(
        f"devices: {replicas} replica(s); GPUs: {len(gpu_capabilities())}; backend {keras_backend()}; "
        f"arch {cfg.arch}; precision {cfg.precision} (Keras policy {KERAS_POLICY[cfg.precision]})",
        file=sys.stderr,
    )
    callbacks = [_make_checkpoint_callback(files, spec, state, cfg)]
    if cfg.time_budget_min:
        callbacks.insert(0, _make_budget_callback(cfg, state, clock_start))
    if cfg.tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(files.out / "tensorboard")))
    weights = class_weight_map(train.y, k, cfg.class_weights)
    if state["epoch"] < state["planned_epochs"] and on_tf:
        model.fit(
            make_dataset(
                train.x, train.y, k, cfg, training=True, replicas=replicas, class_weights=weights, targets=targets
            ),
            validation_data=make_dataset(val.x, val.y, k, cfg, training=False, replicas=replicas),
            epochs=cfg.epochs,
            initial_epoch=state["epoch"],
            callbacks=callbacks,
            verbose=1 if sys.stderr.isatty() else 2,
        )
    elif state["epoch"] < state["planned_epochs"]:  # batches augmented on the host while the device trains
        eye = np.eye(k, dtype=np.float32)
        augment = HostAugment(cfg.shift, cfg.rotate_deg, cfg.zoom, cfg.erase, cfg.blur) if cfg.augment else None
        model.fit(
            face_batches(
                train.x,
                eye[train.y] if targets is None else targets,
                cfg.batch_size,
                cfg.seed,
                augment,
                sample_weight=None if weights is None else np.array(list(weights.values()), np.float32)[train.y],
                first_epoch=state["epoch"],
            ),
            validation_data=(val.x.astype(np.float32), eye[val.y]),
            epochs=cfg.epochs,
            initial_epoch=state["epoch"],
            callbacks=callbacks,
            verbose=1 if sys.stderr.isatty() else 2,
        )
    save_model(
        for_use(model, spec, cfg), files.final, spec, {"epoch": state["epoch"], "config": dataclasses.asdict(cfg)}
    )
    plot_history(files.history, files.curves)
    swa_val = None
    if cfg.swa_epochs:
        with np.load(files.swa_sum) as saved:
            count = int(saved["count"])
            model.set_weights([saved[f"w{i}"] / count for i in range(len(model.get_weights()))])
        swa = for_use(model, spec, cfg)
        save_model(swa, files.swa, spec, {"swa_of_epochs": count, "config": dataclasses.asdict(cfg)})
        swa_val = evaluate_model(swa, val)["accuracy"]
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
            "compute_precision": cfg.precision,  # fp32, bf16 or fp16 (not the per-class "precision")
            "mean_epoch_seconds": round(float(np.mean([r["seconds"] for r in state["history"]] or [0])), 1),
            "train_faces": len(train),
            "val_faces": len(val),
            "test_faces": len(test) if test is not None else None,
        }
    )
    write_json(files.out / "metrics.json", report)
    print(format_report(report))
    print(f"wrote {files.best}, {files.final}, {files.out / 'metrics.json'} and plots", file=sys.stderr)
    return report
