"""A run folder's files: their paths, atomic writes, and reading them back to resume a run.

A run folder holds ``config.json`` (the :class:`~trainer.config.FitConfig`),
``checkpoints/state.json`` (epoch, best so far, history), ``checkpoints/last.keras`` and, with
weight averaging, ``checkpoints/swa_sum.npz``; every file is written atomically, so a killed
run leaves whole files that :func:`read_config` and :func:`read_state` check before a resume.
Errors are :class:`RunError`, naming the file, the problem and the way out.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from runtime.cli_support import atomic_path, os_error_text
from runtime.errors import EmocamError
from trainer.config import FitConfig, config_problem

HISTORY_NUMBERS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "seconds")  # state.json history columns
HISTORY_COLUMNS = ("epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds")  # history.csv


class RunError(EmocamError):
    """A run folder that cannot be used: not a folder, not writable, nothing to resume, a damaged file."""


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


def write_json(path: Path, data: dict) -> None:
    """Write ``data`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2))


def write_history(path: Path, rows: list[dict]) -> None:
    """Write the per-epoch rows as ``history.csv`` (:data:`HISTORY_COLUMNS`), atomically."""
    with atomic_path(path) as tmp:
        lines = [",".join(HISTORY_COLUMNS)] + [",".join(str(r[k]) for k in HISTORY_COLUMNS) for r in rows]
        tmp.write_text("\n".join(lines) + "\n")


def add_to_weight_sum(path: Path, weights: list[np.ndarray], epoch: int) -> None:
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


def _damaged(run: Path, path: Path, why: str) -> RunError:
    """The one-line error for a run file that cannot be used, with the two ways out."""
    name = path.relative_to(run) if path.is_relative_to(run) else path
    return RunError(
        f"run folder {run}: {name} is damaged ({why}): start a new run in another folder, or restore the file"
    )


def read_json_object(path: Path, run: Path) -> dict:
    """A run file that must hold one JSON object (``config.json``, ``checkpoints/state.json``).

    Raises:
        RunError: It cannot be read, is not UTF-8 JSON, or holds something other than an object.
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
    planned = state.get("planned_epochs", state["epoch"])  # absent in runs from before --time-budget-min
    if not _is_int(planned) or planned < state["epoch"]:
        return f"planned_epochs is {planned!r}, not an integer of at least epoch {state['epoch']}"
    progress = state.get("schedule_progress", 0.0)  # only --time-budget-min runs keep it
    if not _is_number(progress) or not 0.0 <= progress <= 1.0:
        return f"schedule_progress is {progress!r}, not a number in [0, 1]"
    history = state.get("history")
    if not isinstance(history, list) or len(history) != state["epoch"]:
        return f"history is not a list of {state['epoch']} epochs"
    for row in history:
        if not isinstance(row, dict) or not all(_is_number(row.get(k)) for k in HISTORY_NUMBERS):
            return f"history row {str(row)[:80]} lacks a number for one of {', '.join(HISTORY_NUMBERS)}"
    return None


def new_state() -> dict:
    """The state of a run that has not trained yet."""
    return {"epoch": 0, "best_val_accuracy": -1.0, "best_epoch": 0, "history": []}


def read_state(files: RunFiles) -> dict:
    """The state of a run to resume (epoch, best so far, history).

    Raises:
        RunError: No checkpoint, or ``state.json`` is damaged.
    """
    if not files.state.is_file() or not files.last.is_file():
        raise RunError(f"no checkpoint to resume in {files.out / 'checkpoints'}: start a new run instead")
    state = read_json_object(files.state, files.out)
    problem = state_problem(state)
    if problem:
        raise _damaged(files.out, files.state, problem)
    return state


def read_config(out: Path) -> FitConfig:
    """The configuration of the run in ``out`` (its ``config.json``), to resume it.

    The run folder is the one given, even if it was moved since the run began.

    Raises:
        RunError: No ``config.json``, or it is damaged.
    """
    path = out / "config.json"
    if not path.is_file():
        raise RunError(f"no run in {out} to resume (no config.json): start a new run instead")
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
        RunError: ``out`` is empty, is a file, lies under a file, or cannot be written.
    """
    if not str(out).strip():
        raise RunError("the run folder is an empty path: give a run folder")
    if out.exists() and not out.is_dir():
        raise RunError(
            f"run folder {out} is a file, not a folder: choose another run folder (the file is left as it is)"
        )
    existing = next((p for p in (out, *out.parents) if p.exists()), Path("."))
    if not existing.is_dir():
        raise RunError(f"run folder {out} lies under {existing}, which is a file: choose another run folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".probe.", dir=existing)
    except OSError as exc:
        raise RunError(f"run folder {out}: {os_error_text(exc, existing)}: choose a writable folder") from None
    os.close(fd)
    os.unlink(probe)
