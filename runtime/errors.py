"""The project's one error contract.

Library code (the runtime's classes, the trainer's readers, the exporter's steps) raises a
subclass of :class:`EmocamError`, itself a ``ValueError``, so that a Python caller can catch it.
Its message names the problem and the fix in plain words, never a command-line flag. Only the
command-line layer (:mod:`runtime.cli_support`) words errors with flag names
(:class:`runtime.cli_support.UserError`), and turns any :class:`EmocamError` into one line on
stderr and the exit code the error carries.

Standard library only, so every package can import it.
"""

from __future__ import annotations

EXIT_USAGE = 2  # bad arguments or bad input: the user can fix it
EXIT_FAILED = 1  # the job ran and failed (a write that failed, an export that did not verify)


class EmocamError(ValueError):
    """Something the user can fix or must know; the message names the problem and the fix.

    Attributes:
        exit_code: The exit code a command ends with when this error stops it.
    """

    exit_code = EXIT_USAGE

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class ModelError(EmocamError):
    """A model file that is missing, does not load, breaks the model contract, or fails to run."""


class SourceError(EmocamError):
    """A frame source (camera, stream, video, image, folder) that cannot be opened or read."""


class ImageError(EmocamError):
    """An image file that cannot be used (unreadable, empty, truncated, not an image)."""


class OutputError(EmocamError):
    """An output that could not be written; the message names the file and the real cause."""

    exit_code = EXIT_FAILED


class DataError(EmocamError):
    """Training or evaluation data that cannot be used (missing, malformed, not UTF-8)."""
