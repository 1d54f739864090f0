"""The commands' entry points: standard library only, so that Ctrl-C is caught from the first moment.

Each command's own module imports OpenCV, numpy or TensorFlow (up to seconds): a Ctrl-C in that
time would otherwise end in a traceback (numpy even turns it into an ImportError). Here a Ctrl-C
during the import is noted and honoured once the import is done. A process started with SIGINT
ignored (``cmd &`` in a script: Ctrl-C at the terminal is meant for the foreground job) keeps
ignoring it, as Python itself does. A module of an optional extra that is not installed (keras on a
base install) is one line naming the extra.
"""

from __future__ import annotations

import sys

try:  # `import signal` builds its enums (milliseconds): a Ctrl-C then is an exit, not a traceback
    import importlib
    import signal
    from collections.abc import Callable
except KeyboardInterrupt:
    sys.stderr.write("interrupted\n")
    raise SystemExit(130) from None

EXIT_INTERRUPTED = 130  # as runtime.cli_support.EXIT_INTERRUPTED (not imported: that would defeat the point)
EXIT_USAGE = 2  # as runtime.errors.EXIT_USAGE: a missing extra is the user's to install


def _entry(module: str, prog: str) -> Callable[[], int]:
    def main() -> int:
        received: list[int] = []  # Ctrl-C during the import is noted, not raised inside a half-imported module
        try:
            ignored = signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # started in the background: left ignored
            previous = None if ignored else signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
        except KeyboardInterrupt:  # before the handler above was in place
            sys.stderr.write(f"{prog}: interrupted\n")
            return EXIT_INTERRUPTED
        try:
            cli = importlib.import_module(module).cli
        except ModuleNotFoundError as exc:  # an extra's module imported at the top (keras on a base install)
            from runtime.cli_support import missing_extra

            message = missing_extra(exc.name)
            if message is None:
                raise
            sys.stderr.write(f"{prog}: error: {message}\n")
            return EXIT_USAGE
        finally:
            if previous is not None:
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
trainer_average = _entry("trainer.average", "trainer-average")
trainer_teach = _entry("trainer.teach", "trainer-teach")
export_onnx = _entry("export.onnx_export", "export-onnx")
benchmark = _entry("benchmarks.run", "benchmark")
runtime_eval = _entry("runtime.evaluate", "runtime-eval")
runtime_batch = _entry("runtime.batch", "runtime-batch")
