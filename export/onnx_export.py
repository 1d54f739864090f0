"""export-onnx: Keras -> ONNX that is verified, self-describing, and optionally quantized.

1. Convert with tf2onnx (``from_function`` on a named ``TensorSpec``: ``from_keras`` is broken
   with Keras 3). The graph takes raw 0-255 pixels ``[N, 48, 48, 1]``; the rescale is inside it
   (:mod:`export.convert`).
2. Describe: the :class:`runtime.contract.ModelSpec` (``labels``, ``model_spec``) and provenance
   go into ``metadata_props``; ``onnx.checker.check_model(full_check=True)`` must pass.
3. Verify on real faces: Keras and onnxruntime must agree (fp32: max |diff| <= 1e-4, 100 % argmax)
   or the export fails with exit 1 and leaves no file (:mod:`export.verify`).
4. Optional ``--fp16`` and ``--int8`` variants, each measured against fp32 in the same run
   (:mod:`export.variants`).
5. Write everything or nothing: every file waits in a temporary file beside its destination
   until all have passed, then all are renamed into place (:class:`Staged`). A variant that
   misses its bound writes nothing (``--skip-failed-variants``: the rest). A model shipped in
   ``models/`` is never replaced unless forced.

:func:`export` takes an :class:`export.config.ExportConfig`, whose defaults are the flags'.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from export.config import (
    COUNTS,
    FP16_MIN_AGREEMENT,
    FP32_ATOL,
    HALF_WEIGHTS_MIN_AGREEMENT,
    INT8_MIN_AGREEMENT,
    OPSETS,
    TTA_VIEWS,
    ExportConfig,
)
from export.convert import convert_described, provenance
from export.inference import faces_per_second, in_batches, ort_session, session_predict
from export.variants import make_fp16, make_half_weights, make_int8
from export.verify import (
    RERUN_FIX,
    compare,
    export_faces,
    keras_reference,
    known_classes,
    make_verified,
    measure_variant,
)
from runtime.cli_support import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    SEED,
    ArgumentParser,
    UserError,
    check_output_path,
    path_arg,
    run_main,
)
from runtime.contract import ContractError, ModelSpec
from runtime.errors import EmocamError, ModelError, OutputError
from runtime.files import TempFile, display
from trainer.cli_common import inference_errors, terminate_as_interrupt, write_errors
from trainer.model import check_against_spec, load_model, read_spec


def shipped_files(output: Path, config: ExportConfig) -> list[Path]:
    """The files of the project's shipped models (in ``models/``) that exporting to ``output`` would replace."""
    from models import MODELS_DIR

    names = [output, output.with_name(output.stem + ".export.json")]
    names += [output.with_name(f"{output.stem}.{n}.onnx") for n in ("fp16", "int8") if getattr(config, n)]
    shipped = os.path.realpath(MODELS_DIR)
    return [p for p in names if p.exists() and os.path.dirname(os.path.realpath(p)) == shipped]


def _check_inputs(model_paths: Sequence[Path], output: Path, tta: str) -> None:
    """Refuse a missing model, an unknown ``tta`` or an output that cannot be written, before any work."""
    if tta not in TTA_VIEWS:
        raise EmocamError(f"test-time augmentation {tta} is unknown: choose one of {', '.join(TTA_VIEWS)}")
    for model_path in model_paths:
        if model_path.is_dir():
            raise ModelError(f"model {model_path} is a folder: give a .keras file from trainer-fit")
        if not model_path.is_file():
            raise ModelError(f"model {model_path} does not exist: give a .keras file from trainer-fit")
    if len(set(map(os.path.realpath, model_paths))) < len(model_paths):
        raise UserError("the same model is given twice: give each model of an ensemble once")
    check_output_path(output, "output")
    if output.suffix.lower() != ".onnx":
        raise OutputError(f"output {output} must end in .onnx", EXIT_USAGE)


def _contract(model_paths: Sequence[Path], labels: tuple[str, ...] | None) -> ModelSpec:
    """The contract of the export: ``labels`` if given, else the one every model holds (all must agree)."""
    if labels:
        return ModelSpec(labels=tuple(labels))
    try:
        specs = [read_spec(p) for p in model_paths]
    except ContractError as exc:
        raise ContractError(f"labels: {exc}") from None
    for path, spec in zip(model_paths[1:], specs[1:], strict=True):
        if spec != specs[0]:
            raise ModelError(f"{display(path)} has another contract (labels, input or preprocessing) than "
                             f"{display(model_paths[0])}: an ensemble averages models of one contract")
    return specs[0]


def export(config: ExportConfig) -> dict:
    """Export, describe and verify; returns the report.

    Every file is written to a temporary file beside its destination and renamed into place
    only once verified: the fp32 model against Keras, each variant against fp32. With
    ``config.members`` the graph averages the probabilities of all the models (an ensemble).

    Raises:
        ModelError: A bad model, labels or output; a conversion that fails; an fp32 graph that
            disagrees with Keras or a variant that disagrees with fp32 (exit code 1).
    """
    model_paths = [Path(config.model), *map(Path, config.members)]
    output, opset, tta = Path(config.output), config.opset, config.tta
    _check_inputs(model_paths, output, tta)
    replaced = [] if config.force else shipped_files(output, config)
    if replaced:
        raise OutputError(f"{display(replaced[0])} is a model shipped with emocam: export to a path of your own "
                          "(replace it only on purpose, with force)", EXIT_USAGE)
    spec = _contract(model_paths, config.labels)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    models = [load_model(p) for p in model_paths]
    for model, path in zip(models, model_paths, strict=True):
        check_against_spec(model, spec, path)

    t0 = time.perf_counter()
    proto = convert_described(models, spec, model_paths, opset, tta)
    faces = export_faces(config.verify_dir, config.verify_count, spec, config.seed, "verification")
    x, y = faces.x.astype(np.float32), known_classes(faces)
    keras_probs = keras_reference(models, x, tta)
    with inference_errors(f"running the exported model on {len(x)} faces", RERUN_FIX, EXIT_FAILED):
        fp32_predict = session_predict(ort_session(proto.SerializeToString()))
        fp32_probs = in_batches(fp32_predict, x)
    fp32 = compare(keras_probs, fp32_probs, y)
    report: dict = {
        "source": " + ".join(map(str, model_paths)),
        "verify_set": faces.source,
        "verify_faces": len(x),
        "opset": opset,
        "labels": list(spec.labels),
        "tta": tta,
    }
    ok = fp32["max_abs_diff"] <= FP32_ATOL and fp32["argmax_agreement"] == 1.0
    report["fp32"] = {
        "path": str(output),
        **fp32,
        "keras_accuracy": None if y is None else float((keras_probs.argmax(1) == y).mean()),
    }
    if not ok:
        raise ModelError(
            f"export does not verify: max |keras - onnx| {fp32['max_abs_diff']:.2e} (limit {FP32_ATOL:.0e}), "
            f"argmax agreement {fp32['argmax_agreement']:.4f} (need 1.0); nothing written",
            exit_code=EXIT_FAILED,
        )
    import onnx  # lazily, as everywhere in export: the command line stays fast

    staged = Staged()
    full = TempFile(output) if config.half_weights else None  # the full-precision file INT8 is made from
    if full is not None:
        full.close_fd()
    try:
        fp32_tmp = staged.add(output)
        with write_errors(output):
            onnx.save(proto, fp32_tmp if full is None else full.path)
        with inference_errors(f"timing the exported {output.name}", RERUN_FIX, EXIT_FAILED):
            fp32_fps = faces_per_second(fp32_predict, x)
        if full is not None:
            half = make_verified(output, fp32_tmp, lambda tmp: make_half_weights(proto, tmp),
                                 lambda path: measure_variant(path, x, y, fp32_probs, fp32, fp32_fps,
                                                              HALF_WEIGHTS_MIN_AGREEMENT),
                                 HALF_WEIGHTS_MIN_AGREEMENT)
            report["fp32"]["half_weights"] = {k: half[k] for k in ("bytes", "max_abs_diff", "argmax_agreement",
                                                                   "min_agreement", "faces_per_s") if k in half}
            if half["path"] is None:
                raise ModelError(f"with float16-stored weights the model agrees with fp32 on "
                                 f"{half['argmax_agreement']:.4f} of the faces (need {HALF_WEIGHTS_MIN_AGREEMENT}): "
                                 "nothing written; export without half weights", exit_code=EXIT_FAILED)
        report["fp32"]["bytes"] = fp32_tmp.stat().st_size
        report["fp32"]["faces_per_s"] = round(fp32_fps, 1)
        source = fp32_tmp if full is None else full.path

        def measure(bound: float) -> Callable[[Path], dict]:
            return lambda path: measure_variant(path, x, y, fp32_probs, fp32, fp32_fps, bound)

        if config.fp16:
            path = output.with_name(output.stem + ".fp16.onnx")
            report["fp16"] = make_verified(
                path, staged.add(path), lambda tmp: make_fp16(proto, tmp, provenance(model_paths, opset, "fp16", tta)),
                measure(FP16_MIN_AGREEMENT), FP16_MIN_AGREEMENT)
        if config.int8:
            calib = export_faces(config.calib_dir, config.calib_count, spec, config.seed + 1, "calibration")
            calib_x = calib.x.astype(np.float32)
            report["int8_calibration"] = {"faces": len(calib_x), "source": calib.source}
            path = output.with_name(output.stem + ".int8.onnx")
            report["int8"] = make_verified(
                path, staged.add(path),
                lambda tmp: make_int8(source, tmp, calib_x, provenance(model_paths, opset, "int8", tta)),
                measure(INT8_MIN_AGREEMENT), INT8_MIN_AGREEMENT)
        failed = [n for n in ("fp16", "int8") if n in report and report[n]["path"] is None]
        if failed and not config.skip_failed_variants:
            raise VariantRejected(failed, report)
        for name in failed:  # left out: an older file of that name belonged to the fp32 model now replaced
            staged.drop(output.with_name(f"{output.stem}.{name}.onnx"), remove_old=True)
        report["seconds"] = round(time.perf_counter() - t0, 1)
        report_path = output.with_name(output.stem + ".export.json")
        with write_errors(report_path):
            staged.add(report_path).write_text(json.dumps(report, indent=2))
        staged.commit()
    finally:
        staged.discard()  # after a failure or an interruption: nothing of this export is left
        if full is not None:
            full.discard()
    return report


class VariantRejected(ModelError):
    """A variant (fp16, int8) that does not agree with fp32 well enough: the export wrote nothing.

    Attributes:
        names: The variants that failed.
        report: The export's report so far (each variant's agreement and its bound).
    """

    exit_code = EXIT_FAILED

    def __init__(self, names: list[str], report: dict) -> None:
        self.names, self.report = names, report
        what = "; ".join(f"{n} agrees with fp32 on {report[n]['argmax_agreement']:.3f} of the faces "
                         f"(need {report[n]['min_agreement']})" for n in names)
        super().__init__(f"{what}: nothing was written. A briefly trained model gives nearly flat probabilities, "
                         "whose order rounding changes: train longer, or leave the variant out")


class Staged:
    """The files of one export, each in a temporary file beside its destination until all are verified;
    then :meth:`commit` renames them all into place. :meth:`discard` removes what is left."""

    def __init__(self) -> None:
        self._files: dict[Path, TempFile] = {}
        self._remove: list[Path] = []

    def add(self, dest: Path) -> Path:
        """A temporary path for ``dest`` (its writer opens it by name)."""
        tmp = TempFile(dest)
        tmp.close_fd()
        self._files[dest] = tmp
        return tmp.path

    def drop(self, dest: Path, remove_old: bool = False) -> None:
        """Leave ``dest`` out of the export (and, with ``remove_old``, remove an older file there on commit)."""
        tmp = self._files.pop(dest, None)
        if tmp is not None:
            tmp.discard()
        if remove_old:
            self._remove.append(dest)

    def commit(self) -> None:
        """Rename every file into place (the report last: it describes the others)."""
        for dest in self._remove:
            dest.unlink(missing_ok=True)
        while self._files:
            dest = next(iter(self._files))
            self._files.pop(dest).commit()

    def discard(self) -> None:
        while self._files:
            self._files.popitem()[1].discard()


def format_report(report: dict) -> str:
    """One line per variant: size, agreement, accuracy, faces/s."""
    lines = [f"verified on {report['verify_faces']} faces from {report['verify_set']} (opset {report['opset']})"]
    for name in ("fp32", "fp16", "int8"):
        r = report.get(name)
        if not r:
            continue
        acc = f", accuracy {r['accuracy']:.4f}" if "accuracy" in r else ""
        delta = f" ({r['accuracy_delta_points']:+.2f} pts)" if "accuracy_delta_points" in r else ""
        speed = f", {r['faces_per_s']:.0f} faces/s" + (
            f" ({r['speedup_vs_fp32']:.2f}x fp32)" if "speedup_vs_fp32" in r else ""
        )
        lines.append(
            f"{name}: {r['path']} {r['bytes'] / 1e6:.2f} MB, max|diff| {r['max_abs_diff']:.2e}, "
            f"argmax agreement {r['argmax_agreement']:.4f}{acc}{delta}{speed}"
        )
    return "\n".join(lines)


def _parser() -> ArgumentParser:
    d = ExportConfig(model=Path())  # only its defaults are read
    p = ArgumentParser(prog="export-onnx", description="Convert a trainer-fit .keras model to verified ONNX.")
    p.add_argument("model", type=path_arg, nargs="+",
                   help=".keras model from trainer-fit (e.g. runs/fer2013/best.keras); several: one graph that "
                        "averages their probabilities (an ensemble; one contract)")
    p.add_argument("--output", "-o", type=path_arg, default=d.output, help="ONNX file to write")
    p.add_argument(
        "--labels", default=None, help="comma-separated class names in output order (default: read from the model)"
    )
    p.add_argument("--opset", type=OPSETS, default=d.opset, help="ONNX opset")
    p.add_argument(
        "--verify-dir",
        type=path_arg,
        default=None,
        help=f"FER2013-layout folder of real faces for verification (default: {d.verify_dir}; "
             "random faces, with a warning, if that is missing)",
    )
    p.add_argument("--verify-count", type=COUNTS, default=d.verify_count, help="faces used for verification")
    p.add_argument("--fp16", action="store_true", help="also write <output>.fp16.onnx (float16 weights)")
    p.add_argument("--int8", action="store_true", help="also write <output>.int8.onnx (static INT8, QDQ)")
    p.add_argument("--half-weights", action="store_true",
                   help="store the fp32 file's weights as float16 (the arithmetic stays float32): about half the "
                        "file, checked against full precision")
    p.add_argument(
        "--calib-dir",
        type=path_arg,
        default=None,
        help=f"FER2013-layout folder of real training faces for INT8 calibration (default: {d.calib_dir}; "
             "random faces, with a warning, if that is missing)",
    )
    p.add_argument("--calib-count", type=COUNTS, default=d.calib_count, help="faces used for INT8 calibration")
    p.add_argument("--seed", type=SEED, default=d.seed, help="seed of the face samples")
    p.add_argument(
        "--tta",
        choices=list(TTA_VIEWS),
        default=d.tta,
        help="test-time augmentation inside the graph: flip = 2 passes per face, flip-zoom = 6",
    )
    p.add_argument("--tta-flip", dest="tta", action="store_const", const="flip", help="same as --tta flip")
    p.add_argument("--skip-failed-variants", action="store_true",
                   help="write the rest when an --fp16 or --int8 variant does not agree with fp32 (by default the "
                        "export then writes nothing)")
    p.add_argument("--force", action="store_true", help="replace a model shipped with emocam (in its models/ folder)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """export-onnx: convert a trained Keras model to a verified ONNX file."""
    args = _parser().parse_args(argv)
    labels = tuple(s.strip() for s in args.labels.split(",")) if args.labels else None
    if labels:
        try:
            ModelSpec(labels=labels)
        except ContractError as exc:
            raise UserError(f"--labels: {exc}") from None
    folders = {}  # a folder given by hand must exist; the defaults may be missing (random faces, with a warning)
    for flag, name in (("--verify-dir", "verify_dir"), ("--calib-dir", "calib_dir")):
        folder = getattr(args, name)
        if folder is not None and not folder.is_dir():
            raise UserError(f"{flag} {folder} is not a folder: give a FER2013-layout folder (one sub-folder per class)")
        if folder is not None:
            folders[name] = folder
    config = ExportConfig(
        model=args.model[0],
        members=tuple(args.model[1:]),
        half_weights=args.half_weights,
        output=args.output,
        labels=labels,
        opset=args.opset,
        verify_count=args.verify_count,
        fp16=args.fp16,
        int8=args.int8,
        calib_count=args.calib_count,
        seed=args.seed,
        tta=args.tta,
        force=args.force,
        skip_failed_variants=args.skip_failed_variants,
        **folders,
    )
    replaced = [] if args.force else shipped_files(args.output, config)
    if replaced:
        raise UserError(f"--output {display(args.output)} would replace {display(replaced[0].name)}, a model shipped "
                        "with emocam: give a path of your own (runs/fer2013/emotion_cnn.onnx), or --force")
    terminate_as_interrupt()
    try:
        report = export(config)
    except VariantRejected as exc:
        flags = " and ".join(f"--{n}" for n in exc.names)
        raise EmocamError(f"{exc}: train longer, or pass --skip-failed-variants (or drop {flags}) to write the "
                          "rest", EXIT_FAILED) from None
    except KeyboardInterrupt as exc:
        how = f" by {exc.args[0]}" if exc.args else ""
        raise UserError(f"interrupted{how}: nothing was written: run it again", exit_code=EXIT_INTERRUPTED) from None
    print(format_report(report), file=sys.stderr)
    print(json.dumps({k: report[k] for k in ("fp32", "fp16", "int8") if k in report}))
    return 0


cli = run_main(main, "export-onnx")
