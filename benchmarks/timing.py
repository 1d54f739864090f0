"""Run modes (full and ``--quick``) with their timing budgets, and the helpers every section uses.

Timing itself (:class:`export.inference.Budget`, :func:`export.inference.time_calls`) lives in
:mod:`export.inference`, beside the export's own throughput measurement.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from export.inference import Budget
from trainer.cli_common import PROJECT_ROOT


@dataclass(frozen=True)
class Mode:
    """Sizes and budgets of a full or a ``--quick`` run.

    Attributes:
        quick: True for ``--quick``.
        batches: Batch sizes of the ONNX model runs.
        model: Budget of one (variant, provider, batch) measurement.
        keras: Budget of each one-face Keras measurement.
        gemm_repeats: Timed numpy matmuls; the best counts.
        gemm_n: Side of the square float32 matrices.
        frames: Frames of each clip the project pipeline runs on (0: all).
        original_frames: Frames of each clip the original loop runs on (0: all).
    """

    quick: bool
    batches: tuple[int, ...]
    model: Budget
    keras: Budget
    gemm_repeats: int
    gemm_n: int
    frames: int
    original_frames: int


FULL = Mode(
    quick=False,
    batches=(1, 8, 32, 128, 512),  # one face (a webcam) up to a crowd-sized batch
    model=Budget(warmup=3, min_iters=20, min_s=2.0, max_s=10.0),  # >= 20 calls and 2 s; 10 s caps batch 512
    keras=Budget(warmup=3, min_iters=50, min_s=2.0, max_s=15.0),  # predict() is ~10x slower than a call
    gemm_repeats=7,  # best of 7: the rate the CPU can reach, not its average
    gemm_n=2048,  # 17 GFLOP per matmul: long enough to time, big enough to be compute-bound
    frames=0,  # every frame of every clip
    original_frames=0,  # the original loop on the same, every frame
)
QUICK = Mode(
    quick=True,
    batches=(1, 32, 128),  # the ends and the middle of the curve
    model=Budget(warmup=1, min_iters=5, min_s=0.3, max_s=1.5),
    keras=Budget(warmup=2, min_iters=10, min_s=0.3, max_s=3.0),
    gemm_repeats=3,
    gemm_n=2048,
    frames=60,  # 2.5 s of the default clip
    original_frames=15,  # the original loop is ~5-50x slower per frame
)


def rounded(value: float, digits: int = 5) -> float:
    """``value`` rounded to ``digits`` significant digits, for the JSON."""
    return float(f"{float(value):.{digits}g}")


def summarize_ms(ms: Sequence[float] | np.ndarray) -> dict[str, float]:
    """Count, p50, p99 and mean of per-call milliseconds."""
    a = np.asarray(ms, dtype=np.float64)
    return {
        "iterations": len(a),
        "p50_ms": rounded(np.percentile(a, 50)),
        "p99_ms": rounded(np.percentile(a, 99)),
        "mean_ms": rounded(a.mean()),
    }


def log(message: str) -> None:
    """A progress line on stderr."""
    print(f"benchmark: {message}", file=sys.stderr, flush=True)


def shown_path(path: Path) -> str:
    """``path`` relative to the project root where it lies in or beside it, else absolute.

    ``models/emotion_cnn.onnx``, ``../shared/media/...``: committed results name no machine's folders.
    """
    absolute = Path(path).resolve()
    rel = os.path.relpath(absolute, PROJECT_ROOT)
    return str(absolute) if rel.startswith(os.path.join(os.pardir, os.pardir)) else rel

