"""The targets (goals beside the figures, never asserted) and the result's schema with its check."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.model_bench import peak_of
from benchmarks.pipeline_bench import STAGE_KEYS
from benchmarks.timing import rounded

SCHEMA = "emocam-benchmark/2"  # bump when the meaning of a JSON field changes
TARGET_FRAME_HW = (360, 640)  # frame size the p99 target is stated for


@dataclass(frozen=True)
class Target:
    """A goal printed beside the figures; never asserted.

    Attributes:
        key: Its key under ``targets`` in the JSON.
        goal: The goal in words.
        threshold: The number to reach.
        higher_is_better: True if the value must be >= the threshold, False if <=.
        unit: ``x``, ``ms`` or ``fraction``.
    """

    key: str
    goal: str
    threshold: float
    higher_is_better: bool
    unit: str


TARGETS = (
    Target("pipeline_vs_original", "pipeline >= 20x the original loop (frames/s)", 20.0, True, "x"),
    Target("pipeline_p99_ms", "pipeline p99 <= 8 ms per 640x360 frame", 8.0, False, "ms"),
    Target("fp32_limit_fraction", "model fp32 >= 90% of the measured fp32 limit (CPU, best batch)", 0.90, True,
           "fraction"),
    Target("int8_vs_fp32", "INT8 >= 2x fp32 faces/s (CPU, best batch of each)", 2.0, True, "x"),
)


def main_clip(result: dict[str, Any]) -> dict[str, Any]:
    """The default clip's entry of a result (the first clip when the default was missing)."""
    clips = result["pipeline"]["clips"]
    return next((c for c in clips if c["default"]), clips[0])


def config_of(clip: dict[str, Any], name: str | None = None) -> dict[str, Any] | None:
    """A clip's pipeline configuration by name (default: the one its targets are judged on), None if absent."""
    name = name or clip["target_config"]
    return next((c for c in clip["configs"] if c["name"] == name and not c["skipped"]), None)


def _pipeline_values(result: dict[str, Any]) -> dict[str, tuple[float | None, str]]:
    """The pipeline targets' values: the target configuration against the original loop, and its p99."""
    values: dict[str, tuple[float | None, str]] = {}
    main = main_clip(result)
    config = config_of(main)
    why = f"{main['target_config']}: fastest with faces within 1 point of release's, agreement >= 99%"
    if config is None:
        values["pipeline_vs_original"] = (None, "no configuration qualifies")
    elif config["ratio"] is None:
        values["pipeline_vs_original"] = (None, f"original loop skipped: {main['original']['skipped']}")
    else:
        values["pipeline_vs_original"] = (config["ratio"], f"{why}; {Path(main['path']).name}, first "
                                                           f"{main['ratio_frames']} frames")
    sized = [c for c in result["pipeline"]["clips"] if (c["height"], c["width"]) == TARGET_FRAME_HW]
    clip = main if main in sized else (sized[0] if sized else None)
    config = config_of(clip) if clip else None
    if config is None:
        values["pipeline_p99_ms"] = (None, "no 640x360 clip" if clip is None else "no configuration qualifies")
    else:
        values["pipeline_p99_ms"] = (config["p99_ms"], f"{why}; {Path(clip['path']).name}, {config['frames']} frames")
    return values


def target_values(result: dict[str, Any]) -> dict[str, tuple[float | None, str]]:
    """Each target's measured value (None when not measured) and what it was measured on."""
    values = _pipeline_values(result)
    fp32s = [p for p in result["model"]["peak"] if p["variant"] == "fp32" and p["limit"] == "fp32"]
    if fp32s:
        best = max(fp32s, key=lambda p: p["limit_fraction"])
        values["fp32_limit_fraction"] = (best["limit_fraction"], f"{best['provider']} batch {best['batch']}")
    else:
        values["fp32_limit_fraction"] = (None, "no fp32 run on a CPU engine")
    fp32, int8 = peak_of(result, "fp32"), peak_of(result, "int8")
    if fp32 and int8:
        values["int8_vs_fp32"] = (rounded(int8["faces_per_s"] / fp32["faces_per_s"], 4),
                                  f"onnxruntime cpu: int8 batch {int8['batch']} vs fp32 batch {fp32['batch']}")
    else:
        values["int8_vs_fp32"] = (None, "no INT8 run on onnxruntime cpu (no <stem>.int8.onnx beside the model)")
    return values


def evaluate_targets(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The ``targets`` section: goal, threshold, value, met (None when not measured)."""
    values = target_values(result)
    out = {}
    for t in TARGETS:
        value, basis = values[t.key]
        met = None if value is None else (value >= t.threshold if t.higher_is_better else value <= t.threshold)
        out[t.key] = {"goal": t.goal, "threshold": t.threshold, "unit": t.unit, "value": value, "met": met,
                      "basis": basis}
    return out


#: Every field a result has, as a dotted path: ``name[]`` means "a non-empty list, each item".
#: A section whose ``skipped`` holds a reason needs none of its other fields. Kinds: ``pos`` a
#: finite number > 0, ``num`` a finite number >= 0, ``frac`` a number in [0, 1], ``str``,
#: ``bool``, ``list`` (non-empty), ``list0`` (may be empty); a trailing ``?`` also allows null.
REQUIRED_FIELDS: dict[str, str] = {
    "schema": "str",
    "quick": "bool",
    "date_utc": "str",
    "wall_s": "pos",
    "machine.cpu_model": "str",
    "machine.logical_cores": "pos",
    "machine.physical_cores": "pos",
    "machine.usable_cores": "pos",
    "machine.cpu_flags": "list0",
    "machine.platform": "str",
    "machine.load_avg_1m_start": "num",
    "machine.load_avg_1m_end": "num",
    "versions.python": "str",
    "versions.numpy": "str",
    "versions.blas": "str",
    "versions.opencv": "str",
    "versions.onnxruntime": "str",
    "versions.openvino": "str?",
    "versions.matplotlib": "str?",
    "versions.tensorflow": "str?",
    "versions.keras": "str?",
    "providers": "list",
    "gemm.n": "pos",
    "gemm.repeats": "pos",
    "gemm.best_s": "pos",
    "gemm.gflops": "pos",
    **{f"limits.rows[].{k}": "str" for k in ("precision", "engine", "unit", "shape", "kernel", "ran_as")},
    "limits.rows[].skipped": "str?",
    **{f"limits.rows[].{k}": "pos" for k in ("repeats", "best_s", "median_s", "g_per_s")},
    "limits.best.fp32": "pos",
    "limits.best.bf16": "pos?",
    "limits.best.int8": "pos?",
    "model.path": "str",
    "model.faces": "str",
    "model.flops_per_face": "pos",
    "model.threads": "num",
    "model.agreement_faces": "pos",
    "model.agreement_real": "bool",
    "model.variants[].name": "str",
    "model.variants[].path": "str",
    "model.variants[].skipped": "str?",
    "model.variants[].bytes": "pos",
    **{f"model.runs[].{k}": "str" for k in ("variant", "provider")},
    **{f"model.runs[].{k}": "pos" for k in ("batch", "iterations", "p50_ms", "p99_ms", "mean_ms", "faces_per_s",
                                            "faces_per_s_p50", "gflops")},
    "model.runs[].limit": "str?",
    "model.runs[].limit_fraction": "num?",
    "model.peak[].variant": "str",
    "model.peak[].provider": "str",
    "model.peak[].batch": "pos",
    "model.peak[].faces_per_s": "pos",
    "model.peak[].limit": "str?",
    "model.peak[].limit_fraction": "num?",
    "model.peak[].agreement": "frac",
    "model.peak[].disagreements": "num",
    "keras.skipped": "str?",
    "keras.weights": "str",
    "keras.device": "str",
    **{f"keras.{call}.{k}": "pos" for call in ("predict_one", "call_one")
       for k in ("iterations", "p50_ms", "p99_ms", "mean_ms", "faces_per_s")},
    "pipeline.clips[].path": "str",
    "pipeline.clips[].default": "bool",
    "pipeline.clips[].width": "pos",
    "pipeline.clips[].height": "pos",
    "pipeline.clips[].frames_decoded": "pos",
    **{f"pipeline.clips[].decode.{k}": "pos" for k in ("p50_ms", "p99_ms", "mean_ms", "fps")},
    **{f"pipeline.clips[].configs[].{k}": "str" for k in ("name", "what", "model", "provider")},
    "pipeline.clips[].configs[].skipped": "str?",
    **{f"pipeline.clips[].configs[].{k}": "pos" for k in ("frames", "fps", "fps_with_decode", "p50_ms", "p99_ms",
                                                          "mean_ms")},
    "pipeline.clips[].configs[].frames_with_face": "frac",
    "pipeline.clips[].configs[].model_agreement": "frac",
    "pipeline.clips[].configs[].detector.detect_every": "pos",
    "pipeline.clips[].configs[].detector.search_lag": "num",
    "pipeline.clips[].configs[].detector.full_detections": "num",
    **{f"pipeline.clips[].configs[].stage_ms.{k}": "num" for k in STAGE_KEYS},
    **{f"pipeline.clips[].configs[].stage_share.{k}": "frac" for k in STAGE_KEYS},
    "pipeline.clips[].configs[].ratio": "num?",
    "pipeline.clips[].target_config": "str?",
    "pipeline.clips[].original.skipped": "str?",
    **{f"pipeline.clips[].original.{k}": "pos" for k in ("frames", "fps", "p50_ms", "p99_ms", "mean_ms")},
    "pipeline.clips[].original.frames_with_face": "frac",
    "pipeline.clips[].ratio_frames": "num",
    **{f"targets.{t.key}.{k}": kind for t in TARGETS
       for k, kind in (("goal", "str"), ("threshold", "pos"), ("value", "num?"), ("met", "bool?"), ("basis", "str"))},
    "files.json": "str",
    "files.png": "str?",
}


def _kind_ok(value: Any, kind: str) -> bool:
    """Whether ``value`` is of a :data:`REQUIRED_FIELDS` kind."""
    if kind.endswith("?"):
        if value is None:
            return True
        kind = kind[:-1]
    number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    checks = {
        "pos": lambda: number and value > 0,
        "num": lambda: number and value >= 0,
        "frac": lambda: number and 0 <= value <= 1,
        "str": lambda: isinstance(value, str) and bool(value),
        "bool": lambda: isinstance(value, bool),
        "list": lambda: isinstance(value, list) and bool(value),
        "list0": lambda: isinstance(value, list),
    }
    return checks[kind]()


def _check(node: Any, parts: list[str], kind: str, where: str) -> list[str]:
    """Problems with the field at ``parts`` below ``node`` (see :data:`REQUIRED_FIELDS`)."""
    if isinstance(node, dict) and node.get("skipped") and parts != ["skipped"]:
        return []
    if not parts:
        return [] if _kind_ok(node, kind) else [f"{where}: {node!r} is not {kind}"]
    head, rest = parts[0], parts[1:]
    key = head.removesuffix("[]")
    if not isinstance(node, dict) or key not in node:
        return [f"{where}: missing {key}"]
    if head.endswith("[]"):
        items = node[key]
        if not isinstance(items, list) or not items:
            return [f"{where}: {key} is not a non-empty list"]
        return [p for item in items for p in _check(item, rest, kind, where)]
    return _check(node[key], rest, kind, where)


def validate(result: dict[str, Any]) -> list[str]:
    """Every way ``result`` breaks :data:`REQUIRED_FIELDS` (empty: it is complete)."""
    problems = []
    for path, kind in REQUIRED_FIELDS.items():
        problems += _check(result, path.split("."), kind, path)
    return problems

