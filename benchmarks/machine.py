"""The machine a benchmark ran on: CPU, cores, ISA flags, load, library versions, and its fp32 GEMM rate."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from benchmarks.limits import openvino_version
from benchmarks.timing import rounded

ISA_FLAGS = ("fma", "avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_int8")


def machine_info() -> dict[str, Any]:
    """CPU model, logical and physical cores, ISA flags of interest, platform, load average."""
    text = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        text = cpuinfo.read_text(errors="replace")
    fields: dict[str, list[str]] = {}
    cores: set[tuple[str, str]] = set()
    physical = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        fields.setdefault(key, []).append(value)
        if key == "physical id":
            physical = value
        elif key == "core id":
            cores.add((physical, value))
    flags = set(fields.get("flags", [""])[0].split())
    logical = os.cpu_count() or 1
    return {
        "cpu_model": (fields.get("model name") or [platform.processor() or platform.machine()])[0],
        "logical_cores": logical,
        "physical_cores": len(cores) or logical,
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else logical,
        "cpu_flags": [f for f in ISA_FLAGS if f in flags],
        "platform": platform.platform(),
        "load_avg_1m_start": load_avg(),
    }


def load_avg() -> float:
    """The 1-minute load average (0 where the OS has none): other work competing for the CPU."""
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else 0.0


def _blas() -> str:
    """numpy's BLAS library and version, as numpy reports it."""
    try:
        info = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return f"{info.get('name', '?')} {info.get('version', '')}".strip()
    except Exception:  # older numpy, or a build without the dict mode
        return "unknown"


def versions() -> dict[str, Any]:
    """Versions of Python and of the libraries measured (TensorFlow and Keras filled in later; OpenVINO None
    where it is not installed)."""
    import onnxruntime as ort  # lazily, as in the runtime: heavy, and only the measured runs need it

    try:
        import matplotlib

        mpl: str | None = matplotlib.__version__
    except ImportError:
        mpl = None
    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "blas": _blas(),
        "opencv": cv2.__version__,
        "opencv_threads": cv2.getNumThreads(),
        "onnxruntime": ort.__version__,
        "openvino": openvino_version(),
        "matplotlib": mpl,
        "tensorflow": None,
        "keras": None,
    }


def gemm_rate(n: int, repeats: int, seed: int = 0) -> dict[str, Any]:
    """The CPU's fp32 GEMM rate: an ``n x n`` float32 numpy matmul, best of ``repeats``.

    Args:
        n: Side of the square matrices.
        repeats: Timed multiplications after one warm-up.
        seed: Seed of the random matrices.
    """
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    out = np.empty((n, n), np.float32)
    np.matmul(a, b, out=out)  # warm-up: starts BLAS's threads
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.matmul(a, b, out=out)
        times.append(time.perf_counter() - t0)
    best = min(times)
    return {"n": n, "repeats": repeats, "best_s": rounded(best), "median_s": rounded(float(np.median(times))),
            "gflops": rounded(2 * n**3 / best / 1e9)}

