"""trainer-fit: train the documented CNN (or --arch vgg) on FER2013, resumably, and report on the test split.

A run folder holds everything: ``config.json``, ``checkpoints/last.keras`` (every epoch, with
optimizer state), ``best.keras`` (best validation accuracy), ``final.keras``, ``history.csv``,
``training_curves.png``, ``metrics.json`` and ``confusion_matrix.png`` (test split, best model),
``val/`` (the same report on the validation split) and, with ``--swa-epochs``, ``swa.keras``.
With ``--no-test-eval`` the test split is never read and ``metrics.json`` is the validation report.

This module is the command line; the settings are :class:`trainer.config.FitConfig` (whose
defaults are the flags' defaults), the training is :func:`trainer.train.fit`, and the run
folder's files are :mod:`trainer.run_files`.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path

from runtime.cli_support import ArgumentParser, UserError, os_error_text, run_main
from trainer.cli_common import terminate_as_interrupt
from trainer.config import BOUNDS, CHOICES, FitConfig
from trainer.run_files import RunFiles, read_config
from trainer.train import fit, machine_precision_problem


def _parser() -> ArgumentParser:
    d = FitConfig()
    b = BOUNDS
    p = ArgumentParser(prog="trainer-fit", description="Train an emotion CNN (documented, or --arch vgg) on FER2013.")
    p.add_argument(
        "--data", type=str, help="FER2013 folder with train/ and test/, or fer2013.csv (required unless --resume)"
    )
    p.add_argument("--out", default=d.out, help="run folder for checkpoints, logs and report")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument(
        "--arch",
        choices=CHOICES["arch"],
        default=d.arch,
        help="architecture: documented (the design's CNN) or vgg (the stronger VGG with batch norm; MODEL_CARD.md)",
    )
    p.add_argument("--epochs", type=b["epochs"], default=d.epochs, help="number of epochs")
    p.add_argument("--batch-size", type=b["batch_size"], default=d.batch_size, help="global batch size")
    p.add_argument("--lr", type=b["lr"], default=d.lr, help="peak learning rate")
    p.add_argument("--optimizer", choices=CHOICES["optimizer"], default=d.optimizer, help="adam, or sgd (Nesterov)")
    p.add_argument("--momentum", type=b["momentum"], default=d.momentum, help="sgd's Nesterov momentum")
    p.add_argument(
        "--weight-decay",
        type=b["weight_decay"],
        default=d.weight_decay,
        help="decoupled weight decay (each step shrinks weights by lr x this), e.g. 5e-4; 0 is off",
    )
    p.add_argument("--schedule", choices=CHOICES["schedule"], default=d.schedule, help="learning-rate schedule")
    p.add_argument("--warmup-epochs", type=b["warmup_epochs"], default=d.warmup_epochs, help="linear warm-up epochs")
    p.add_argument("--no-augment", dest="augment", action="store_false", help="disable augmentation")
    p.add_argument("--shift", type=b["shift"], default=d.shift, help="augmentation: max shift (fraction)")
    p.add_argument(
        "--rotate-deg", type=b["rotate_deg"], default=d.rotate_deg, help="augmentation: max rotation (degrees)"
    )
    p.add_argument("--zoom", type=b["zoom"], default=d.zoom, help="augmentation: max zoom (fraction)")
    p.add_argument(
        "--erase",
        type=b["erase"],
        default=d.erase,
        help="augmentation: chance per face of random erasing (a rectangle of 2-33 %% of the face); 0 is off",
    )
    p.add_argument(
        "--blur",
        type=b["blur"],
        default=d.blur,
        help="augmentation: chance per face of a Gaussian blur (sigma 0.4-1.2 px, as crops of small faces); 0 is off",
    )
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
    p.add_argument(
        "--split-seed",
        type=b["split_seed"],
        default=d.split_seed,
        help="seed of the validation split (default: --seed): give runs of other --seed one split to compare on",
    )
    p.add_argument(
        "--precision",
        choices=CHOICES["precision"],
        default=None,
        help=f"compute precision (default {d.precision}): bf16 needs bf16 units (a CPU with amx_bf16 or "
        "avx512_bf16, or a GPU of compute capability 8.0+), fp16 a GPU; weights and saved models stay float32",
    )
    p.add_argument("--mixed-precision", action="store_true", help="same as --precision fp16 (its older name)")
    p.add_argument(
        "--limit-per-class",
        type=b["limit_per_class"],
        default=d.limit_per_class,
        help="read at most N faces per class (quick runs)",
    )
    p.add_argument(
        "--init-from", default=d.init_from,
        help="start from the weights of this .keras model, or of an fp32 .onnx file from export-onnx (fine-tuning)"
    )
    p.add_argument(
        "--teacher",
        default=d.teacher,
        help="distil a teacher: its probabilities for the training faces (.npz from trainer-teach) join the labels",
    )
    p.add_argument(
        "--teacher-share",
        type=b["teacher_share"],
        default=d.teacher_share,
        help="with --teacher: each face's target is this share of the teacher's probabilities, the rest its label",
    )
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
        "--time-budget-min",
        type=b["time_budget_min"],
        default=d.time_budget_min,
        help="fit the run into M minutes of this process (data loading and report included): after two "
        "epochs it trains the epochs that fit, at most --epochs, and the cosine ends there; 0 is off",
    )
    p.add_argument(
        "--no-test-eval",
        dest="test_eval",
        action="store_false",
        help="report on the validation split only: use while choosing a recipe, so the test split stays unseen",
    )
    return p


def _config_from_args(args: argparse.Namespace) -> FitConfig:
    """The run's configuration: the flags, or ``config.json`` for ``--resume``.

    Raises:
        UserError: A flag is missing, empty, or disagrees with another.
    """
    if args.resume:
        return read_config(Path(args.out))
    if args.mixed_precision:
        if args.precision not in (None, "fp16"):
            raise UserError(f"--mixed-precision means --precision fp16, not {args.precision}: give one of them")
        args.precision = "fp16"
    args.precision = args.precision or FitConfig.precision
    if not args.data:
        raise UserError("--data is required: give the FER2013 folder (with train/ and test/) or fer2013.csv")
    if args.teacher is not None and not args.teacher.strip():
        raise UserError("--teacher is empty: give a .npz file from trainer-teach, or leave the flag out")
    if args.teacher is not None and not Path(args.teacher).is_file():
        raise UserError(f"--teacher {args.teacher} is not a file: make it with trainer-teach")
    if args.init_from is not None and not args.init_from.strip():
        raise UserError("--init-from is empty: give a .keras model from trainer-fit or an .onnx file from export-onnx, "
                        "or leave the flag out")
    if args.swa_epochs > args.epochs:
        raise UserError(f"--swa-epochs {args.swa_epochs} must be between 0 (off) and --epochs {args.epochs}")
    if args.swa_epochs and args.time_budget_min:
        raise UserError("--swa-epochs needs a fixed number of epochs: leave out --time-budget-min or --swa-epochs")
    if RunFiles(Path(args.out)).state.is_file():
        raise UserError(f"{args.out} already holds a run: pass --resume to continue it, or choose another --out")
    fields = {f.name for f in dataclasses.fields(FitConfig)}
    return FitConfig(**{k: v for k, v in vars(args).items() if k in fields})


def main(argv: Sequence[str] | None = None) -> int:
    """trainer-fit: train the documented CNN on FER2013."""
    args = _parser().parse_args(argv)
    if not args.out.strip():
        raise UserError("--out is empty: give a run folder")
    cfg = _config_from_args(args)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    problem = machine_precision_problem(cfg.precision)  # before any data is read
    if problem and args.resume:
        raise UserError(
            f"this run trains in {cfg.precision}, but {problem}: resume it on a machine that can, "
            "or start a new run with --precision fp32"
        )
    if problem:
        raise UserError(f"--precision {cfg.precision}: {problem}; use --precision fp32")
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
