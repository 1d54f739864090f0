"""HaarDetector on real frames: the video, a video with no face, a group photo, frame formats."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from runtime.detector import HaarDetector
from runtime.errors import ModelError
from runtime.faces import Faces

VIDEO_FRAMES = 472


@pytest.fixture(scope="module")
def video_detections(video_frames: tuple, detector: HaarDetector) -> list[tuple[tuple[int, ...], Faces]]:
    """Every frame of the real video: (frame shape, faces found)."""
    out = [(frame.shape, detector.detect(frame)) for frame in video_frames]
    assert len(out) == VIDEO_FRAMES
    return out


def _assert_inside(faces: Faces, shape: tuple[int, ...]) -> None:
    h, w = shape[:2]
    xyxy = faces.xyxy
    assert (xyxy[:, 0] >= 0).all() and (xyxy[:, 1] >= 0).all(), xyxy
    assert (xyxy[:, 2] <= w).all() and (xyxy[:, 3] <= h).all(), xyxy
    assert (xyxy[:, 2] > xyxy[:, 0]).all() and (xyxy[:, 3] > xyxy[:, 1]).all(), xyxy


def test_video_face_in_at_least_95_percent_of_frames(video_detections):
    with_face = sum(len(faces) > 0 for _, faces in video_detections)
    assert with_face / len(video_detections) >= 0.95, f"face in {with_face}/{len(video_detections)} frames"


def test_video_boxes_inside_frame_and_face_sized(video_detections):
    for shape, faces in video_detections:
        assert shape == (360, 640, 3)
        _assert_inside(faces, shape)
        # min_size=40 frame pixels (20 on the 320-wide detection frame, scaled back by 2)
        assert (faces.size_wh >= 38).all(), faces.xyxy


def test_no_face_video(media_dir: Path, detector: HaarDetector):
    cap = cv2.VideoCapture(str(media_dir / "no_face.mp4"))
    sampled = 0
    try:
        index = 0
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            if index % 8 == 0:
                sampled += 1
                assert len(detector.detect(frame)) == 0, f"false face in frame {index}"
            index += 1
    finally:
        cap.release()
    assert sampled >= 10


def test_multi_face_photo(multi_face: np.ndarray, detector: HaarDetector):
    faces = detector.detect(multi_face)
    assert len(faces) >= 3
    _assert_inside(faces, multi_face.shape)
    centres = (faces.xyxy[:, :2] + faces.xyxy[:, 2:]) / 2
    dist = np.linalg.norm(centres[:, None] - centres[None], axis=-1) + np.eye(len(faces)) * 1e9
    assert dist.min() > 20, "two boxes on the same face"


def test_frame_formats_agree(single_face: np.ndarray, detector: HaarDetector):
    bgr = detector.detect(single_face)
    assert len(bgr) == 1
    gray = cv2.cvtColor(single_face, cv2.COLOR_BGR2GRAY)
    bgra = cv2.cvtColor(single_face, cv2.COLOR_BGR2BGRA)
    for frame in (gray, gray[..., None], bgra):
        faces = detector.detect(frame)
        np.testing.assert_array_equal(faces.xyxy, bgr.xyxy)
    np.testing.assert_array_equal(detector.detect_gray(gray).xyxy, bgr.xyxy)


def test_full_size_detection_finds_the_same_face(single_face: np.ndarray, detector: HaarDetector):
    small = detector.detect(single_face).xyxy[0].astype(float)
    full = HaarDetector(detect_width=0).detect(single_face)
    assert len(full) == 1
    _assert_inside(full, single_face.shape)
    assert np.abs(full.xyxy[0] - small).max() < 0.15 * (small[2] - small[0])


@pytest.mark.parametrize("shape", [(1, 1), (10, 10, 3), (30, 500, 3), (500, 30, 4)])
def test_tiny_and_thin_frames_give_no_faces(shape, detector: HaarDetector):
    faces = detector.detect(np.full(shape, 128, np.uint8))
    assert len(faces) == 0 and faces.xyxy.shape == (0, 4)


def test_bad_settings_are_user_errors(tmp_path: Path):
    with pytest.raises(ValueError, match="scale factor"):
        HaarDetector(scale_factor=1.0)
    with pytest.raises(ValueError, match="min"):
        HaarDetector(min_size=0)
    with pytest.raises(ModelError, match="does not exist"):
        HaarDetector(tmp_path / "missing.xml")
    junk = tmp_path / "junk.xml"
    junk.write_text("not a cascade")
    with pytest.raises(ModelError, match="not a valid Haar cascade"):
        HaarDetector(junk)


def test_detect_near_refinds_a_known_face_and_nothing_where_none_is(video_frames: tuple, detector: HaarDetector,
                                                                    media_dir: Path) -> None:
    from runtime.tracker import iou_matrix

    frames = video_frames[:12]
    gray = [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in frames]
    known = detector.detect_gray(gray[0])
    assert len(known) == 1
    for g in gray[1:]:  # the face moves a little: found again near its last box, one box per face
        near = detector.detect_near(g, known.xyxy)
        assert len(near) == 1 and iou_matrix(near.xyxy, detector.detect_gray(g).xyxy)[0, 0] > 0.6
        known = near
    no_face = cv2.VideoCapture(str(media_dir / "no_face.mp4"))
    empty = cv2.cvtColor(no_face.read()[1], cv2.COLOR_BGR2GRAY)
    no_face.release()
    h, w = empty.shape
    assert len(detector.detect_near(empty, np.array([[w // 3, h // 4, w // 3 + 200, h // 4 + 200]]))) == 0
