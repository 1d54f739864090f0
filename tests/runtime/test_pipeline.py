"""Pipeline: between whole-frame searches, faces are re-found near their boxes, and none is lost."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from runtime.pipeline import Pipeline


@pytest.mark.parametrize("detect_every", [pytest.param(1, marks=pytest.mark.slow), 5])
def test_tracked_detection_keeps_the_face(video_frames: tuple, detect_every: int) -> None:
    pipe = Pipeline(detect_every=detect_every, provider="cpu")
    frames = with_face = 0
    ids = set()
    for frame in video_frames:
        faces = pipe.process(frame)
        frames += 1
        with_face += len(faces) > 0
        ids.update(faces.track_id.tolist())
    assert frames == 472
    assert with_face >= 0.95 * frames  # speed is never bought by losing faces
    if detect_every == 1:
        assert pipe.full_detections == frames
    else:  # whole-frame searches: every 5th frame, plus a few when the face was briefly lost
        assert frames / 5 <= pipe.full_detections < frames / 3
    assert len(ids) <= 3  # one woman: the track survives the whole clip (a re-acquisition or two at most)
    assert set(pipe.stage_s) == {"detect", "classify", "track", "composite"}


def test_reset_forgets_faces(media_dir: Path) -> None:
    pipe = Pipeline(provider="cpu")
    img = cv2.imread(str(media_dir / "single_face.jpg"))
    first = pipe.process(img)
    assert pipe.process(img).track_id.tolist() == first.track_id.tolist()
    pipe.reset()
    assert pipe.process(img).track_id.tolist() != first.track_id.tolist()


def test_no_tracker_classifies_each_frame_on_its_own(media_dir: Path) -> None:
    """``tracker=None``: no identities and no smoothing, the classifier's own probabilities."""
    pipe = Pipeline(provider="cpu", tracker=None)
    img = cv2.imread(str(media_dir / "single_face.jpg"))
    assert pipe.tracker is None
    faces = pipe.process(img)
    assert faces.track_id is None and len(faces) == 1
    direct = pipe.classifier.classify(img, pipe.detector.detect(img))
    np.testing.assert_allclose(faces.probs, direct.probs, atol=1e-6)
    out, again = pipe(img.copy())
    assert out.shape == img.shape and again.to_records()[0]["track_id"] is None
