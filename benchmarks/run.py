"""benchmark: model throughput, pipeline frames/s against the original notebook loop, one run.

What one run measures, in this order:

1. The machine: CPU model, cores, ISA flags, load average (start and end), library versions.
2. The machine's measured limits (:mod:`benchmarks.limits`): fp32 matrix throughput (numpy's
   GEMM and OpenVINO's), bf16 and int8 (OpenVINO's products on the CPU's bf16/int8 units,
   checked in its executable graph); without OpenVINO the bf16/int8 rows say how to install it.
3. The shipped ONNX model (and its ``<stem>.fp16.onnx`` / ``<stem>.int8.onnx`` siblings) on
   every engine (``--provider``; ``auto``: onnxruntime CPU, OpenVINO when installed, with a
   second row under its bf16 hint for the fp32 file, CUDA when present) at several batch sizes:
   ms per batch p50/p99, faces/s, GFLOP/s, the fraction of the limit of its precision, and the
   argmax agreement of each (variant, engine) with fp32 on onnxruntime CPU on real faces.
4. The same network in Keras (random weights unless ``--keras``): ``model.predict`` on one face
   (what the original notebook did per face) and a direct ``model(x, training=False)`` call.
5. Frames/s on real video, decoded once into memory: the project's :class:`runtime.Pipeline`
   (headless, emoji on) in three configurations (:func:`benchmarks.pipeline_bench.pipeline_configs`:
   the last release's, runtime-live's defaults, INT8 on the best engine) and a faithful
   re-creation of the original notebook loop on the SAME frames, each with per-frame p50/p99,
   its ratio to the original loop, stage shares, the fraction of frames with a face found and
   its model's agreement with fp32.
6. The targets (goals, never asserted) beside the figures, each marked met or missed; the
   pipeline's are judged on the fastest configuration that finds faces within one point of the
   last release's and whose model agrees with fp32 on >= 99 % of the real faces.

Output: ``benchmark-<UTC stamp>[-quick].json`` and ``.png`` in ``--out-dir`` (default
``benchmarks/results`` under the working directory) plus copies named
``latest.json`` / ``latest.png``, all written atomically; a table on stderr; one JSON line on
stdout. :data:`REQUIRED_FIELDS` is the JSON's schema and :func:`validate` checks a result
against it. Keras parts need TensorFlow (the ``[train]`` extra); without it they are recorded
as skipped with the reason.

This module is the command line; each section of a run has its module: :mod:`benchmarks.timing`
(modes), :mod:`benchmarks.machine`, :mod:`benchmarks.limits`, :mod:`benchmarks.model_bench`,
:mod:`benchmarks.keras_bench`,
:mod:`benchmarks.pipeline_bench`, :mod:`benchmarks.targets` (targets, schema) and
:mod:`benchmarks.report` (table, chart, files).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import cv2

from benchmarks.keras_bench import RANDOM_WEIGHTS, bench_keras, import_keras, load_keras_model
from benchmarks.limits import measure_limits
from benchmarks.machine import gemm_rate, load_avg, machine_info, versions
from benchmarks.model_bench import (
    FACE_COUNT,
    MODEL_FIX,
    bench_models,
    bench_providers,
    model_faces,
    model_variants,
    peak_of,
    reference_classes,
)
from benchmarks.pipeline_bench import bench_clip, decode_clip, pipeline_configs
from benchmarks.report import format_table, write_outputs
from benchmarks.targets import REQUIRED_FIELDS as REQUIRED_FIELDS  # re-exported: the schema, for readers of run.py
from benchmarks.targets import SCHEMA, TARGETS, config_of, evaluate_targets, main_clip, validate
from benchmarks.timing import FULL, QUICK, Mode, log, rounded, shown_path
from runtime.backends import PROVIDERS
from runtime.classifier import EmotionClassifier, default_model_path
from runtime.cli_support import EXIT_FAILED, SEED, THREADS, ArgumentParser, Number, UserError, path_arg, run_main
from runtime.errors import ModelError
from trainer.cli_common import SHARED, inference_errors, shared_path, terminate_as_interrupt, write_errors

LIMIT_SECONDS = {True: 0.3, False: 1.0}  # --quick or not: seconds of calls of each OpenVINO matrix product
#: Results go under the working directory (in the project's checkout: the committed benchmarks/results),
#: never beside this file: after `pip install .` that is inside site-packages.
DEFAULT_OUT_DIR = Path("benchmarks") / "results"
DEFAULT_CLIP = ("media", "WolfgangLanger_Pexels.mp4")  # under ../shared: 472 frames, 640x360, one face
DEFAULT_FACES = ("fer2013", "test")  # under ../shared: real FER2013 faces for the model runs
FRAMES = Number(int, 1, 1_000_000)  # --frames / --original-frames: 1 to about 9 hours of 30 frames/s video


def _parser() -> ArgumentParser:
    faces, clip = SHARED.joinpath(*DEFAULT_FACES), SHARED.joinpath(*DEFAULT_CLIP)  # as the docs name them
    p = ArgumentParser(prog="benchmark", description="Model throughput and pipeline frames/s, "
                       "against the original notebook loop; writes JSON and a PNG chart.")
    p.add_argument("--quick", action="store_true", help="short run (well under 2 minutes): fewer batch sizes "
                   f"and iterations, the pipeline on {QUICK.frames} frames, the original loop on "
                   f"{QUICK.original_frames}")
    p.add_argument("--model", type=path_arg, default=None, help="ONNX model (default: the shipped model); "
                   "<stem>.fp16.onnx and <stem>.int8.onnx beside it are timed too")
    p.add_argument("--provider", choices=PROVIDERS, default="auto",
                   help="engine(s) to time: auto is every one installed (onnxruntime CPU, OpenVINO with its f32 and "
                        "bf16 hints, CUDA); the pipeline's default configuration runs on this one")
    p.add_argument("--threads", type=THREADS, default=0, help="inference threads (0: one per core)")
    p.add_argument("--faces", type=path_arg, default=None,
                   help=f"FER2013-layout folder of real faces for the model runs (default: {faces}; "
                        "random images if missing)")
    p.add_argument("--video", type=path_arg, action="append", default=[],
                   help=f"another clip to time (repeatable); {clip} is always timed when present")
    p.add_argument("--frames", type=FRAMES, default=None,
                   help="frames of each clip for the project pipeline (default: all; --quick: "
                        f"{QUICK.frames})")
    p.add_argument("--original-frames", type=FRAMES, default=None,
                   help=f"frames of each clip for the original loop (default: all; --quick: {QUICK.original_frames})")
    p.add_argument("--keras", type=path_arg, default=None,
                   help="trained Keras weights (.keras or .weights.h5) for the Keras parts (default: random "
                        "weights, timing only)")
    p.add_argument("--no-keras", action="store_true", help="skip the Keras parts and the original loop")
    p.add_argument("--out-dir", type=path_arg, default=DEFAULT_OUT_DIR,
                   help="folder for the JSON and PNG, made if missing (relative to the working directory)")
    p.add_argument("--seed", type=SEED, default=0, help="seed of the face sample and random matrices")
    return p


def _mode(args: Any) -> Mode:
    """The run mode with ``--frames`` / ``--original-frames`` applied."""
    base = QUICK if args.quick else FULL
    return replace(base, frames=args.frames or base.frames,
                   original_frames=args.original_frames or base.original_frames)


def _clip_paths(videos: Sequence[Path]) -> list[tuple[Path, bool]]:
    """The default clip (when present) and every ``--video``, each with whether it is the default.

    Raises:
        UserError: A ``--video`` is missing, or there is no clip at all.
    """
    for v in videos:
        if not v.is_file():
            raise UserError(f"--video {v} does not exist: give a video file")
        try:
            str(v).encode("utf-8")
        except UnicodeEncodeError:  # OpenCV's VideoCapture crashes (a segfault) on such a name
            raise UserError(f"--video {v}: its file name is not valid UTF-8, which OpenCV cannot open: "
                            "rename the file") from None
    default = shared_path(*DEFAULT_CLIP)
    clips = [(default, True)] if default.is_file() else []
    if not clips:
        shown = SHARED.joinpath(*DEFAULT_CLIP)
        if not videos:
            raise UserError(f"no video to time: {shown} is missing (keep ../shared beside the project) "
                            "and no --video was given")
        log(f"warning: {shown} is missing; timing the --video clips only")
    return clips + [(v, False) for v in videos if not (clips and v.resolve() == default.resolve())]


def _prepare_out_dir(out_dir: Path) -> Path:
    """Create ``out_dir`` if needed and check that it can be written."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"--out-dir {out_dir} cannot be created ({exc.strerror}): choose another folder") from None
    if not out_dir.is_dir() or not os.access(out_dir, os.W_OK):
        raise UserError(f"--out-dir {out_dir} is not a writable folder: choose another folder")
    return out_dir


def main(argv: Sequence[str] | None = None) -> int:
    """benchmark: model throughput and pipeline frames/s against the original notebook loop."""
    args = _parser().parse_args(argv)
    mode = _mode(args)
    if args.keras is not None and not args.keras.is_file():
        raise UserError(f"--keras {args.keras} does not exist: give a .keras file from trainer-fit")
    clip_paths = _clip_paths(args.video)
    out_dir = _prepare_out_dir(args.out_dir)
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    terminate_as_interrupt()

    t_start = time.perf_counter()
    now = dt.datetime.now(dt.timezone.utc)
    model_path = args.model if args.model is not None else default_model_path()
    fp32 = EmotionClassifier(model_path, provider="cpu", threads=args.threads)  # checks the file and contract
    result: dict[str, Any] = {"schema": SCHEMA, "quick": mode.quick, "date_utc": now.isoformat(timespec="seconds"),
                              "wall_s": 0.0, "machine": machine_info(), "versions": versions()}
    try:
        providers = bench_providers(args.provider)
        configs = pipeline_configs(model_path, dict(model_variants(model_path))["int8"], args.provider, args.threads)
    except ModelError as exc:  # --provider cuda or openvino, not installed: the message has the pip command
        raise UserError(f"--provider {args.provider}: {exc}") from None
    result["providers"] = providers

    log(f"GEMM {mode.gemm_n}^3 float32, best of {mode.gemm_repeats}; fp32, bf16 and int8 limits")
    result["gemm"] = gemm_rate(mode.gemm_n, mode.gemm_repeats, args.seed)
    result["limits"] = measure_limits(result["gemm"], mode.gemm_repeats, LIMIT_SECONDS[mode.quick], args.seed)
    faces_dir = args.faces if args.faces is not None else shared_path(*DEFAULT_FACES)
    faces = model_faces(faces_dir, FACE_COUNT, fp32.spec.input_shape, args.seed)
    reference = reference_classes(model_path, faces, args.threads)
    result["model"] = {"faces": faces.source, **bench_models(model_path, providers, faces, mode, args.threads,
                                                             result["limits"], reference)}

    limit = 0 if not (mode.frames and mode.original_frames) else max(mode.frames, mode.original_frames)
    clips = [decode_clip(path, limit, default) for path, default in clip_paths]

    env = import_keras(args.no_keras)
    result["versions"].update(env.versions)
    keras_model = None
    weights = RANDOM_WEIGHTS if args.keras is None else shown_path(args.keras)
    result["keras"] = {"skipped": env.skipped, "weights": weights, "device": env.device}
    if env.keras is not None:
        keras_model, weights = load_keras_model(args.keras)
        with inference_errors(f"timing the Keras model {weights}", "give a .keras model from trainer-fit"):
            result["keras"] = bench_keras(keras_model, faces.x[0], mode.keras, weights, env.device)
    else:
        log(f"keras parts skipped: {env.skipped}")
    with inference_errors("timing the pipeline on video", MODEL_FIX):
        result["pipeline"] = {"clips": [bench_clip(c, mode, configs, faces.agreement_set, reference, keras_model,
                                                   env.skipped) for c in clips]}

    result["machine"]["load_avg_1m_end"] = load_avg()
    result["targets"] = evaluate_targets(result)
    result["wall_s"] = rounded(time.perf_counter() - t_start, 4)
    base = f"benchmark-{now.strftime('%Y%m%dT%H%M%SZ')}{'-quick' if mode.quick else ''}"
    result["files"] = {"json": f"{base}.json", "png": f"{base}.png"}
    with write_errors(out_dir):
        json_path, png_path = write_outputs(result, out_dir, base)

    print(format_table(result), file=sys.stderr)
    default_clip = main_clip(result)
    target = config_of(default_clip) or {}
    print(json.dumps({
        "json": str(json_path), "png": str(png_path) if png_path else None, "quick": mode.quick,
        "fp32_faces_per_s": (peak_of(result, "fp32") or {}).get("faces_per_s"),
        "limits": result["limits"]["best"], "pipeline_config": default_clip["target_config"],
        "pipeline_fps": target.get("fps"), "pipeline_p99_ms": target.get("p99_ms"),
        "original_fps": default_clip["original"].get("fps"), "ratio": target.get("ratio"),
        "targets_met": sum(bool(t["met"]) for t in result["targets"].values()), "targets": len(TARGETS),
    }), flush=True)
    problems = validate(result)
    if problems:
        log("error: the result breaks its own schema (a bug in the benchmarks package): " + "; ".join(problems[:5]))
        return EXIT_FAILED
    return 0


cli = run_main(main, "benchmark")
