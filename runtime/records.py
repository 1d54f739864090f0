"""The record of one frame, as every command writes it: one JSON line, and the CSV rows made from it.

``runtime-live --jsonl``, ``runtime-batch`` and the streams of ``runtime-live --source A --source B``
all build their records here, so that the same video gives the same lines whichever command
(or engine) processed it.
"""

from __future__ import annotations

from runtime.faces import Faces


def frame_record(frame, faces: Faces, stream: str | None = None) -> dict:
    """The JSON-ready record of a frame and its faces.

    Args:
        frame: The :class:`runtime.sources.Frame` (its index, time stamp and file name).
        faces: Its classified and tracked faces.
        stream: The stream it came from, when a run has several (``runtime-live --source A --source B``).

    Returns:
        ``{"frame", "timestamp_s", "faces"}``, then ``"file"`` for a frame of a folder's file, and
        ``"stream"`` when given.
    """
    record = {"frame": frame.index, "timestamp_s": round(frame.timestamp_s, 4), "faces": faces.to_records()}
    if frame.name:
        record["file"] = frame.name
    if stream is not None:
        record["stream"] = stream
    return record
