"""The machine's measured limits: fp32, bf16 and int8 matrix throughput of this CPU, and the model's share of each.

numpy's fp32 GEMM (:func:`benchmarks.machine.gemm_rate`) is one fp32 figure, but not the CPU's
limit: CPUs with AVX-512 VNNI / AMX run bf16 and int8 matrix products several times faster.
Here each precision is measured through OpenVINO's CPU plugin on a network of matrix products:
:data:`LAYERS` MatMuls with constant ``N x N`` weights (each followed by a ReLU) on an ``M x N``
input, so that, as in a real network, activations stay in the low precision between layers and
the weights stay in cache. One square product instead spends most of its time converting its
input and writing its fp32 output: at n=2048 it reached half the bf16 and a third of the int8
rate of this stack, below what the model itself reaches.

- ``fp32``: compiled with ``INFERENCE_PRECISION_HINT`` f32;
- ``bf16``: compiled with the bf16 hint (AMX-BF16 / AVX512-BF16 where present);
- ``int8``: a FakeQuantize on both inputs of every product (activations u8, weights s8), which
  OpenVINO's low-precision transformations turn into int8 products (VNNI / AMX-INT8).

Each row records the kernel and the precision OpenVINO's executable graph says the product
really ran in; a row whose product did not run in the precision asked for (a CPU without
bf16 units silently computes bf16 in fp32) is skipped with that reason, so no limit is claimed
that was not reached. The limit of a precision is the best rate of its rows (fp32: numpy or
OpenVINO). Rates are GFLOP/s (GOP/s for int8; one multiply-add is two operations).

Without OpenVINO the bf16 and int8 rows are skipped with the pip command that installs it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from benchmarks.timing import rounded
from runtime.backends import OPENVINO_INSTALL

PRECISIONS = ("fp32", "bf16", "int8")
UNITS = {"fp32": "GFLOP/s", "bf16": "GFLOP/s", "int8": "GOP/s"}
#: What OpenVINO's executable graph may call the product's precision for each row.
RAN_AS = {"fp32": ("f32",), "bf16": ("bf16",), "int8": ("u8", "i8")}
HINTS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}  # int8: the FakeQuantize makes the product int8
MATRIX_LAYERS = ("FullyConnected", "MatMul")  # OpenVINO's names of a matrix product in the executable graph
OPENVINO_BF16 = "openvino-bf16"  # the benchmark's row of OpenVINO with the bf16 hint
M, N, LAYERS = 2048, 512, 32  # the stack measured: 34 GFLOP a call; the rate levels off around this size here
STACK_SHAPE = f"{LAYERS} x ({M}x{N} @ {N}x{N})"


def openvino_version() -> str | None:
    """The installed OpenVINO's version, or None when it does not import."""
    try:
        import openvino
    except ImportError:
        return None
    return str(openvino.__version__).split("-")[0]


def limit_of(variant: str, provider: str) -> str | None:
    """The precision limit a model run is measured against (None: no measured limit applies).

    fp32 files on onnxruntime's CPU provider or OpenVINO's f32 hint run in fp32; the fp32 file
    under OpenVINO's bf16 hint runs in bf16; INT8 files on either CPU engine run in int8. CUDA
    runs, and fp16 files (no fp16 limit is measured), have none.
    """
    if provider == OPENVINO_BF16:
        return "bf16"
    if provider not in ("cpu", "openvino"):
        return None
    return {"fp32": "fp32", "int8": "int8"}.get(variant)


def _stack_model(m: int, n: int, layers: int, int8: bool, seed: int) -> Any:
    """An OpenVINO model: ``layers`` x (MatMul with constant ``n x n`` weights, ReLU) on an ``m x n`` input.

    For int8 every product's inputs are FakeQuantized: activations to u8 in [0, 1], weights to s8.
    """
    import openvino as ov
    import openvino.opset13 as ops

    def fake_quantize(node: Any, low: float, high: float) -> Any:
        lo, hi = ops.constant(np.float32(low)), ops.constant(np.float32(high))
        return ops.fake_quantize(node, lo, hi, lo, hi, 256)

    rng = np.random.default_rng(seed)
    a = ops.parameter([m, n], ov.Type.f32, name="a")
    x = a
    scale = 1 / np.sqrt(n)  # keeps the activations' scale from layer to layer
    for _ in range(layers):
        w: Any = ops.constant((rng.standard_normal((n, n), dtype=np.float32) * scale).astype(np.float32))
        if int8:
            x, w = fake_quantize(x, 0.0, 1.0), fake_quantize(w, -4 * scale, 4 * scale * 127 / 128)
        x = ops.relu(ops.matmul(x, w, False, False))
    return ov.Model([x], [a], f"stack{layers}x{m}x{n}")


def _ran_as(compiled: Any) -> tuple[str, list[str]]:
    """The kernels and the precisions of the matrix products in a compiled model's executable graph."""
    kernels, precisions = [], []
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        if info["layerType"].astype(str) in MATRIX_LAYERS:
            kernels.append(info["primitiveType"].astype(str))
            precisions.append(info["runtimePrecision"].astype(str))
    return ", ".join(sorted(set(kernels))) or "none", sorted(set(precisions)) or ["none"]


def openvino_rate(precision: str, min_iters: int, seconds: float, seed: int = 0) -> dict[str, Any]:
    """One precision's matrix rate through OpenVINO on the CPU (the :data:`LAYERS` stack): best of the calls.

    Args:
        precision: ``fp32``, ``bf16`` or ``int8``.
        min_iters: Timed calls at least, after one warm-up.
        seconds: Keep calling for at least this long (the best call counts).
        seed: Seed of the random matrices.

    Returns:
        The row: precision, engine, kernel, what the product ran as, best and median seconds,
        the rate (``g_per_s``) and its unit; or, when the product did not run in ``precision``,
        the row with ``skipped`` saying so.
    """
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(_stack_model(M, N, LAYERS, precision == "int8", seed), "CPU",
                                  {"INFERENCE_PRECISION_HINT": HINTS[precision], "PERFORMANCE_HINT": "LATENCY"})
    kernel, ran = _ran_as(compiled)
    row: dict[str, Any] = {"precision": precision, "engine": "openvino", "shape": STACK_SHAPE, "kernel": kernel,
                           "ran_as": ", ".join(ran), "unit": UNITS[precision], "skipped": None}
    if not set(ran) <= set(RAN_AS[precision]):  # every product of the stack, or no such limit
        row["skipped"] = (f"OpenVINO ran the {precision} products as {row['ran_as']} ({kernel}): this CPU has no "
                          f"{precision} path OpenVINO uses, so no such limit")
        return row
    request = compiled.create_infer_request()
    feed = {0: np.random.default_rng(seed + 1).random((M, N), dtype=np.float32)}
    request.infer(feed)  # warm-up: threads, weight repacking
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_iters or time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        request.infer(feed)
        times.append(time.perf_counter() - t0)
    best = min(times)
    return {**row, "repeats": len(times), "best_s": rounded(best), "median_s": rounded(float(np.median(times))),
            "g_per_s": rounded(2 * M * N * N * LAYERS / best / 1e9)}


def measure_limits(gemm: dict[str, Any], min_iters: int, seconds: float, seed: int = 0) -> dict[str, Any]:
    """The machine's fp32, bf16 and int8 limits: numpy's GEMM and OpenVINO's products, the best of each.

    Args:
        gemm: numpy's fp32 GEMM (:func:`benchmarks.machine.gemm_rate`), the first fp32 row.
        min_iters: Timed calls of each OpenVINO product at least.
        seconds: Seconds of calls of each OpenVINO product at least.
        seed: Seed of the random matrices.

    Returns:
        ``rows`` (one per engine and precision, skipped ones with their reason), ``best``
        (precision -> rate, None where unmeasured) and ``units``.
    """
    n = gemm["n"]
    rows: list[dict[str, Any]] = [{"precision": "fp32", "engine": "numpy", "shape": f"{n}x{n} @ {n}x{n}",
                                   "kernel": "matmul (BLAS)",
                                   "ran_as": "f32", "unit": UNITS["fp32"], "skipped": None,
                                   "repeats": gemm["repeats"], "best_s": gemm["best_s"],
                                   "median_s": gemm["median_s"], "g_per_s": gemm["gflops"]}]
    if openvino_version() is None:
        rows += [{"precision": p, "engine": "openvino", "unit": UNITS[p],
                  "skipped": f"OpenVINO is not installed: {OPENVINO_INSTALL}"} for p in PRECISIONS]
    else:
        rows += [openvino_rate(p, min_iters, seconds, seed) for p in PRECISIONS]
    return {"rows": rows, "best": best_rates(rows), "units": dict(UNITS)}


def best_rates(rows: Sequence[dict[str, Any]]) -> dict[str, float | None]:
    """The best measured rate of each precision (None where every row was skipped)."""
    best: dict[str, float | None] = dict.fromkeys(PRECISIONS)
    for row in rows:
        if not row["skipped"]:
            p = row["precision"]
            best[p] = max(best[p] or 0.0, row["g_per_s"])
    return best


def attach_fractions(runs: Sequence[dict[str, Any]], best: dict[str, float | None]) -> None:
    """Add each model run's ``limit`` (precision) and ``limit_fraction`` (its GFLOP/s over that limit), in place."""
    for run in runs:
        limit = limit_of(run["variant"], run["provider"])
        rate = best.get(limit) if limit else None
        run["limit"] = limit if rate else None
        run["limit_fraction"] = rounded(run["gflops"] / rate, 4) if rate else None
