"""Pieces shared by trainer-fit, trainer-eval, trainer-average, trainer-teach, export-onnx and benchmark.

Bounds of the flags two commands share, a path type that refuses empty strings, where the real
data beside the project lies (:func:`shared_path`), and the conversions of a failed write, a
failed inference or a termination signal into one line; the checks of a new --out and of models that
share one contract (trainer-average, trainer-teach). Standard library only (plus
:mod:`runtime.cli_support` and :mod:`runtime.errors`; trainer.model is imported where models load),
so every command can import it cheaply.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from pathlib import Path

from runtime.cli_support import EXIT_USAGE, Number, UserError, check_output_path, first_line, os_error_text
from runtime.errors import EmocamError, ModelError, OutputError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHARED = Path("..") / "shared"  # the real data (fer2013/, media/) lives beside the project, as the docs name it
#: The validation fraction of train: trainer-fit carves it, trainer-eval --split val rebuilds it.
VAL_FRACTION = Number(float, 0, 0.5, lo_open=True)
WRITE_FIX = "free some space or choose a writable folder, then run again"  # the fix of a failed write


def shared_path(*parts: str) -> Path:
    """``../shared/<parts>`` from the working directory if it exists there, else beside the project root.

    Example (run from the project root, it is ``../shared/fer2013/test``)::

        shared_path("fer2013", "test")
    """
    rel = SHARED.joinpath(*parts)
    return rel if rel.exists() else PROJECT_ROOT / rel


def check_new_output(out: Path, suffix: str) -> None:
    """Refuse an ``--out`` that does not end in ``suffix`` or that exists (an input included).

    Raises:
        UserError: The suffix is another, the file exists, or its folder cannot be written.
    """
    if out.suffix != suffix:
        raise UserError(f"--out {out} must end in {suffix}")
    if out.exists():
        raise UserError(f"--out {out} exists: give a new file name (an input or a result is never overwritten)")
    check_output_path(out, "--out")


def load_models_of_one_contract(paths: list[Path], fix: str) -> tuple[list, object]:
    """Load ``.keras`` models from trainer-fit that share one contract (labels and input).

    Args:
        paths: The model files, two or more.
        fix: What to do when one has another contract (the end of the error line).

    Returns:
        The Keras models, in order, and their :class:`runtime.contract.ModelSpec`.

    Raises:
        UserError: A model's contract differs from the first's.
        ModelError: A file is not a trainer-fit model, or disagrees with its own contract.
    """
    from trainer.model import check_against_spec, load_model, read_spec

    specs = [read_spec(m) for m in paths]
    for m, spec in zip(paths[1:], specs[1:], strict=True):
        if spec != specs[0]:
            raise UserError(f"{m} has another contract (labels or input) than {paths[0]}: {fix}")
    models = []
    for m, spec in zip(paths, specs, strict=True):
        model = load_model(m)
        check_against_spec(model, spec, m)
        models.append(model)
    return models, specs[0]


@contextlib.contextmanager
def write_errors(where: Path | str, fix: str = WRITE_FIX) -> Iterator[None]:
    """Turn an ``OSError`` raised while writing outputs into one line with its true cause.

    Args:
        where: The file or folder being written (named when the error names none).
        fix: What the user can do about it.

    Raises:
        OutputError: An ``OSError`` happened inside the block (exit code 2, as the commands
            have always ended on a failed write).
    """
    try:
        yield
    except OSError as exc:
        text = f"could not write {where}: {os_error_text(exc, exc.filename or where)}: {fix}"
        raise OutputError(text, EXIT_USAGE) from None


@contextlib.contextmanager
def inference_errors(
    what: str, fix: str = "give a model from trainer-fit or export-onnx", exit_code: int = EXIT_USAGE
) -> Iterator[None]:
    """Turn a failure of a model call (onnxruntime's or Keras's own exception types) into one line.

    Args:
        what: What was being done, e.g. ``"model x.onnx on 128 faces"``.
        fix: What the user can do about it.
        exit_code: The exit code of the error.

    Raises:
        ModelError: Any exception other than an :class:`~runtime.errors.EmocamError` happened
            inside the block (those pass through as they are).
    """
    try:
        yield
    except EmocamError:
        raise
    except MemoryError:
        raise ModelError(f"{what}: out of memory: use fewer faces", exit_code) from None
    except OSError as exc:
        raise ModelError(f"{what} failed: {os_error_text(exc)}: {WRITE_FIX}", exit_code) from None
    except Exception as exc:  # onnxruntime and Keras raise many types for a graph that fails to run
        raise ModelError(f"{what} failed ({first_line(exc)}): {fix}", exit_code) from None


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def terminate_as_interrupt() -> None:
    """Make SIGTERM (and SIGHUP) unwind like Ctrl-C, so that temporary files are removed.

    By default SIGTERM ends the process at once, leaving a half-written temporary output behind;
    as a ``KeyboardInterrupt`` it runs every ``finally`` (``atomic_path`` removes its temporary).
    Does nothing outside the main thread.
    """
    for name in ("SIGTERM", "SIGHUP"):
        if hasattr(signal, name) and signal.getsignal(getattr(signal, name)) is not signal.SIG_IGN:  # nohup: kept
            with contextlib.suppress(ValueError, OSError):
                signal.signal(getattr(signal, name), _raise_interrupt)
