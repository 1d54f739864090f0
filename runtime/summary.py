"""What runtime-live says when a run ends: the one-line JSON summary on stdout, and for one photo a
line a person reads (its faces and their emotions, left to right)."""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np


class RunStats:
    """What the frame loop counts, for the summary."""

    def __init__(self) -> None:
        self.frame_ms: list[float] = []
        self.faces = 0
        self.frames_with_faces = 0
        self.stopped_by = "end of source"
        self.t_start = time.perf_counter()
        self.last_record: dict | None = None
        self.photos_without_faces: list[str] = []  # names of the photos in which no face was found


def photo_line(name: str, faces: list[dict]) -> str:
    """One photo's faces in words: ``photo.jpg: 2 faces, left to right: happy 91% [x1,y1,x2,y2], ...``."""
    if not faces:
        return f"{name}: no face found"
    ordered = sorted(faces, key=lambda f: f["box_xyxy"][0])
    words = []
    for face in ordered:
        conf = face.get("confidence")
        what = f"{face.get('label')} {conf:.0%}" if face.get("label") and conf is not None else "unclassified"
        words.append(f"{what} [{','.join(str(int(v)) for v in face['box_xyxy'])}]")
    if len(words) == 1:
        return f"{name}: 1 face: {words[0]}"
    return f"{name}: {len(words)} faces, left to right: " + ", ".join(words)


def summary(args: argparse.Namespace, source, pipe, run: RunStats, written: list, one_photo: bool = False) -> dict:
    """The summary's fields: frames, faces, timing, provider, source, why it stopped, the outputs (and for
    one photo, the labels of its faces, left to right; for photos, ``photos_without_faces``: the names
    of those in which no face was found)."""
    wall = time.perf_counter() - run.t_start
    ms = np.asarray(run.frame_ms or [0.0])
    out = {
        "frames": len(run.frame_ms),
        "faces": run.faces,
        "frames_with_faces": run.frames_with_faces,
        "wall_s": round(wall, 3),
        "fps": round(len(run.frame_ms) / wall, 2) if wall > 0 else 0.0,
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "provider": pipe.classifier.provider,
        "source": source.description,
        "dropped": source.dropped,
        "stopped_by": run.stopped_by,
        "output": str(args.output) if args.output else None,
        "jsonl": str(args.jsonl) if args.jsonl else None,
    }
    for flag in ("csv", "timeline", "output_dir"):
        if getattr(args, flag, None) is not None:
            out[flag] = str(getattr(args, flag))
    if args.output_dir is not None:
        out["files_written"] = sum(1 for p in written if p.parent == args.output_dir)
    if one_photo or run.photos_without_faces:
        out["photos_without_faces"] = list(run.photos_without_faces)  # [] for a photo with faces
    if one_photo and run.last_record is not None:
        out["labels"] = [f.get("label") for f in sorted(run.last_record["faces"], key=lambda f: f["box_xyxy"][0])]
    return out


def print_summary(line: str, wait_s: float = 5.0) -> None:
    """Print the summary line; to a pipe whose reader has stopped reading, give up after ``wait_s``
    (the outputs are already finalised: a stalled reader must not hold the process forever)."""
    import select
    import stat

    sys.stdout.flush()
    try:
        fd = sys.stdout.fileno()
        piped = stat.S_ISFIFO(os.fstat(fd).st_mode) or stat.S_ISSOCK(os.fstat(fd).st_mode)
    except (OSError, ValueError, AttributeError):  # no real descriptor (a test's capture): print as usual
        piped = False
    if piped and not select.select([], [fd], [], wait_s)[1]:
        print("runtime-live: the summary was not printed: the reader of stdout is not reading", file=sys.stderr)
        return
    print(line, flush=True)
