"""The five commands' entry points: standard library only, so that Ctrl-C is caught from the first moment.

Each command's own module imports OpenCV, numpy or TensorFlow (up to seconds): a Ctrl-C in that
time would otherwise end in a traceback (numpy even turns it into an ImportError). Here a Ctrl-C
during the import is noted and honoured once the import is done.
"""

from __future__ import annotations

import importlib
import signal
import sys
from collections.abc import Callable

EXIT_INTERRUPTED = 130  # as runtime.cli_support.EXIT_INTERRUPTED (not imported: that would defeat the point)


def _entry(module: str, prog: str) -> Callable[[], int]:
    def main() -> int:
        received: list[int] = []  # Ctrl-C during the import is noted, not raised inside a half-imported module
        previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
        try:
            cli = importlib.import_module(module).cli
        finally:
            signal.signal(signal.SIGINT, previous)
        if received:
            sys.stderr.write(f"{prog}: interrupted\n")
            return EXIT_INTERRUPTED
        return cli()

    main.__doc__ = f"``{prog}``: {module}.cli, imported with Ctrl-C caught."
    return main


runtime_live = _entry("runtime.live", "runtime-live")
trainer_fit = _entry("trainer.fit", "trainer-fit")
trainer_eval = _entry("trainer.evaluate", "trainer-eval")
export_onnx = _entry("export.onnx_export", "export-onnx")
benchmark = _entry("benchmarks.run", "benchmark")
