"""runtime-eval: the whole pipeline (detect, crop, classify) scored on labelled full images.

``runtime-eval LABELS.csv [--media DIR]`` runs every labelled image through the pipeline exactly
as ``runtime-live`` runs a photo with its defaults (the same construction, a fresh reset per image)
and scores it against the labels (:mod:`runtime.face_labels` describes the CSV format):

- detection recall: labelled faces matched by a detected box with IoU >= 0.4, one to one,
  greedily by IoU;
- false faces: detections matched to no labelled face, per image, in total, and on the
  face-free images alone;
- pipeline accuracy: the share of matched faces with an emotion label whose predicted emotion is
  right, with per-class recall and the confusion matrix (``confusion[i][j]``: true ``i``
  predicted ``j``). Accuracy on pre-cropped faces is ``trainer-eval``'s.

Video frames are named ``video.mp4#N`` in the labels and decoded in memory; each is scored as a
still (nothing carries over from the frame before). ``--make-synthetic OUT`` writes a synthetic
set instead (:mod:`runtime.synthetic`).

Prints a table on stdout, then one line of JSON summary; ``--json`` writes the whole result
(with every image) atomically. numpy, OpenCV and onnxruntime only.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from models import SHIPPED_NAMES
from runtime.cli_support import SEED, ArgumentParser, Number, UserError, check_output_path, path_arg, run_main
from runtime.errors import DataError
from runtime.face_labels import LabelledImage, read_labels

IOU_THRESHOLD = 0.4  # a detection and a labelled face match at this overlap or more
PROG = "runtime-eval"


def match_faces(truth: np.ndarray, found: np.ndarray, iou: float = IOU_THRESHOLD) -> list[tuple[int, int, float]]:
    """Match labelled boxes to detected boxes one to one, greedily by IoU (highest first).

    Args:
        truth: Labelled boxes ``(n, 4)``, ``x1, y1, x2, y2``.
        found: Detected boxes ``(m, 4)``.
        iou: Least IoU of a match.

    Returns:
        ``(truth index, found index, IoU)`` for each match, highest IoU first; ties keep the
        labels' order, then the detections'.
    """
    from runtime.tracker import iou_matrix

    truth = np.asarray(truth, dtype=np.float64).reshape(-1, 4)
    found = np.asarray(found, dtype=np.float64).reshape(-1, 4)
    if not len(truth) or not len(found):
        return []
    overlap = iou_matrix(truth, found)
    used_t, used_f, pairs = set(), set(), []
    for flat in np.argsort(-overlap, axis=None, kind="stable"):
        t, f = divmod(int(flat), len(found))
        value = float(overlap[t, f])
        if value < iou:
            break
        if t not in used_t and f not in used_f:
            used_t.add(t)
            used_f.add(f)
            pairs.append((t, f, value))
    return pairs


def score_image(image: LabelledImage, boxes: np.ndarray, predicted: Sequence[str],
                iou: float = IOU_THRESHOLD) -> dict:
    """One image's result: matches (with true and predicted emotion), missed faces, false faces.

    Args:
        image: The image's labels.
        boxes: The pipeline's boxes ``(m, 4)``.
        predicted: The pipeline's emotion for each box.
        iou: Least IoU of a match.
    """
    boxes = np.asarray(boxes).reshape(-1, 4)
    pairs = match_faces(image.boxes, boxes, iou)
    matched_t = {t for t, _, _ in pairs}
    matched_f = {f for _, f, _ in pairs}
    return {
        "file": image.name,
        "faces": len(image.boxes),
        "found": len(pairs),
        "false_faces": len(boxes) - len(pairs),
        "matches": [{"box": _ints(image.boxes[t]), "detected": _ints(boxes[f]), "iou": round(v, 3),
                     "emotion": image.emotions[t], "predicted": predicted[f]}
                    for t, f, v in sorted(pairs)],
        "missed": [{"box": _ints(image.boxes[t]), "emotion": image.emotions[t]}
                   for t in range(len(image.boxes)) if t not in matched_t],
        "false_boxes": [_ints(boxes[f]) for f in range(len(boxes)) if f not in matched_f],
    }


def _ints(box: np.ndarray) -> list[int]:
    return [int(round(float(v))) for v in box]


def _ratio(a: int, b: int) -> float | None:
    return round(a / b, 4) if b else None


def summarise(results: Sequence[dict], labels: Sequence[str]) -> dict:
    """Totals over the images' results: recall, false faces, accuracy, per-class table, confusion.

    Args:
        results: :func:`score_image` results.
        labels: The model's class names (the confusion matrix's order).
    """
    k = len(labels)
    index = {name: i for i, name in enumerate(labels)}
    confusion = np.zeros((k, k), np.int64)
    labelled = np.zeros(k, np.int64)  # faces with an emotion label, found or not
    for r in results:
        for m in r["matches"]:
            if m["emotion"] is not None:
                confusion[index[m["emotion"]], index[m["predicted"]]] += 1
        for face in [*r["matches"], *r["missed"]]:
            if face["emotion"] is not None:
                labelled[index[face["emotion"]]] += 1
    faces = sum(r["faces"] for r in results)
    found = sum(r["found"] for r in results)
    false = sum(r["false_faces"] for r in results)
    face_free = [r for r in results if r["faces"] == 0]
    matched = confusion.sum(axis=1)
    correct = np.diag(confusion)
    per_class = {name: {"faces": int(labelled[i]), "found": int(matched[i]),
                        "detection_recall": _ratio(int(matched[i]), int(labelled[i])),
                        "correct": int(correct[i]), "recall": _ratio(int(correct[i]), int(matched[i]))}
                 for i, name in enumerate(labels)}
    return {
        "images": len(results),
        "face_free_images": len(face_free),
        "faces": faces,
        "found": found,
        "recall": _ratio(found, faces),
        "false_faces": false,
        "false_faces_per_image": _ratio(false, len(results)),
        "false_faces_on_face_free": sum(r["false_faces"] for r in face_free),
        "face_free_images_with_false_faces": sum(1 for r in face_free if r["false_faces"]),
        "emotion_faces": int(labelled.sum()),
        "emotion_matched": int(confusion.sum()),
        "emotion_correct": int(correct.sum()),
        "accuracy": _ratio(int(correct.sum()), int(confusion.sum())),
        "accuracy_of_all_labelled": _ratio(int(correct.sum()), int(labelled.sum())),
        "per_class": per_class,
        "labels": list(labels),
        "confusion": confusion.tolist(),
    }


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def format_report(report: dict) -> str:
    """The report as a table a person reads."""
    lines = [
        f"{report['images']} images ({report['face_free_images']} face-free), IoU >= {report['iou_threshold']}",
        f"detection recall   {_fmt(report['recall'])}  ({report['found']} of {report['faces']} faces)",
        f"false faces        {report['false_faces']}  ({_fmt(report['false_faces_per_image'])} per image; "
        f"{report['false_faces_on_face_free']} on {report['face_free_images']} face-free images)",
        f"pipeline accuracy  {_fmt(report['accuracy'])}  ({report['emotion_correct']} of {report['emotion_matched']} "
        f"matched faces with an emotion; {_fmt(report['accuracy_of_all_labelled'])} of all "
        f"{report['emotion_faces']}, missed faces counted wrong)",
        "",
        f"{'class':<10}{'faces':>7}{'found':>7}{'det.rec':>9}{'correct':>9}{'recall':>8}",
    ]
    for name, row in report["per_class"].items():
        lines.append(f"{name:<10}{row['faces']:>7}{row['found']:>7}{_fmt(row['detection_recall']):>9}"
                     f"{row['correct']:>9}{_fmt(row['recall']):>8}")
    labels = report["labels"]
    lines += ["", "confusion of matched faces (rows: true, columns: predicted)",
              f"{'':<10}" + "".join(f"{name[:7]:>8}" for name in labels)]
    for name, row in zip(labels, report["confusion"], strict=True):
        lines.append(f"{name:<10}" + "".join(f"{v:>8}" for v in row))
    return "\n".join(lines)


def format_image(result: dict) -> str:
    """One image's line for ``--per-image``: found, false faces, and true -> predicted emotions."""
    words = [f"{m['emotion'] or '?'}->{m['predicted']}" for m in result["matches"]]
    words += [f"MISSED {m['emotion'] or '?'} {m['box']}" for m in result["missed"]]
    words += [f"FALSE {b}" for b in result["false_boxes"]]
    return f"{result['file']}: {result['found']}/{result['faces']} found, {result['false_faces']} false" + (
        ": " + ", ".join(words) if words else "")


def check_files(images: Sequence[LabelledImage], folder: Path) -> None:
    """Every file the labels name exists in ``folder``.

    Raises:
        DataError: Names the first missing file (and how many are missing) and the fix.
    """
    missing = [im for im in images if not (folder / im.file).is_file()]
    if missing:
        first = missing[0]
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise DataError(f"labels line {first.line}: {first.file} is not a file in {folder}{more}: give the folder "
                        "the labels' file names are relative to (--media), or fix the names")


def iter_images(images: Sequence[LabelledImage], folder: Path) -> Iterator[tuple[LabelledImage, np.ndarray]]:
    """Each labelled image with its pixels; a video's labelled frames come together, in frame order.

    Raises:
        DataError: A file does not decode, or a video has fewer frames than a label names.
    """
    from runtime.errors import ImageError
    from runtime.image import read_image

    frames: dict[str, list[LabelledImage]] = {}
    for image in images:
        if image.frame is not None:
            frames.setdefault(image.file, []).append(image)
    for image in images:
        if image.frame is None:
            try:
                yield image, read_image(folder / image.file)
            except ImageError as exc:
                raise DataError(f"labels line {image.line}: {image.file} {exc}: fix or drop its rows") from None
        elif image.file in frames:
            yield from _video_frames(folder / image.file, sorted(frames.pop(image.file), key=lambda im: im.frame))


def _video_frames(path: Path, wanted: list[LabelledImage]) -> Iterator[tuple[LabelledImage, np.ndarray]]:
    """The wanted frames of a video, decoded in order from its start."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise DataError(f"labels line {wanted[0].line}: {path.name} does not open as a video: fix or drop "
                            "its rows")
        index = 0
        for image in wanted:
            while True:
                ok, frame = cap.read()
                if not ok:
                    raise DataError(f"labels line {image.line}: {image.name}: {path.name} has only {index} frames "
                                    f"(numbered from 0): fix the frame number")
                index += 1
                if index - 1 == image.frame:
                    yield image, frame
                    break
    finally:
        cap.release()


def check_boxes(image: LabelledImage, pixels: np.ndarray) -> None:
    """Every labelled box lies inside the image (one pixel of slack).

    Raises:
        DataError: Names the line, the box and the image's size.
    """
    h, w = pixels.shape[:2]
    for box in image.boxes:
        if box[2] > w + 1 or box[3] > h + 1:
            raise DataError(f"labels line {image.line}: box {','.join(str(v) for v in _ints(box))} of {image.name} "
                            f"reaches outside its {w}x{h} pixels: fix the box")


def live_pipeline(model: Path | None = None, provider: str | None = None):  # -> Pipeline (imported late)
    """The pipeline ``runtime-live`` builds for its defaults (with this model and provider)."""
    from runtime import live

    argv = ["--no-window"]
    if model is not None:
        argv += ["--model", str(model)]
    if provider is not None:
        argv += ["--provider", provider]
    return live._build_pipeline(live._parser().parse_args(argv))


def photo_faces(pipe, pixels: np.ndarray):  # -> Faces
    """The faces ``runtime-live`` finds in one photo: a fresh pipeline state, then one frame."""
    pipe.reset()
    return pipe.process(pixels)


def evaluate(labels_file: Path, folder: Path, pipe, iou: float = IOU_THRESHOLD) -> dict:
    """Score ``pipe`` on the labelled images.

    Args:
        labels_file: The labels CSV (:mod:`runtime.face_labels`).
        folder: The folder the labels' file names are relative to.
        pipe: A :class:`runtime.pipeline.Pipeline` (see :func:`live_pipeline`).
        iou: Least IoU of a match.

    Returns:
        :func:`summarise`'s report, with ``iou_threshold`` and ``per_image`` (every image's result).

    Raises:
        DataError: Malformed labels, missing or undecodable files, boxes outside their image.
    """
    images = read_labels(labels_file, pipe.classifier.labels)
    check_files(images, folder)
    results = []
    for image, pixels in iter_images(images, folder):
        check_boxes(image, pixels)
        faces = photo_faces(pipe, pixels)
        results.append(score_image(image, faces.xyxy, faces.labels, iou))
    report = summarise(results, pipe.classifier.labels)
    report["iou_threshold"] = iou
    report["per_image"] = results
    return report


SUMMARY_KEYS = ("images", "face_free_images", "faces", "found", "recall", "false_faces", "false_faces_per_image",
                "false_faces_on_face_free", "emotion_matched", "accuracy", "accuracy_of_all_labelled")


def _parser() -> ArgumentParser:
    from runtime.backends import PROVIDERS

    p = ArgumentParser(prog=PROG, description="Score the whole pipeline (detect, crop, classify) on labelled full "
                       "images, or write a synthetic labelled set (--make-synthetic).",
                       epilog="Labels: CSV with the header file,x1,y1,x2,y2,emotion; one row per face (box in image "
                       "pixels, emotion empty when unclear); a face-free image has one row with the box and "
                       "emotion empty; video.mp4#N names frame N of a video.")
    p.add_argument("labels", type=path_arg, nargs="?", help="labels CSV (not with --make-synthetic)")
    p.add_argument("--media", type=path_arg, default=None,
                   help="folder the labels' file names are relative to (default: the labels file's folder)")
    p.add_argument("--model", type=path_arg, default=None,
                   help=f"ONNX model, or a shipped one: {SHIPPED_NAMES}")
    p.add_argument("--provider", choices=PROVIDERS, default=None, help="inference engine (default: runtime-live's)")
    p.add_argument("--iou", type=Number(float, 0.0, 1.0, lo_open=True), default=IOU_THRESHOLD,
                   help="least IoU of a detection and a labelled face that match")
    p.add_argument("--json", type=path_arg, default=None, help="write the whole result (every image) as JSON")
    p.add_argument("--per-image", action="store_true", help="also list every image's faces on stdout")
    g = p.add_argument_group("synthetic set")
    g.add_argument("--make-synthetic", type=path_arg, default=None, metavar="OUT",
                   help="write a synthetic set (images and OUT/labels.csv) into the new folder OUT, and exit")
    g.add_argument("--fer-test", type=path_arg, default=None,
                   help="FER2013 test folder (<class>/*.png|jpg; PublicTest faces, never the train split)")
    g.add_argument("--backgrounds", type=path_arg, nargs="+", default=None,
                   help="face-free videos or images to paste faces into (for example ../shared/media/no_face.mp4); "
                        "scikit-image's face-free sample images join them when it is installed")
    g.add_argument("--seed", type=SEED, default=0, help="the set is the same for the same seed")
    g.add_argument("--images", type=Number(int, 1, 100000), default=300, help="images to write")
    g.add_argument("--face-free", type=Number(float, 0.0, 1.0), default=0.2, help="share of images with no face")
    return p


def _make_synthetic(args) -> int:
    from runtime.synthetic import make_synthetic

    if args.labels is not None:
        raise UserError("--make-synthetic writes a set: give no labels file with it")
    if args.fer_test is None or args.backgrounds is None:
        raise UserError("--make-synthetic needs --fer-test DIR (FER2013 test faces) and --backgrounds FILE... "
                        "(face-free video or images, e.g. ../shared/media/no_face.mp4)")
    info = make_synthetic(args.make_synthetic, args.fer_test, args.backgrounds, seed=args.seed, images=args.images,
                          face_free=args.face_free)
    print(f"{PROG}: wrote {info['images']} images ({info['faces']} faces, {info['face_free_images']} face-free) and "
          f"{info['labels']}", file=sys.stderr)
    print(json.dumps(info), flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """runtime-eval: score the whole pipeline on labelled full images."""
    args = _parser().parse_args(argv)
    if args.make_synthetic is not None:
        return _make_synthetic(args)
    if args.labels is None:
        raise UserError("give the labels CSV (runtime-eval LABELS.csv --media DIR), or --make-synthetic OUT")
    if not args.labels.is_file():
        raise UserError(f"labels file {args.labels} does not exist: give the CSV of labelled faces")
    folder = args.media if args.media is not None else args.labels.parent
    if not folder.is_dir():
        raise UserError(f"--media {folder} is not a folder: give the folder the labels' file names are relative to")
    if args.json is not None:
        from runtime.files import same_file

        check_output_path(args.json, "--json")
        if same_file(args.json, args.labels):
            raise UserError("--json names the labels file: writing it would destroy the labels; give another path")
    pipe = live_pipeline(args.model, args.provider)
    try:
        print(f"{PROG}: {args.labels} -> model {pipe.classifier.path.name} on {pipe.classifier.provider}",
              file=sys.stderr)
        report = evaluate(args.labels, folder, pipe, args.iou)
    finally:
        pipe.close()
    report = {"labels_file": str(args.labels), "media": str(folder), "model": pipe.classifier.path.name,
              "provider": pipe.classifier.provider, **report}
    if args.per_image:
        print("\n".join(format_image(r) for r in report["per_image"]))
        print()
    print(format_report(report))
    if args.json is not None:
        _write_json(args.json, report)
        print(f"{PROG}: wrote {args.json}", file=sys.stderr)
    print(json.dumps({k: report[k] for k in ("model", *SUMMARY_KEYS)}), flush=True)
    return 0


def _write_json(path: Path, report: dict) -> None:
    from runtime.cli_support import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")


cli = run_main(main, PROG)

if __name__ == "__main__":  # python -m runtime.evaluate
    sys.exit(cli())
