"""Batched onnxruntime calls and their timing: the one home of both.

export-onnx verifies and times its files with these; benchmark times every model run with
:func:`time_calls` under a :class:`Budget`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from runtime.classifier import CPU, open_session

Predict = Callable[[np.ndarray], np.ndarray]  # one model call: a batch of faces in, probabilities out


def ort_session(path_or_bytes: str | bytes, threads: int = 0, providers: list[str] | None = None):
    """An onnxruntime session with the runtime's options (CPU unless ``providers`` says otherwise)."""
    return open_session(path_or_bytes, providers or [CPU], threads)


def session_predict(session) -> Predict:
    """A ``batch -> probabilities`` function of an onnxruntime session (its first input and output)."""
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def in_batches(predict: Predict, x: np.ndarray, batch: int = 256) -> np.ndarray:
    """``predict`` over ``x`` in batches of ``batch`` faces, concatenated."""
    return np.concatenate([np.asarray(predict(x[i : i + batch])) for i in range(0, len(x), batch)])


@dataclass(frozen=True)
class Budget:
    """How long to time one measurement.

    Attributes:
        warmup: Untimed calls first.
        min_iters: Timed calls at least (unless ``max_s`` runs out first).
        min_s: Seconds of timed calls at least.
        max_s: Stop after this many seconds once :data:`MIN_SAMPLES` calls are in.
    """

    warmup: int
    min_iters: int
    min_s: float
    max_s: float


MIN_SAMPLES = 3  # timed calls a measurement always gets, whatever its budget


def time_calls(fn: Callable[[], object], budget: Budget) -> np.ndarray:
    """Milliseconds per call of ``fn`` after a warm-up, within ``budget``."""
    warm_start = time.perf_counter()
    for _ in range(budget.warmup):
        fn()
        if time.perf_counter() - warm_start > budget.max_s / 4:  # slow calls: one or two warm them enough
            break
    times: list[float] = []
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        fn()
        t1 = time.perf_counter()
        times.append((t1 - t0) * 1e3)
        elapsed = t1 - start
        if len(times) >= budget.min_iters and elapsed >= budget.min_s:
            break
        if elapsed >= budget.max_s and len(times) >= MIN_SAMPLES:
            break
    return np.asarray(times)


def faces_per_second(predict: Predict, x: np.ndarray, batch: int = 64, seconds: float = 1.5) -> float:
    """Sustained throughput of ``predict`` at a fixed batch size, for about ``seconds`` after one warm-up call."""
    xb = np.ascontiguousarray(np.resize(x, (batch, *x.shape[1:])))
    ms = time_calls(lambda: predict(xb), Budget(warmup=1, min_iters=1, min_s=seconds, max_s=seconds))
    return batch * len(ms) * 1e3 / float(ms.sum())
